"""Faults of training, results and the CLI's run-side commands: each checked for the one-line error naming
the file or key, nothing built replaced, and no half-written or leftover output.

Kinds covered here: 1 killed training resumes (20 random SIGKILLs, hash files removed in some rounds).
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from restorebench.train import checkpoint


def _env(root: Path) -> dict[str, str]:
    # this checkout's code, not whichever copy the venv installed in editable mode
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(root / "src"), str(root)])}


def _intact(ckpt_dir: Path, fingerprint: str) -> int:
    """The step of the newest checkpoint a user would trust, checked here without the module's code: its hash
    file matches its bytes, or, with no hash file, it loads with weights_only and records its own step and the
    run's fingerprint. 0 when there is none."""
    best = 0
    for path in ckpt_dir.glob("step_*.pt"):
        step = int(path.stem.split("_")[1])
        sidecar = path.with_suffix(".sha256")
        if sidecar.exists():
            ok = sidecar.read_text().strip() == hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
                ok = state["step"] == step and state.get("fingerprint") == fingerprint
            except Exception:
                ok = False
        if ok:
            best = max(best, step)
    return best


@pytest.mark.slow
def test_training_killed_20_times_resumes_each_time_from_the_newest_intact_checkpoint(tmp_path, project_root):
    """SIGKILL at a random step (and a random moment within it) 20 times in a row, hash files removed after
    some kills: each restart resumes from the newest intact checkpoint, so a kill loses at most
    checkpoint_every (2) steps; killed writes' .step_*.tmp files are gone when the next session starts; the
    weights at the end are bit-identical to an uninterrupted run's."""
    steps, every, rng = 130, 2, random.Random(24)
    cmd = [sys.executable, "-m", "tests.helpers.killed_run"]
    run, env = tmp_path / "killed", _env(project_root)
    expected, last_step, hashless_rounds = 0, 0, 0
    for round_ in range(20):
        proc = subprocess.Popen([*cmd, str(run), str(steps)], cwd=project_root, env=env, stdout=subprocess.PIPE,
                                text=True)  # fmt: skip
        first = proc.stdout.readline().split()
        assert first[:2] == ["start", str(expected)], (round_, first, last_step)
        assert first[2:] == [], f"temporary files of a killed write left at round {round_}: {first[2:]}"
        assert expected >= (last_step // every) * every  # at most checkpoint_every steps lost
        target = expected + rng.randint(1, 6)
        for line in proc.stdout:
            if line.split() == ["step", str(target)]:
                break
        # a random moment within the step: mid-forward, mid-save, between the .pt and its hash ...
        deadline = rng.random() * 0.05
        try:
            proc.wait(timeout=deadline)
        except subprocess.TimeoutExpired:
            pass
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        last_step = target
        if rng.random() < 0.4:  # a user (or a copy) lost the hash files
            hashless_rounds += 1
            for sidecar in (run / "checkpoints").glob("*.sha256"):
                sidecar.unlink()
        fp = checkpoint._recorded(run / "checkpoints")
        expected = _intact(run / "checkpoints", fp)
        assert expected >= (last_step // every) * every - every, (round_, expected, last_step)
    assert hashless_rounds >= 3  # the seeded draw removes hashes in several rounds
    done = subprocess.run([*cmd, str(run), str(steps)], cwd=project_root, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[:2] == ["start", str(expected)]
    assert not list((run / "checkpoints").glob(".step_*.tmp"))
    ref = subprocess.run([*cmd, str(tmp_path / "ref"), str(steps)], cwd=project_root, env=env, capture_output=True,
                         text=True)  # fmt: skip
    assert ref.returncode == 0, ref.stderr[-2000:]
    from safetensors.torch import load_file

    want, got = load_file(tmp_path / "ref" / "model.safetensors"), load_file(run / "model.safetensors")
    assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)
