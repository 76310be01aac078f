"""Atomic writes: a stage never leaves a half-written file or folder that looks complete.

Everything is written under a temporary name in the destination's own folder (same filesystem, so the
final rename is atomic), then renamed into place. The result gets the mode a plain `open()` would give
under the process's umask (0644 / 0755 by default), not the 0600 / 0700 of a temporary file, so colleagues
sharing a cluster can read the results.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _umask() -> int:
    """The process's umask, read without changing it where Linux reports it (os.umask swaps otherwise)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(dest: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary file path next to `dest`; rename it onto `dest` when the block succeeds.

    On error the temporary file is removed and `dest` is left as it was.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=suffix + ".tmp", dir=dest.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():  # the writer may have replaced the file: set the mode on what is there
            os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, dest)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_dir(dest: str | Path) -> Iterator[Path]:
    """Yield a temporary folder next to `dest`; replace `dest` with it when the block succeeds."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())
        if dest.is_symlink() or dest.is_file():
            dest.unlink()
        elif dest.exists():
            old = dest.with_name(f".{dest.name}.old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(dest, old)
            os.replace(tmp, dest)
            shutil.rmtree(old)
            return
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def write_bytes(dest: str | Path, data: bytes) -> None:
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)


def write_text(dest: str | Path, text: str) -> None:
    write_bytes(dest, text.encode())


def write_json(dest: str | Path, obj: Any) -> None:
    write_text(dest, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_failure(folder: str | Path, err: BaseException, *, what: str, needed: int | None = None,
                  scope: str | Path | None = None):
    """The one-line RestorebenchError for a write the filesystem refused under `folder` (disk full, read-only,
    no permission), or None when `err` is something else or concerns a file outside `folder` (a read of the
    inputs; `scope`: the folder the failing file must be in, default `folder`). For a full disk it names the
    bytes needed (`needed`, when known) and free. torch.save reports a full disk as a RuntimeError ("file
    write failed")."""
    from restorebench.errors import RestorebenchError

    folder = Path(folder)
    code, text = getattr(err, "errno", None), str(err)
    name = getattr(err, "filename", None)
    if name is not None and not _inside(Path(name), Path(scope) if scope is not None else folder):
        return None
    full = code in (errno.ENOSPC, errno.EDQUOT) or (code is None and "No space left" in text) or (
        isinstance(err, RuntimeError) and "write failed" in text)
    if full:
        try:
            free = shutil.disk_usage(next(p for p in (folder, *folder.parents) if p.exists())).free
        except (OSError, StopIteration):
            free = None
        need = f"needed about {needed:,} bytes" if needed else "needed more space"
        have = f", {free:,} bytes free there" if free is not None else ""
        return RestorebenchError(folder, f"disk full while writing {what} ({need}{have})",
                                 "free space there and rerun the same command")
    if code in (errno.EROFS, errno.EACCES, errno.EPERM):
        return RestorebenchError(name or folder, f"cannot write {what}: {os.strerror(code)}",
                                 f"make {folder} writable (or run from a writable copy) and rerun")
    return None


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


@contextlib.contextmanager
def refused_writes(folder: str | Path, what: str, needed: int | None = None,
                   scope: str | Path | None = None) -> Iterator[None]:
    """Run the block; a write the filesystem refuses under `folder` (write_failure) becomes one line."""
    try:
        yield
    except OSError as err:
        known = write_failure(folder, err, what=what, needed=needed, scope=scope)
        if known is None:
            raise
        raise known from err


def sort_safetensors_metadata(path: str | Path) -> None:
    """Rewrite a .safetensors file's header in place with its `__metadata__` keys sorted.

    The format (github.com/huggingface/safetensors, docs/source/index.mdx at v0.4.5): 8 bytes little-endian
    header length N, N bytes of JSON, then the tensor data. The safetensors writer emits the metadata in
    hash-map order, which differs from run to run, so the same weights would hash differently; sorting
    changes only the order, so the header keeps its length and the data its offsets."""
    with open(path, "r+b") as f:
        size = int.from_bytes(f.read(8), "little")
        raw = f.read(size)
        header = json.loads(raw, object_pairs_hook=dict)
        meta = header.get("__metadata__")
        if not isinstance(meta, dict):
            return
        header["__metadata__"] = dict(sorted(meta.items()))
        new = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
        if len(new) > size:  # the writer's own JSON was compact too: cannot happen; leave the file as it is
            return
        f.seek(8)
        f.write(new + b" " * (size - len(new)))  # the format pads its header with spaces


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
