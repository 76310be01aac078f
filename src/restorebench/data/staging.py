"""Staging folders a killed stage leaves behind, found and removed by the next run of that stage.

fetch builds its copy in `data/raw/.{dataset}.XXXX.fetch`, prepare and degrade their store in
`data/store/{dataset}/.train.XXXX.tmp`; at paper scale each is a whole dataset or store, and a SIGKILL leaves
it there. Each such folder gets a marker beside it, `{folder}.owner`, naming the process that owns it:

    {"pid": 4242, "host": "node07", "start": 123456789}

`start` is the process's start time (clock ticks since boot, field 22 of /proc/PID/stat), so a pid the system
has since given to another process is not taken for the owner. The next run calls `sweep(parent, prefix)`:
every marked folder there whose owner is dead (same host; no process with that pid and start time) is removed
with its marker. A folder of a live process, of another host (a shared filesystem), or without a readable
marker is left alone.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path

from restorebench.lock import process_alive as alive
from restorebench.lock import process_start as start_time

MARKER = ".owner"


def marker(folder: str | Path) -> Path:
    folder = Path(folder)
    return folder.with_name(folder.name + MARKER)


def claim(folder: str | Path) -> Path:
    """Mark `folder` (a staging folder just made) as this process's; returns the marker's path."""
    pid = os.getpid()
    path = marker(folder)
    path.write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "start": start_time(pid)}) + "\n")
    return path


def release(folder: str | Path) -> None:
    """Drop `folder`'s marker (the folder itself has been renamed into place or removed)."""
    marker(folder).unlink(missing_ok=True)


def owner_dead(path: Path) -> bool:
    """Whether the marker at `path` names a process of this host that has ended (False when unsure)."""
    try:
        owner = json.loads(path.read_text())
        pid, host, start = int(owner["pid"]), str(owner["host"]), owner.get("start")
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return host == socket.gethostname() and not alive(pid, start)


def sweep(parent: str | Path, prefix: str) -> list[Path]:
    """Remove the staging folders `parent/{prefix}*` whose marker names a dead process, and their markers;
    returns the folders removed. prefix: e.g. ".gopro." (fetch) or ".train." (prepare, degrade)."""
    removed = []
    parent = Path(parent)
    if not parent.is_dir():
        return removed
    for path in sorted(parent.glob(f"{prefix}*{MARKER}")):
        if not owner_dead(path):
            continue
        folder = path.with_name(path.name[: -len(MARKER)])
        if folder.is_dir() and not folder.is_symlink():
            shutil.rmtree(folder, ignore_errors=True)
        elif folder.exists() or folder.is_symlink():
            folder.unlink()
        path.unlink(missing_ok=True)
        removed.append(folder)
    return removed
