"""Atomic training checkpoints with integrity checks, and resume from the newest good one.

A checkpoint is `step_{N:08d}.pt` plus `step_{N:08d}.sha256`, each written to a temporary name and renamed,
the hash last: a checkpoint without a matching hash (killed mid-write, disk full, bit rot) is skipped and
the previous one used. Only tensors, numbers and strings are stored, so loading uses weights_only=True.

`claim_run` keeps a run from resuming another run's checkpoints: checkpoints/run.json holds the fingerprint
of what the run trains (its parameters, the loop's settings, the model's tensor names and shapes); when a
restarted command's fingerprint differs (a parameter changed since the checkpoints were written), the old
checkpoints and curves move to superseded/ and the run starts from step 0.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import torch

from restorebench import io

log = logging.getLogger(__name__)
PATTERN = re.compile(r"step_(\d{8})\.pt$")
RUN_FILE = "run.json"
# loop settings that may change between a run's sessions without changing what it computes
OPERATIONAL = ("checkpoint_every", "validate_every", "log_every", "compile", "compile_mode", "fused", "sync_every")


def fingerprint(model: torch.nn.Module, loop_cfg: Any, params: dict) -> str:
    """sha256 of what a run trains: `params` (task, model, variant, strategy, init, data settings ...), the
    loop's settings other than OPERATIONAL ones, and the model's tensor names, shapes and dtypes."""
    settings = asdict(loop_cfg) if is_dataclass(loop_cfg) else dict(loop_cfg)
    blob = {
        "params": params,
        "loop": {k: v for k, v in settings.items() if k not in OPERATIONAL},
        "tensors": [[k, list(v.shape), str(v.dtype)] for k, v in model.state_dict().items()],
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()


def claim_run(run_dir: Path, digest: str, params: dict) -> bool:
    """Make run_dir/checkpoints/ belong to the run with fingerprint `digest`. Checkpoints of another run (or of
    an unknown one: no run.json) move, with the run's dvclive curves, to run_dir/superseded/ (replacing an
    older one there). Returns True when earlier checkpoints were superseded."""
    ckpt_dir = run_dir / "checkpoints"
    marker = ckpt_dir / RUN_FILE
    try:
        recorded = json.loads(marker.read_text()).get("fingerprint") if marker.exists() else None
    except (json.JSONDecodeError, AttributeError):  # unreadable: treat the checkpoints as another run's
        recorded = None
    superseded = False
    if recorded != digest and list_checkpoints(ckpt_dir):
        old = run_dir / "superseded"
        shutil.rmtree(old, ignore_errors=True)
        old.mkdir(parents=True)
        for name in ("checkpoints", "dvclive"):
            if (run_dir / name).exists():
                (run_dir / name).rename(old / name)
        log.warning("%s: checkpoints of a run with other settings (fingerprint %s, now %s) moved to %s; "
                    "starting from step 0", ckpt_dir, (recorded or "unknown")[:12], digest[:12], old)
        superseded = True
    if recorded != digest:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        io.write_json(marker, {"fingerprint": digest, "params": params})
    return superseded


def save(directory: Path, step: int, state: dict[str, Any], keep: int = 2) -> Path:
    """Write the checkpoint for `step` atomically; keep the newest `keep` checkpoints."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"step_{step:08d}.pt"
    with io.atomic_path(path) as tmp:
        torch.save(state, tmp)
        digest = io.sha256_file(tmp)
    io.write_text(path.with_suffix(".sha256"), digest + "\n")
    for old in list_checkpoints(directory)[:-keep]:
        old.unlink(missing_ok=True)
        old.with_suffix(".sha256").unlink(missing_ok=True)
    return path


def list_checkpoints(directory: Path) -> list[Path]:
    if not directory.exists():
        return []
    return sorted(p for p in directory.iterdir() if PATTERN.search(p.name))


def is_valid(path: Path) -> bool:
    sidecar = path.with_suffix(".sha256")
    if not sidecar.exists():
        return False
    return sidecar.read_text().strip() == io.sha256_file(path)


def load_latest(directory: Path) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint whose hash matches, loaded on the CPU; None when there is none."""
    for path in reversed(list_checkpoints(directory)):
        if not is_valid(path):
            log.warning("%s: incomplete or corrupt checkpoint, trying the previous one", path)
            continue
        try:
            return path, torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # a file that hashes right but does not unpickle: skip it too
            log.warning("%s: unreadable (%s), trying the previous one", path, err)
    return None


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
