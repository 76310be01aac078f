"""Several GPUs per grid cell: DDP semantics on CPU with gloo, torchrun relaunch, per-job GPU pinning."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as torch_dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from restorebench.train import checkpoint, distributed
from restorebench.train.loop import LoopConfig, Preempted, TrainingDiverged, pixel_objective, train
from tests.helpers.tiny import TinyRestorer, make_batches

WORLD = 2
GLOBAL_BATCH = 4
ACCUMULATE = 2


def _batches(start: int):
    """Global batches from optimizer step `start` on (ACCUMULATE of them per step)."""
    return make_batches(batch=GLOBAL_BATCH)(start * ACCUMULATE)


def _model(seed: int = 0) -> TinyRestorer:
    torch.manual_seed(seed)
    return TinyRestorer()


def _cfg(**kw) -> LoopConfig:
    base = dict(steps=6, lr=2e-3, checkpoint_every=2, log_every=1, loss="l1", accumulate=ACCUMULATE)
    base.update(kw)
    return LoopConfig(**base)


def _spawn(fn, tmp_path: Path, *args) -> None:
    """Run fn(rank, tmp_path, *args) in WORLD gloo processes (a file rendezvous, no network)."""
    mp.spawn(_worker, args=(fn, tmp_path, args), nprocs=WORLD, join=True)


def _worker(rank: int, fn, tmp_path: Path, args: tuple) -> None:
    torch.set_num_threads(1)
    torch_dist.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=rank, world_size=WORLD
    )
    try:
        fn(rank, tmp_path, *args)
    finally:
        torch_dist.destroy_process_group()


# ----------------------------------------------------------------------------------- gradients (DDP)


def _ddp_gradients(rank: int, tmp_path: Path) -> None:
    model = torch.nn.parallel.DistributedDataParallel(_model())
    lq, gt = distributed.shard(next(make_batches(batch=GLOBAL_BATCH)(0)), rank, WORLD)
    assert lq.shape[0] == GLOBAL_BATCH // WORLD
    F.l1_loss(model(lq), gt).backward()
    grads = {n: p.grad for n, p in model.module.named_parameters()}
    torch.save(grads, tmp_path / f"grads{rank}.pt")


def test_ddp_gradient_on_shards_equals_the_global_batch_gradient(tmp_path):
    _spawn(_ddp_gradients, tmp_path)
    model = _model()
    lq, gt = next(make_batches(batch=GLOBAL_BATCH)(0))
    F.l1_loss(model(lq), gt).backward()
    for rank in range(WORLD):
        grads = torch.load(tmp_path / f"grads{rank}.pt", weights_only=True)
        for name, p in model.named_parameters():
            torch.testing.assert_close(grads[name], p.grad, rtol=0, atol=1e-6, msg=f"rank {rank}: {name}")


# ----------------------------------------------------------------------------------- train() on 2 ranks


def _train_runs(rank: int, tmp_path: Path) -> None:
    """Three runs on both ranks: a whole one, one preempted by SIGTERM on rank 1 alone and resumed, and
    one where rank 1 alone sees a NaN loss. Results go to files for the parent to check."""
    saved_by: list[int] = []
    save = checkpoint.save

    def recording_save(directory, step, state, **kw):
        saved_by.append(step)
        return save(directory, step, state, **kw)

    checkpoint.save = recording_save
    pixel = pixel_objective("l1")
    calls = {"n": 0}

    def objective(forward, batch, device):  # every rank logs its rank: the logged value is the mean
        calls["n"] += 1
        loss, _ = pixel(forward, batch, device)
        return loss, {"rank": float(rank)}

    final, result = train(
        _model(),
        _batches,
        _cfg(),
        run_dir=tmp_path / "whole",
        objective=objective,
        progress=False,
    )
    torch.save(final.state_dict(), tmp_path / f"whole{rank}.pt")
    out = {"saved_by": list(saved_by), "history": result.history, "images": result.images}

    def term_on_rank1(forward, batch, device):  # SIGTERM reaches rank 1 only, during step 2 (0-based)
        calls["n"] += 1
        if rank == 1 and calls["n"] == 2 * 2 + 1:
            os.kill(os.getpid(), signal.SIGTERM)
        return pixel(forward, batch, device)

    calls["n"] = 0
    try:
        train(
            _model(),
            _batches,
            _cfg(),
            run_dir=tmp_path / "preempted",
            objective=term_on_rank1,
            progress=False,
        )
        out["preempted"] = "no"
    except Preempted as err:
        out["preempted"] = str(err)
    final, result = train(_model(seed=7), _batches, _cfg(), run_dir=tmp_path / "preempted", progress=False)
    out["resumed_from"] = result.resumed_from
    torch.save(final.state_dict(), tmp_path / f"resumed{rank}.pt")

    def nan_on_rank1(forward, batch, device):
        calls["n"] += 1
        loss, scalars = pixel(forward, batch, device)
        return (loss * float("nan") if rank == 1 and calls["n"] > 2 else loss), scalars

    calls["n"] = 0
    try:
        train(_model(), _batches, _cfg(), run_dir=tmp_path / "nan", objective=nan_on_rank1, progress=False)
        out["diverged"] = "no"
    except TrainingDiverged as err:
        out["diverged"] = str(err)
    (tmp_path / f"out{rank}.json").write_text(json.dumps(out))


def test_two_ranks_train_like_one_process_on_the_global_batch(tmp_path):
    _spawn(_train_runs, tmp_path)
    single, ref = train(_model(), _batches, _cfg(), run_dir=tmp_path / "single", progress=False)
    out = [json.loads((tmp_path / f"out{r}.json").read_text()) for r in range(WORLD)]
    for rank in range(WORLD):
        weights = torch.load(tmp_path / f"whole{rank}.pt", weights_only=True)
        for key, value in single.state_dict().items():
            torch.testing.assert_close(weights[key], value, rtol=1e-5, atol=1e-6, msg=f"rank {rank}: {key}")
        # the logged loss is the mean over ranks, i.e. the global batch's loss
        for row, ref_row in zip(out[rank]["history"], ref.history, strict=True):
            assert row["loss"] == pytest.approx(ref_row["loss"], rel=1e-5)
            assert row["rank"] == pytest.approx(0.5)
        assert out[rank]["images"] == ref.images == 6 * 2 * GLOBAL_BATCH  # images of the global batches
    # only rank 0 wrote checkpoints, into the shared run folder
    assert out[0]["saved_by"] == [2, 4, 6] and out[1]["saved_by"] == []
    ckpts = checkpoint.list_checkpoints(tmp_path / "whole" / "checkpoints")
    assert [p.name for p in ckpts] == ["step_00000004.pt", "step_00000006.pt"]

    # SIGTERM on rank 1 alone stops both ranks after the same step; both resume there and end bit-identical
    for rank in range(WORLD):
        assert ": SIGTERM at step 3; checkpoint " in out[rank]["preempted"], out[rank]["preempted"]
        assert out[rank]["resumed_from"] == 3
        resumed = torch.load(tmp_path / f"resumed{rank}.pt", weights_only=True)
        whole = torch.load(tmp_path / f"whole{rank}.pt", weights_only=True)
        for key, value in whole.items():
            assert torch.equal(resumed[key], value), key
    # a NaN on rank 1 alone stops both ranks at the same step
    for rank in range(WORLD):
        assert ": loss is nan at step 1;" in out[rank]["diverged"], out[rank]["diverged"]


# ----------------------------------------------------------------------------------- shard, setup


def test_shard_slices_every_tensor_of_the_batch():
    batch = (torch.arange(6), torch.arange(12).reshape(6, 2), "name", [torch.arange(6) * 10])
    lq, gt, name, (extra,) = distributed.shard(batch, 1, 3)
    assert lq.tolist() == [2, 3] and gt.tolist() == [[4, 5], [6, 7]] and name == "name"
    assert extra.tolist() == [20, 30]
    assert torch.equal(torch.cat([distributed.shard(batch, r, 3)[0] for r in range(3)]), batch[0])


def test_shard_names_the_settings_when_the_batch_does_not_divide():
    with pytest.raises(
        ValueError, match=r"global batch of 5 does not divide by 2 GPUs.*train\.batch.*train\.gpus"
    ):
        distributed.shard((torch.zeros(5, 3), torch.zeros(5, 3)), 0, 2)


def test_setup_without_torchrun_is_one_process(monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    info = distributed.setup("cpu")
    assert (info.rank, info.world_size, info.local_rank, info.device) == (0, 1, 0, torch.device("cpu"))
    assert info.is_main and not torch_dist.is_initialized() and distributed.world() == (0, 1)
    distributed.teardown()  # nothing to end: no error


SCRIPT = """
import json, sys
import torch, torch.distributed as dist
from restorebench.train import distributed
info = distributed.setup("cpu")
total = torch.tensor([float(info.rank + 1)])
dist.all_reduce(total)
out = {"rank": info.rank, "world": info.world_size, "local": info.local_rank, "sum": total.item(),
       "backend": dist.get_backend()}
