"""The training engine: strategies, resume, checkpoints, faults."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from restorebench.train import checkpoint, strategies
from restorebench.train.loop import LoopConfig, TrainingDiverged, pixel_objective, psnr_loss, train
from restorebench.train.schedule import warmup_cosine
from tests.helpers.tiny import TinyRestorer, make_batches


def _model(seed: int = 0) -> TinyRestorer:
    torch.manual_seed(seed)
    return TinyRestorer()


def _cfg(**kw) -> LoopConfig:
    base = dict(steps=12, lr=2e-3, strategy="full", checkpoint_every=4, log_every=2, loss="l1")
    base.update(kw)
    return LoopConfig(**base)


def test_training_reduces_the_loss(tmp_path):
    model = _model()
    lq, gt = next(make_batches(seed=99, batch=16)(0))  # held out: another seed

    def held_out_l1() -> float:
        with torch.no_grad():
            return float((model(lq) - gt).abs().mean())

    before = held_out_l1()
    _, result = train(model, make_batches(), _cfg(steps=60, lr=5e-3), run_dir=tmp_path, progress=False)
    after = held_out_l1()
    assert after < 0.8 * before, (before, after)
    assert result.images == 60 * 4


def test_frozen_keeps_the_backbone_bit_identical(tmp_path):
    model = _model()
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    head_before = model.head.weight.clone()
    train(model, make_batches(), _cfg(strategy="frozen"), run_dir=tmp_path, progress=False)
    for key, value in model.backbone.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert not torch.equal(model.head.weight, head_before)
    strategies.train_mode(model, "frozen")
    assert not model.backbone[1].training and model.decoder.training


def test_strategy_learning_rates():
    model = _model()
    lrs = {
        n: g["lr"]
        for g in strategies.optimizer_groups(model, "full_lowlr", lr=1e-3, weight_decay=0.0)
        for n in g["names"]
    }
    assert all(v == pytest.approx(1e-4) for v in lrs.values()) and len(lrs) == len(list(model.parameters()))
    groups = strategies.optimizer_groups(model, "llrd", lr=1e-3, weight_decay=0.0, llrd_decay=0.5)
    lrs = {n: g["lr"] for g in groups for n in g["names"]}
    assert lrs["backbone.0.weight"] == pytest.approx(1e-3 * 0.5 ** (2 - 1))
    assert lrs["backbone.3.weight"] == pytest.approx(1e-3)
    assert lrs["head.weight"] == pytest.approx(1e-3)
    frozen = strategies.optimizer_groups(model, "frozen", lr=1e-3, weight_decay=0.0)
    assert not any(n.startswith("backbone.") for g in frozen for n in g["names"])
    with pytest.raises(ValueError, match="strategy 'frozn' unknown"):
        strategies.prepare(model, "frozn")


def test_schedule_matches_nafnet_endpoints():
    assert warmup_cosine(0, total=100, base_lr=1e-3, min_lr=1e-7) == pytest.approx(1.0)
    assert warmup_cosine(100, total=100, base_lr=1e-3, min_lr=1e-7) * 1e-3 == pytest.approx(1e-7)
    assert warmup_cosine(0, total=100, warmup=10) == pytest.approx(0.1)


def test_psnr_loss_is_minus_psnr():
    a = torch.zeros(2, 3, 4, 4)
    b = torch.full((2, 3, 4, 4), 0.1)
    assert float(psnr_loss(a, b)) == pytest.approx(-20.0, abs=1e-3)  # PSNR of MSE 0.01 is 20 dB


def test_resume_is_bit_identical(tmp_path):
    torch.use_deterministic_algorithms(True)
    try:
        ref = _model()
        final_ref, _ = train(ref, make_batches(), _cfg(ema_decay=0.9), run_dir=tmp_path / "a", progress=False)

        def crash_at_8(start):
            for step, batch in enumerate(make_batches()(start), start):
                if step == 9:  # the checkpoint of step 8 is written, step 9 half done
                    raise KeyboardInterrupt
                yield batch

        with pytest.raises(KeyboardInterrupt):
            train(_model(), crash_at_8, _cfg(ema_decay=0.9), run_dir=tmp_path / "b", progress=False)
        # a fresh process would rebuild the model from scratch: simulate with another init
        again = _model(seed=123)
        final, result = train(
            again, make_batches(), _cfg(ema_decay=0.9), run_dir=tmp_path / "b", progress=False
        )
        assert result.resumed_from == 8
        for key, value in final_ref.state_dict().items():
            assert torch.equal(value, final.state_dict()[key]), key
    finally:
        torch.use_deterministic_algorithms(False)


def test_corrupt_last_checkpoint_falls_back(tmp_path):
    train(_model(), make_batches(), _cfg(steps=8), run_dir=tmp_path, progress=False)
    ckpts = checkpoint.list_checkpoints(tmp_path / "checkpoints")
    assert [p.name for p in ckpts] == ["step_00000004.pt", "step_00000008.pt"]
    with open(ckpts[-1], "r+b") as f:
        f.seek(100)
        f.write(b"garbage!")
    path, state = checkpoint.load_latest(tmp_path / "checkpoints")
    assert path == ckpts[0] and state["step"] == 4


def test_nan_loss_stops_with_the_step(tmp_path):
    def bad(start):
        for lq, gt in make_batches()(start):
            yield lq * float("nan"), gt

    with pytest.raises(TrainingDiverged, match="at step 0"):
        train(_model(), bad, _cfg(), run_dir=tmp_path, progress=False)


KILL_SCRIPT = """
import sys, torch
sys.path.insert(0, {root!r})
from pathlib import Path
from restorebench.train.loop import LoopConfig, train
from tests.helpers.tiny import TinyRestorer, make_batches
torch.use_deterministic_algorithms(True)
torch.set_num_threads(1)
torch.manual_seed(0)
model = TinyRestorer()
cfg = LoopConfig(steps=60, lr=2e-3, checkpoint_every=3, log_every=5, ema_decay=0.9)
final, _ = train(model, make_batches(), cfg, run_dir=Path(sys.argv[1]), progress=False)
torch.save(final.state_dict(), Path(sys.argv[1]) / "final.pt")
"""


@pytest.mark.slow
def test_sigkill_at_any_point_then_resume_is_bit_identical(tmp_path, project_root):
    script = tmp_path / "run.py"
    script.write_text(KILL_SCRIPT.format(root=str(project_root)))
    # this checkout's code, not whichever copy the venv installed in editable mode
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(project_root / "src"), str(project_root)])}
    subprocess.run(
        [sys.executable, str(script), str(tmp_path / "ref")], check=True, env=env, cwd=project_root
    )
    run = tmp_path / "killed"
    for delay in (2.5, 0.7, 1.3):  # kill a few times, mid-step or mid-save, whatever comes
        proc = subprocess.Popen([sys.executable, str(script), str(run)], env=env, cwd=project_root)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    subprocess.run([sys.executable, str(script), str(run)], check=True, env=env, cwd=project_root)
    ref = torch.load(tmp_path / "ref" / "final.pt", weights_only=True)
    got = torch.load(run / "final.pt", weights_only=True)
    for key in ref:
        assert torch.equal(ref[key], got[key]), key


def _crash_after(step_to_fail: int):
    def batches(start):
        for step, batch in enumerate(make_batches()(start), start):
            if step == step_to_fail:
                raise KeyboardInterrupt
            yield batch

    return batches


def test_a_restart_resumes_only_checkpoints_of_the_same_settings(tmp_path):
    """Same command after a crash: resume. A parameter changed since (lr, an init, the variant ...): the old
    checkpoints and curves move to superseded/ and the run starts from step 0, not from the other run."""
    from restorebench.train.session import train_and_save

    run, params = tmp_path / "run", {"task": "denoise", "init": "random(seed=0)"}
    with pytest.raises(KeyboardInterrupt):
        train_and_save(_model(), _crash_after(9), _cfg(), run_dir=run, params=params, progress=False)
    with pytest.raises(KeyboardInterrupt):  # the same run again: resumes from step 8, crashes at 10
        train_and_save(_model(), _crash_after(10), _cfg(), run_dir=run, params=params, progress=False)
    assert [p.name for p in checkpoint.list_checkpoints(run / "checkpoints")] == ["step_00000004.pt",
                                                                                  "step_00000008.pt"]
    result, _ = train_and_save(_model(), make_batches(), _cfg(lr=1e-3), run_dir=run, params=params, progress=False)
    assert result.resumed_from == 0
    (first,) = [p for p in (run / "superseded").iterdir()]
    assert [p.name for p in checkpoint.list_checkpoints(first / "checkpoints")][-1] == "step_00000008.pt"
    result, _ = train_and_save(_model(), make_batches(), _cfg(lr=1e-3, steps=14), run_dir=run,
                               params={**params, "init": "dcpt:..."}, progress=False)
    assert result.resumed_from == 0  # the init changed too
    result, _ = train_and_save(_model(), make_batches(), _cfg(lr=1e-3, steps=14, checkpoint_every=7),
                               run_dir=run, params={**params, "init": "dcpt:..."}, progress=False)
    assert result.resumed_from == 14  # only the checkpoint interval changed: the same run, already done


def _logged_steps(table) -> list[int]:
    rows = [r.split("\t") for r in table.read_text().splitlines()]
    col = rows[0].index("step")
    return [int(r[col]) for r in rows[1:]]


def test_a_mistaken_run_deletes_nothing_and_the_original_resumes_from_its_own_checkpoint(tmp_path):
    """A mistaken re-run: interrupt a cell, re-run it once with another LR, run the original command again:
    the original resumes from its own checkpoint (step 8), which moved aside and back, never deleted."""
    from restorebench.train.session import train_and_save

    run, params = tmp_path / "run", {"task": "denoise"}
    with pytest.raises(KeyboardInterrupt):
        train_and_save(_model(), _crash_after(9), _cfg(), run_dir=run, params=params, progress=False)
    with pytest.raises(KeyboardInterrupt):  # the mistaken run: other LR, also interrupted
        train_and_save(_model(), _crash_after(5), _cfg(lr=1e-3), run_dir=run, params=params, progress=False)
    assert len(list((run / "superseded").iterdir())) == 1
    result, _ = train_and_save(_model(), make_batches(), _cfg(), run_dir=run, params=params, progress=False)
    assert result.resumed_from == 8
    (other,) = list((run / "superseded").iterdir())  # the mistaken run's step 4, kept for its own resume
    assert [p.name for p in checkpoint.list_checkpoints(other / "checkpoints")] == ["step_00000004.pt"]
    result, _ = train_and_save(_model(), make_batches(), _cfg(lr=1e-3), run_dir=run, params=params,
                               progress=False)
    assert result.resumed_from == 4
    steps = _logged_steps(run / "dvclive/plots/metrics/train/loss.tsv")
    assert steps == sorted(set(steps)) == list(range(2, 13, 2))  # each step once, though 5 of them ran twice


def test_curves_after_a_resume_have_each_step_once(tmp_path):
    from restorebench.train.session import train_and_save

    run, params = tmp_path / "run", {"task": "denoise"}
    with pytest.raises(KeyboardInterrupt):  # logged steps 2..10, checkpointed at 8
        train_and_save(_model(), _crash_after(10), _cfg(), run_dir=run, params=params, progress=False)
    result, _ = train_and_save(_model(), make_batches(), _cfg(), run_dir=run, params=params, progress=False)
    assert result.resumed_from == 8
    for table in (run / "dvclive/plots/metrics").rglob("*.tsv"):
        steps = _logged_steps(table)
        assert steps == sorted(set(steps)), (table, steps)
        assert steps[-1] == 12


def test_a_second_run_of_the_same_cell_fails_at_once(tmp_path):
    from restorebench.errors import RestorebenchError

    with checkpoint.lock_run(tmp_path):
        with pytest.raises(RestorebenchError, match=r"another run of this cell is in progress \(pid \d+"):
            with checkpoint.lock_run(tmp_path):
                pass
    with checkpoint.lock_run(tmp_path):  # released when the holder ends
        pass


def test_an_unreadable_run_file_counts_as_another_run(tmp_path):
    train(_model(), make_batches(), _cfg(steps=4), run_dir=tmp_path, progress=False)
    (tmp_path / "checkpoints" / "run.json").write_text("{not json")
    assert checkpoint.claim_run(tmp_path, "f" * 64, {"task": "denoise"}) is True
    assert (tmp_path / "superseded" / "unknown" / "checkpoints" / "step_00000004.pt").exists()
    assert checkpoint.claim_run(tmp_path, "f" * 64, {"task": "denoise"}) is False  # now it is this run's


def _nan_from(step_to_break: int):
    def batches(start):
        for step, (lq, gt) in enumerate(make_batches()(start), start):
            yield (lq * float("nan"), gt) if step >= step_to_break else (lq, gt)

    return batches


def test_a_late_nan_names_its_step_and_no_checkpoint_holds_it(tmp_path):
    """The loss is read every sync_every steps, not every step: the NaN check still names the first bad
    step, and no checkpoint written after it exists (every checkpoint on disk was checked first)."""
    cfg = _cfg(steps=40, checkpoint_every=5, log_every=100, sync_every=10)
    with pytest.raises(TrainingDiverged, match=r"at step 7; last good checkpoint: .*step_00000005\.pt"):
        train(_model(), _nan_from(7), cfg, run_dir=tmp_path, progress=False)
    names = [p.name for p in checkpoint.list_checkpoints(tmp_path / "checkpoints")]
    assert names == ["step_00000005.pt"]
    state = torch.load(tmp_path / "checkpoints" / names[0], weights_only=True)
    assert all(torch.isfinite(v).all() for v in state["model"].values())


def test_the_host_reads_the_loss_once_per_sync_window(tmp_path, monkeypatch):
    from restorebench.train import loop

    reads = []
    real = loop._read
    monkeypatch.setattr(loop, "_read", lambda window, *a: reads.append(len(window)) or real(window, *a))
    train(_model(), make_batches(), _cfg(steps=25, checkpoint_every=100, log_every=100, sync_every=10),
          run_dir=tmp_path / "a", progress=False)
    assert reads == [10, 10, 5]  # steps 10, 20 and the last one (25), each holding its window's losses
    reads.clear()
    train(_model(), make_batches(), _cfg(steps=6, checkpoint_every=4, log_every=3, sync_every=10),
          run_dir=tmp_path / "b", progress=False)
    assert reads == [3, 1, 2]  # log at 3, checkpoint at 4, log + end at 6


def test_reading_less_often_trains_bit_identically(tmp_path):
    every, _ = train(_model(), make_batches(), _cfg(sync_every=1), run_dir=tmp_path / "a", progress=False)
    batched, result = train(_model(), make_batches(), _cfg(sync_every=7), run_dir=tmp_path / "b", progress=False)
    for key, value in every.state_dict().items():
        assert torch.equal(value, batched.state_dict()[key]), key
    assert [row["step"] for row in result.history] == [2, 4, 6, 8, 10, 12]
    assert all(torch.isfinite(torch.tensor(row["loss"])) for row in result.history)


class _Clock:
    """A clock that moves only when told: the loop's timings become exact, whatever the machine's load."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_data_wait_is_the_share_of_time_spent_waiting_for_batches(tmp_path):
    clock = _Clock()

    def slow(start):  # each batch takes 3 s to arrive ...
        for batch in make_batches()(start):
            clock.now += 3.0
            yield batch

    def objective(forward, batch, device):  # ... and each step 1 s to compute
        clock.now += 1.0
        return pixel_objective("l1")(forward, batch, device)

    _, starved = train(_model(), slow, _cfg(steps=8), run_dir=tmp_path / "b", progress=False, clock=clock,
                       objective=objective)
    assert starved.data_wait == pytest.approx(0.75)
    assert starved.seconds == pytest.approx(32.0) and starved.images_per_s == pytest.approx(starved.images / 32)
    assert [row["data_wait"] for row in starved.history] == pytest.approx([0.75] * len(starved.history))
    _, fed = train(_model(), make_batches(), _cfg(steps=8), run_dir=tmp_path / "a", progress=False, clock=clock,
                   objective=objective)
    assert fed.data_wait == 0.0 and fed.seconds == pytest.approx(8.0)


