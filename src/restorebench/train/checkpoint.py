"""Atomic training checkpoints with integrity checks, and resume from the newest good one.

A checkpoint is `step_{N:08d}.pt` plus `step_{N:08d}.sha256`, each written to a temporary name and renamed,
the hash last: a checkpoint with a hash that does not match (killed mid-write, disk full, bit rot) is skipped
and the previous one used. One whose hash file is gone (deleted by hand, lost in a copy) is verified another
way: it loads with weights_only, and the step and run fingerprint it records are its name's and the run's
(`verified_without_hash`); `tidy`, run before each session resumes, rewrites the hash of such a file, moves
one that fails to checkpoints/set_aside/ (nothing is deleted) and removes the temporary files of killed
writes. Checkpoints are ordered by step number; cleanup after a save keeps the newest ones at or below the
step just written, so it can never delete the new checkpoint. Only tensors, numbers and strings are stored,
so loading uses weights_only=True.

`claim_run` keeps a run from resuming another run's checkpoints: checkpoints/run.json holds the fingerprint
of what the run trains (its parameters, the loop's settings, the model's tensor names and shapes); when a
restarted command's fingerprint differs (a parameter changed since the checkpoints were written), the old
checkpoints and curves move to superseded/<their fingerprint>/ and the run starts from step 0, or from its
own earlier checkpoints when superseded/<its fingerprint>/ holds them. Nothing here deletes a run's progress:
days of GPU time must survive one mistaken command.

`lock_run` holds an exclusive flock on run_dir/.lock for a run's whole session, so a second run of the same
cell fails at once instead of interleaving checkpoints and curves. `trim_curves` drops dvclive rows logged
after the checkpoint a run resumes from (they are logged again), so each step appears once.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import hashlib
import io as _io
import json
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import torch

from restorebench import io
from restorebench.errors import RestorebenchError

log = logging.getLogger(__name__)
PATTERN = re.compile(r"step_(\d{8,})\.pt$")  # 8 digits, more past step 99,999,999
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


def _recorded(ckpt_dir: Path) -> str | None:
    marker = ckpt_dir / RUN_FILE
    try:
        return json.loads(marker.read_text()).get("fingerprint") if marker.exists() else None
    except (json.JSONDecodeError, AttributeError, UnicodeDecodeError):  # unreadable: another, unknown run
        return None


def _free_name(folder: Path, name: str) -> Path:
    """folder/name, or folder/name.1, .2 ... when taken (nothing is ever overwritten)."""
    path, n = folder / name, 0
    while path.exists():
        n += 1
        path = folder / f"{name}.{n}"
    return path


def claim_run(run_dir: Path, digest: str, params: dict) -> bool:
    """Make run_dir/checkpoints/ belong to the run with fingerprint `digest`.

    Checkpoints of another run (or of an unknown one: no readable run.json) move, with the run's dvclive
    curves, to run_dir/superseded/<their fingerprint>/ (or unknown[.N]); nothing is deleted. When
    superseded/<digest>/ holds this run's own earlier checkpoints, they move back and the run resumes from
    them. Returns True when earlier checkpoints were superseded."""
    ckpt_dir = run_dir / "checkpoints"
    recorded = _recorded(ckpt_dir)
    if recorded == digest:
        return False
    superseded = False
    old_root = run_dir / "superseded"
    if (old_root / "checkpoints").is_dir():  # the earlier layout (one superseded run, overwritten by the next)
        legacy = _free_name(old_root, _recorded(old_root / "checkpoints") or "unknown")
        legacy.mkdir()
        for name in ("checkpoints", "dvclive"):
            if (old_root / name).exists():
                os.replace(old_root / name, legacy / name)
    if list_checkpoints(ckpt_dir) or (run_dir / "dvclive").exists():
        old_root.mkdir(parents=True, exist_ok=True)
        old = _free_name(old_root, recorded or "unknown")
        old.mkdir()
        for name in ("checkpoints", "dvclive"):
            if (run_dir / name).exists():
                os.replace(run_dir / name, old / name)
        if list_checkpoints(old / "checkpoints"):
            superseded = True
            log.warning("%s: checkpoints of a run with other settings (fingerprint %s, now %s) moved to %s",
                        ckpt_dir, (recorded or "unknown")[:12], digest[:12], old)
    elif ckpt_dir.exists():  # another run that saved no checkpoint yet: only its run.json to replace
        (ckpt_dir / RUN_FILE).unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            ckpt_dir.rmdir()
    own = old_root / digest
    if own.is_dir() and _recorded(own / "checkpoints") == digest:
        for name in ("checkpoints", "dvclive"):
            if (own / name).exists() and not (run_dir / name).exists():
                os.replace(own / name, run_dir / name)
        with contextlib.suppress(OSError):
            own.rmdir()  # empty now; a leftover is kept as it is
        log.warning("%s: this run's own earlier checkpoints were in %s; resuming from them", ckpt_dir, own)
    if _recorded(ckpt_dir) != digest:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        io.write_json(ckpt_dir / RUN_FILE, {"fingerprint": digest, "params": params})
    return superseded


@contextlib.contextmanager
def lock_run(run_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on run_dir/.lock (fcntl.flock, released by the kernel if the process dies).
    A second holder fails at once with a RestorebenchError naming the run folder and the holder's pid."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / ".lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise RestorebenchError(
                run_dir, f"another run of this cell is in progress (pid {holder} holds {path})",
                "wait for it to finish or stop it; two runs of one cell would mix their checkpoints and curves",
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def resume_step(directory: Path) -> int:
    """The step of the newest checkpoint `load_latest` resumes from (hash matches, or verified without one),
    else 0."""
    for path in reversed(list_checkpoints(directory)):
        hashless = not path.with_suffix(".sha256").exists()
        if is_valid(path) or (hashless and verified_without_hash(path) is not None):
            return step_of(path)
    return 0


def trim_curves(live_dir: Path, step: int) -> None:
    """Drop the rows after `step` from every dvclive metrics table (.tsv) under `live_dir`: a run resuming
    from the checkpoint at `step` logs them again, and each step must appear once. A last line cut short by
    a kill is dropped too; a bad row elsewhere (no step number, wrong column count, not text) is a
    RestorebenchError naming the file and the line. A dvclive summary (metrics.json) that does not parse,
    cut by a kill, is removed: dvclive writes it again at the next logged step."""
    summary = live_dir / "metrics.json"
    if summary.is_file():
        try:
            json.loads(summary.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            log.warning("%s: cut or corrupt summary removed; the next logged step writes it again", summary)
            summary.unlink()
    for table in sorted((live_dir / "plots" / "metrics").rglob("*.tsv")) if live_dir.exists() else []:
        try:
            text = table.read_text()
            rows = list(csv.reader(_io.StringIO(text), delimiter="\t"))
        except (UnicodeDecodeError, csv.Error) as err:
            raise RestorebenchError(table, f"not a readable dvclive table ({err})",
                                    "remove the file; its curve is logged again from the resumed step") from None
        if not rows or "step" not in rows[0]:
            continue
        col, width = rows[0].index("step"), len(rows[0])
        if len(rows) > 1 and not text.endswith("\n") and not _row_ok(rows[-1], col, width):
            rows.pop()  # the last line, cut short by a kill mid-write
        for n, r in enumerate(rows[1:], start=2):
            if not _row_ok(r, col, width):
                raise RestorebenchError(f"{table}:{n}", f"corrupt dvclive row {chr(9).join(r)[:80]!r}",
                                        "fix or remove that line (or the file); rows are logged again on resume")  # fmt: skip
        kept = [rows[0]] + [r for r in rows[1:] if int(r[col]) <= step]
        if len(kept) < len(rows) or not text.endswith("\n"):
            out = _io.StringIO()
            csv.writer(out, delimiter="\t", lineterminator=os.linesep).writerows(kept)
            io.write_text(table, out.getvalue())


def _row_ok(row: list[str], col: int, width: int) -> bool:
    return len(row) == width and row[col].isdigit()


def save(directory: Path, step: int, state: dict[str, Any], keep: int = 2) -> Path:
    """Write the checkpoint for `step` atomically (with the run's fingerprint from run.json in it, so a copy
    that lost its hash can still be verified); keep the newest `keep` checkpoints at or below `step`.

    Cleanup counts by step number and never removes the checkpoint just written, nor one of a later step (a
    stale one from an earlier session is set aside by `tidy`, not deleted here). A full disk or a read-only
    folder is a RestorebenchError naming the folder, the bytes needed and the bytes free."""
    recorded = _recorded(directory)
    if recorded is not None and "fingerprint" not in state:
        state = {**state, "fingerprint": recorded}
    path = directory / f"step_{step:08d}.pt"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with io.atomic_path(path) as tmp:
            with open(tmp, "wb") as f:  # a Python file: a full disk is OSError(ENOSPC), not torch's iostream error
                torch.save(state, f)
            digest = io.sha256_file(tmp)
        io.write_text(path.with_suffix(".sha256"), digest + "\n")
    except (OSError, RuntimeError) as err:
        known = io.write_failure(directory, err, needed=_state_bytes(state), what=f"checkpoint {path.name}")
        if known is None:
            raise
        raise known from err
    older = [p for p in list_checkpoints(directory) if step_of(p) < step]
    for old in older[: max(0, len(older) - (keep - 1))]:
        old.unlink(missing_ok=True)
        old.with_suffix(".sha256").unlink(missing_ok=True)
    return path


def _state_bytes(state: Any) -> int:
    """Bytes of the tensors in a (nested) state: what a checkpoint of it needs on disk, near enough."""
    if isinstance(state, torch.Tensor):
        return state.numel() * state.element_size()
    if isinstance(state, dict):
        return sum(_state_bytes(v) for v in state.values())
    if isinstance(state, list | tuple):
        return sum(_state_bytes(v) for v in state)
    return 0


def step_of(path: Path) -> int:
    """The step number in a checkpoint's name (step_00000042.pt -> 42)."""
    return int(PATTERN.search(path.name).group(1))