open(f"{sys.argv[1]}/rank{info.rank}.json", "w").write(json.dumps(out))
distributed.teardown()
"""


def test_torchrun_standalone_runs_setup_on_cpu(tmp_path, project_root):
    script = tmp_path / "script.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(project_root / "src")}
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={WORLD}",
            str(script),
            str(tmp_path),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for rank in range(WORLD):
        out = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert out == {"rank": rank, "world": WORLD, "local": rank, "sum": 3.0, "backend": "gloo"}


# ----------------------------------------------------------------------------------- relaunch


def test_relaunch_execs_torchrun_with_the_same_command(monkeypatch):
    calls = []
    monkeypatch.setattr(os, "execv", lambda path, args: calls.append((path, args)))
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    distributed.relaunch_under_torchrun(["finetune", "--task", "denoise"], 1)
    assert calls == []  # one GPU: nothing to do
    distributed.relaunch_under_torchrun(["finetune", "--task", "denoise"], 4)
    assert calls == [
        (
            sys.executable,
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--standalone",
                "--nproc_per_node=4",
                "-m",
                "restorebench",
                "finetune",
                "--task",
                "denoise",
            ],
        )
    ]
    monkeypatch.setenv("WORLD_SIZE", "4")  # already under torchrun
    distributed.relaunch_under_torchrun(["finetune"], 4)
    assert len(calls) == 1


def test_relaunch_keeps_the_pinned_devices_claimed(monkeypatch, tmp_path):
    monkeypatch.setattr(os, "execv", lambda path, args: None)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    try:
        assert distributed.pin_devices(2, count=2, directory=tmp_path) == [0, 1]
        distributed.relaunch_under_torchrun(["finetune"], 2)
        assert all(os.get_inheritable(h.fileno()) for h in distributed._HELD)  # survive the exec
    finally:
        distributed.release_devices()


# ----------------------------------------------------------------------------------- GPU pinning


class _Clock:
    """Time that passes only in `sleep`: the wait is counted exactly, whatever the machine's load."""

    def __init__(self) -> None:
        self.now, self.slept = 0.0, []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_claims_get_different_devices_and_a_third_waits_then_fails(tmp_path, caplog):
    first = distributed.claim_devices(1, count=2, directory=tmp_path)
    second = distributed.claim_devices(1, count=2, directory=tmp_path)
    assert first.devices == [0] and second.devices == [1]
    clock = _Clock()
    with (
        caplog.at_level(logging.WARNING),
        pytest.raises(RuntimeError, match="no 1 free GPU\\(s\\) of 2 after waiting"),
    ):
        distributed.claim_devices(1, count=2, directory=tmp_path, timeout=0.3, poll=0.1, clock=clock,
                                  sleep=clock.sleep)
    assert clock.slept == pytest.approx([0.1, 0.1, 0.1])  # polled until the deadline, then gave up
    assert "waiting for 1 free GPU(s) of 2" in caplog.text
    with pytest.raises(RuntimeError, match="no 2 free"):  # one free is not enough for two
        first.release()
        distributed.claim_devices(2, count=2, directory=tmp_path, timeout=0.1, poll=0.05, clock=clock,
                                  sleep=clock.sleep)
    third = distributed.claim_devices(1, count=2, directory=tmp_path, timeout=0)
    assert third.devices == [0]  # releasing freed device 0
    second.release()
    third.release()


