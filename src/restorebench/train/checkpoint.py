"""Atomic training checkpoints with integrity checks, and resume from the newest good one.

A checkpoint is `step_{N:08d}.pt` plus `step_{N:08d}.sha256`, each written to a temporary name and renamed,
the hash last: a checkpoint without a matching hash (killed mid-write, disk full, bit rot) is skipped and
the previous one used. Only tensors, numbers and strings are stored, so loading uses weights_only=True.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import torch

from restorebench import io

log = logging.getLogger(__name__)
PATTERN = re.compile(r"step_(\d{8})\.pt$")


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