def list_checkpoints(directory: Path) -> list[Path]:
    """The checkpoints in `directory`, oldest step first (by number, not by name)."""
    if not directory.is_dir():
        return []
    return sorted((p for p in directory.iterdir() if PATTERN.search(p.name)), key=step_of)


def is_valid(path: Path) -> bool:
    sidecar = path.with_suffix(".sha256")
    if not sidecar.exists():
        return False
    return sidecar.read_text().strip() == io.sha256_file(path)


def _load(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


def verified_without_hash(path: Path) -> dict[str, Any] | None:
    """A checkpoint whose hash file is gone, loaded and checked another way: it loads with weights_only, its
    recorded step is the one in its name, and its recorded fingerprint is the run's (checkpoints/run.json).
    The state when all hold, else None (an older format without a fingerprint cannot be vouched for)."""
    expected = _recorded(path.parent)
    try:
        state = _load(path)
    except Exception as err:  # a cut or foreign file
        log.warning("%s: no hash file and does not load (%s)", path, str(err).splitlines()[0] if str(err) else err)
        return None
    ok = (isinstance(state, dict) and state.get("step") == step_of(path)
          and expected is not None and state.get("fingerprint") == expected)  # fmt: skip
    return state if ok else None


def tidy(directory: Path) -> list[Path]:
    """Before a session resumes (its run lock held): remove the temporary files of checkpoint writes that
    were killed (.step_*.tmp), give a hashless checkpoint that verifies (`verified_without_hash`) its hash
    file again, and move every checkpoint that neither hashes nor verifies to checkpoints/set_aside/ (never
    deleted: a person may still want it). Returns the paths set aside."""
    if not directory.is_dir():
        return []
    for tmp in directory.glob(".step_*.tmp"):
        tmp.unlink(missing_ok=True)
    aside: list[Path] = []
    for path in list_checkpoints(directory):
        if is_valid(path):
            continue
        if not path.with_suffix(".sha256").exists() and verified_without_hash(path) is not None:
            io.write_text(path.with_suffix(".sha256"), io.sha256_file(path) + "\n")
            log.warning("%s: hash file was missing; the checkpoint loads and matches this run, hash rewritten", path)
            continue
        folder = directory / "set_aside"
        folder.mkdir(exist_ok=True)
        dest = _free_name(folder, path.name)
        os.replace(path, dest)
        sidecar = path.with_suffix(".sha256")
        if sidecar.exists():
            os.replace(sidecar, _free_name(folder, sidecar.name))
        log.warning("%s: neither its hash nor its recorded step and fingerprint check out; moved to %s", path, dest)
        aside.append(dest)
    return aside


def load_latest(directory: Path) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint whose hash matches (or, without a hash file, that `verified_without_hash`
    vouches for), loaded on the CPU; None when there is none."""
    for path in reversed(list_checkpoints(directory)):
        if not is_valid(path):
            state = None if path.with_suffix(".sha256").exists() else verified_without_hash(path)
            if state is not None:
                return path, state
            log.warning("%s: incomplete or corrupt checkpoint, trying the previous one", path)
            continue
        try:
            return path, _load(path)
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