def test_a_waiting_claim_gets_the_device_once_released(tmp_path):
    held = distributed.claim_devices(1, count=1, directory=tmp_path)
    polled = threading.Event()
    got = []

    def sleep(seconds: float) -> None:  # the waiter found the device taken and waits for it
        polled.set()
        time.sleep(0.01)

    waiter = threading.Thread(
        target=lambda: got.append(
            distributed.claim_devices(1, count=1, directory=tmp_path, timeout=3600, poll=0.01, sleep=sleep)
        )
    )
    waiter.start()
    assert polled.wait(timeout=600)
    assert got == []  # still waiting: the device is held
    held.release()
    waiter.join(timeout=600)
    assert got[0].devices == [0]
    got[0].release()


def test_pin_devices_sets_cuda_visible_devices(monkeypatch, tmp_path):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("RESTOREBENCH_GPU_LOCKS", str(tmp_path / "locks"))
    other = distributed.claim_devices(1, count=3, directory=tmp_path / "locks")  # another job holds GPU 0
    try:
        assert distributed.pin_devices(2, count=3) == [1, 2]
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "1,2"
        assert sorted(p.name for p in (tmp_path / "locks").iterdir()) == [
            "gpu0.lock",
            "gpu1.lock",
            "gpu2.lock",
        ]
    finally:
        distributed.release_devices()
        other.release()
    assert "CUDA_VISIBLE_DEVICES" not in os.environ
    assert distributed.claim_devices(3, count=3, directory=tmp_path / "locks", timeout=0).devices == [0, 1, 2]


def test_pin_devices_leaves_a_set_cuda_visible_devices_alone(monkeypatch, tmp_path):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    assert distributed.pin_devices(1, count=8, directory=tmp_path) is None
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "3" and list(tmp_path.iterdir()) == []
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert distributed.pin_devices(1, count=0, directory=tmp_path) is None  # no GPU: nothing to pin
    assert "CUDA_VISIBLE_DEVICES" not in os.environ


def test_pin_devices_rejects_more_gpus_than_the_machine_has(monkeypatch, tmp_path):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    with pytest.raises(RuntimeError, match=r"train.gpus: 4, but this machine has 2 GPU\(s\)"):
        distributed.pin_devices(4, count=2, directory=tmp_path)