def test_loop_settings_are_checked(tmp_path):
    with pytest.raises(ValueError, match="train.compile_mode: 'fast' unknown; choose from default, reduce-overhead"):
        train(_model(), make_batches(), _cfg(compile_mode="fast"), run_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="train.sync_every must be >= 1, got 0"):
        train(_model(), make_batches(), _cfg(sync_every=0), run_dir=tmp_path, progress=False)


@pytest.mark.parametrize("foreach", [False, True])
def test_ema_update_matches_the_formula(foreach):
    from restorebench.train.ema import EMA

    model = _model()
    ema = EMA(model, decay=0.9)
    before = {k: v.clone() for k, v in ema.shadow.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    ema.update(model, foreach=foreach)
    for key, value in ema.shadow.state_dict().items():
        want = 0.9 * before[key].double() + 0.1 * model.state_dict()[key].double()
        torch.testing.assert_close(value.double(), want, rtol=0, atol=1e-6)


def test_compile_mode_reaches_torch_compile(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(torch, "compile", lambda module, mode=None: seen.append(mode) or module)
    train(_model(), make_batches(), _cfg(steps=2, compile=True, compile_mode="reduce-overhead"),
          run_dir=tmp_path, progress=False)
    assert seen == ["reduce-overhead"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_the_loop_never_waits_for_the_gpu_between_reads(tmp_path, monkeypatch):
    """On CUDA (bf16 autocast, channels_last, fused AdamW, EMA) a step makes no host-device sync: CUDA's sync
    debug mode raises on any, except inside the loss reads and the checkpoint writes, which are meant to."""
    from restorebench.train import loop

    def allowed(fn):
        def call(*args, **kwargs):
            torch.cuda.set_sync_debug_mode("default")
            try:
                return fn(*args, **kwargs)
            finally:
                torch.cuda.set_sync_debug_mode("error")
        return call

    reads, real = [], loop._read
    monkeypatch.setattr(loop, "_read", allowed(lambda window, *a: reads.append(len(window)) or real(window, *a)))
    monkeypatch.setattr(loop.checkpoint, "save", allowed(checkpoint.save))

    def pinned(start):  # as the DataLoader gives them (pin_memory on CUDA)
        for lq, gt in make_batches()(start):
            yield lq.pin_memory(), gt.pin_memory()

    model = _model().cuda()
    cfg = _cfg(steps=12, log_every=6, checkpoint_every=12, sync_every=6, amp=True, channels_last=True, ema_decay=0.9)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        _, result = train(model, pinned, cfg, device="cuda", run_dir=tmp_path, progress=False)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert reads == [6, 6] and result.steps == 12 and torch.isfinite(torch.tensor(result.last_loss))



@pytest.mark.slow
@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("cc") is None, reason="inductor needs a C++ compiler")
def test_compiled_training_matches_eager_and_checkpoints_plain_keys(tmp_path):
    """train.compile: the same weights as eager (to float rounding), and checkpoints an uncompiled run resumes
    from (no torch.compile `_orig_mod.` prefixes)."""
    weights = {}
    for compiled in (False, True):
        final, _ = train(_model(), make_batches(), _cfg(steps=6, compile=compiled, checkpoint_every=3),
                         run_dir=tmp_path / str(compiled), progress=False)
        weights[compiled] = final.state_dict()
    for key, value in weights[False].items():
        torch.testing.assert_close(weights[True][key], value, rtol=0, atol=1e-6)
    state = torch.load(tmp_path / "True" / "checkpoints" / "step_00000003.pt", weights_only=True)
    assert set(state["model"]) == set(weights[False])
    _, result = train(_model(), make_batches(), _cfg(steps=6, checkpoint_every=3), run_dir=tmp_path / "True",
                      progress=False)
    assert result.resumed_from == 6


def test_the_earlier_superseded_layout_is_kept_and_resumable(tmp_path):
    """superseded/checkpoints/ (the layout before superseded/<fingerprint>/) is filed under its fingerprint,
    so its run resumes from it too."""
    import json

    run, f, g = tmp_path / "run", "f" * 64, "g" * 64
    train(_model(), make_batches(), _cfg(steps=4), run_dir=run, progress=False)  # run f: steps 4
    (run / "checkpoints" / "run.json").write_text(json.dumps({"fingerprint": f}))
    (run / "superseded").mkdir()
    (run / "checkpoints").rename(run / "superseded" / "checkpoints")  # as the earlier code left it
    train(_model(), make_batches(), _cfg(steps=2, checkpoint_every=2), run_dir=run, progress=False)  # run g
    (run / "checkpoints" / "run.json").write_text(json.dumps({"fingerprint": g}))
    assert checkpoint.claim_run(run, f, {}) is True
    assert checkpoint.resume_step(run / "checkpoints") == 4  # f's own, back from the earlier layout
    assert checkpoint.resume_step(run / "superseded" / g / "checkpoints") == 2  # g's, kept
    assert sorted(p.name for p in (run / "superseded").iterdir()) == [g]


def test_use_deterministic_sets_torch_flag_without_importing_the_compiler():
    """A run without torch.compile gets deterministic kernels and does not import torch._inductor (about
    2 s of each job's start); with compile, the compiler's own flag is set too."""
    code = (
        "import sys, torch\n"
        "from restorebench.train.loop import use_deterministic\n"
        "use_deterministic(False)\n"
        "print(torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),"
        " 'torch._inductor' in sys.modules)\n"
        "use_deterministic(True)\n"
        "import torch._inductor.config as c\n"
        "print(c.deterministic)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["True", "True", "False", "True"]
