"""Logs off a terminal (Snakemake, Slurm, CI): timestamped lines, no bar redraws; one line per event."""

from __future__ import annotations

import io
import logging
import re

import pytest

from restorebench import logs
from tests.helpers.tiny import TinyRestorer, make_batches

STAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"


@pytest.fixture
def captured(monkeypatch):
    """restorebench's log records as the CLI formats them, off a terminal."""
    monkeypatch.setenv("RESTOREBENCH_PROGRESS", "lines")
    stream = io.StringIO()
    root = logging.getLogger("restorebench")
    saved = root.handlers[:], root.level, root.propagate
    root.handlers = []
    logs.setup(stream=stream)
    logs.setup(stream=stream)  # configured once: a second call adds no second handler
    yield stream
    root.handlers, root.level, root.propagate = saved


def test_train_line_names_step_loss_lr_speed_and_val_psnr():
    row = {"step": 40, "loss": 0.041234567, "lr": 1e-3, "images_per_s": 12.34, "data_wait": 0.1}
    assert logs.train_line(row, 80) == "step 40/80  loss 0.041235  lr 1.00e-03  12.3 img/s"
    assert logs.train_line({**row, "val/psnr": 28.4123}, 80).endswith("12.3 img/s  val/psnr 28.41")


def test_training_off_a_terminal_logs_one_timestamped_line_per_log_step(captured, tmp_path):
    from restorebench.train.loop import LoopConfig, train

    cfg = LoopConfig(steps=6, lr=1e-3, log_every=2, checkpoint_every=3)
    train(TinyRestorer(), make_batches(), cfg, run_dir=tmp_path, validate=lambda m: {"val/psnr": 30.0})
    lines = captured.getvalue().splitlines()
    steps = [line for line in lines if " step " in line]
    assert len(steps) == 3 and "\r" not in captured.getvalue()
    for n, line in zip((2, 4, 6), steps, strict=True):
        assert re.fullmatch(
            STAMP + rf" restorebench\.train\.loop: step {n}/6  loss \S+  lr \S+  \S+ img/s(  val/psnr 30)?", line
        ), line
    assert steps[-1].endswith("val/psnr 30")  # measured at the end only
    # a restart says where it resumed, in one line
    captured.truncate(0)
    captured.seek(0)
    train(TinyRestorer(), make_batches(), LoopConfig(steps=8, lr=1e-3, log_every=2, checkpoint_every=3),
          run_dir=tmp_path)
    resumed = [line for line in captured.getvalue().splitlines() if "resumed" in line]
    assert len(resumed) == 1 and re.search(r"resumed from .*step_00000006\.pt at step 6 of 8$", resumed[0])


def test_progress_off_a_terminal_is_a_few_lines_with_counts(captured):
    now = [0.0]

    def clock() -> float:
        return now[0]

    def items():  # each item takes 1 s on the controlled clock
        for i in range(100):
            now[0] += 1.0
            yield i

    out = list(logs.progress(items(), total=100, desc="validate sidd", unit="pairs", lines=4, min_seconds=0,
                             clock=clock))  # fmt: skip
    assert out == list(range(100))
    lines = captured.getvalue().splitlines()
    assert [line.split(": ", 1)[1] for line in lines] == [
        "validate sidd: 25/100 pairs (25%), 1.0 pairs/s",
        "validate sidd: 50/100 pairs (50%), 1.0 pairs/s",
        "validate sidd: 75/100 pairs (75%), 1.0 pairs/s",
        "validate sidd: 100/100 pairs (100%), 1.0 pairs/s",
    ]
    assert all(re.match(STAMP + r" restorebench: ", line) for line in lines)
    captured.truncate(0)
    captured.seek(0)
    now[0] = 0.0
    list(logs.progress(items(), total=100, desc="quick", unit="pairs", lines=4, min_seconds=30, clock=clock))
    assert [line.split(": ", 1)[1] for line in captured.getvalue().splitlines()] == [
        "quick: 50/100 pairs (50%), 1.0 pairs/s",  # 25 s had not passed at 25; 50 and 75 are 25 s apart
        "quick: 100/100 pairs (100%), 1.0 pairs/s",
    ]


def test_gpu_pinning_is_one_line(captured, monkeypatch, tmp_path):
    from restorebench.train import distributed

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    try:
        distributed.pin_devices(1, count=2, directory=tmp_path)
    finally:
        distributed.release_devices()
    assert re.fullmatch(STAMP + r" restorebench\.train\.distributed: pinned to GPU\(s\) 0", captured.getvalue().strip())
