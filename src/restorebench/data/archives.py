"""Safe archive extraction (.zip, .tar, .tar.gz), as tarfile's `data` filter does, for zip too.

No absolute names, no `..`, no member whose real path (following every link extracted so far) or whose
link target leaves the destination, no devices; symlinks inside zips are refused outright (no dataset ships
them, and following them is how a chain like `d/l -> ..`, `d/l/l2 -> ..`, `d/l/l2/evil.txt` escapes), and a
last sweep checks every link of the extracted tree. Tar members also go through tarfile's own `data` filter,
whose refusals (LinkOutsideDestinationError ...) arrive translated. A hard link to a member not extracted
before it, and a member under a path the archive made a file (`d/f`, then `d/f/x`), are refused too.
A refusal is one `UnsafeArchive` line naming the archive and the member.

Size: the declared unpacked sizes are checked against the free disk space before anything is written, and
the bytes actually written are counted as they are written (`_Budget`): a class tar nested in a tar shows
only its packed size, and a zip's headers can be small. Extraction stops at the member that would pass the
free space (less data.min_free_gb), the cap RESTOREBENCH_MAX_UNPACKED_GB when set, or an expansion past
MAX_RATIO times the packed bytes (a zero-stream bomb expands about 1000:1; images about 1:1).
"""

from __future__ import annotations

import errno
import os
import posixpath
import re
import shutil
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from restorebench.errors import RestorebenchError
from restorebench.io import atomic_dir

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz")
MAX_UNPACKED_ENV = "RESTOREBENCH_MAX_UNPACKED_GB"  # a cap on one archive's unpacked bytes (unset: free space)
MAX_RATIO = 100  # unpacked / packed bytes; PNG and JPEG datasets unpack at about 1:1
RATIO_FLOOR = 16 * 2**20  # the ratio is judged past this many unpacked bytes (tar padding compresses well)


class FetchError(RestorebenchError):
    """A known fetch failure, printed by the CLI as one line. FetchError("path: what") keeps the message as
    given; FetchError(where, what, hint) formats it as RestorebenchError does."""

    def __init__(self, where: object, what: str | None = None, hint: str | None = None) -> None:
        if what is None:
            where, what = None, str(where)
        super().__init__(where, what, hint)


class InsufficientSpace(FetchError, ValueError):
    """Not enough free disk space for a download or an extraction."""


class UnsafeArchive(FetchError, ValueError):
    """An archive member would land outside the target folder (zip-slip) or is not a plain file."""


# -------------------------------------------------------------------------------------------- disk


def check_free_space(folder: Path, need_bytes: int, min_free_bytes: int, what: str) -> None:
    """Raise `InsufficientSpace` unless `need_bytes + min_free_bytes` are free where `folder` lives."""
    folder = Path(folder)
    probe = folder
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if need_bytes + min_free_bytes > free:
        gib = 2**30
        raise InsufficientSpace(
            f"{what}: needs {need_bytes / gib:.2f} GiB plus {min_free_bytes / gib:.2f} GiB kept free, but only "
            f"{free / gib:.2f} GiB are free on {probe} (free space or lower data.min_free_gb)"
        )


def mount_point(path: str | Path) -> Path:
    """The mount point of the disk that holds `path` (its nearest existing folder)."""
    probe = Path(os.path.abspath(path))
    while not probe.exists():
        probe = probe.parent
    while not os.path.ismount(probe):
        probe = probe.parent
    return probe


def disk_error(err: OSError, path: str | Path, doing: str, need_bytes: int | None = None) -> FetchError | None:
    """A one-line error for a disk that refused a write while `doing` at `path`: full (naming the disk, its
    free bytes and `need_bytes`), read-only, or not writable. None for any other OSError (not a disk fault)."""
    if err.errno == errno.ENOSPC:
        disk = mount_point(path)
        need = f", and it needs {need_bytes} bytes ({need_bytes / 2**30:.2f} GiB)" if need_bytes else ""
        return InsufficientSpace(
            path, f"{doing}: the disk {disk} is full ({shutil.disk_usage(disk).free} bytes free{need})",
            f"free space on {disk}, or point data.root at a larger disk",
        )
    if err.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        where = err.filename or path
        return FetchError(where, f"{doing}: {os.strerror(err.errno).lower()}",
                          "make the folder writable, or point data.root at a writable folder")  # fmt: skip
    return None


class _Budget:
    """The bytes one archive may unpack, counted as members are written: at most `limit` in all (the free
    space less the reserve, or the RESTOREBENCH_MAX_UNPACKED_GB cap), and, past RATIO_FLOOR, at most
    MAX_RATIO times the packed bytes `packed()` read so far. `add` refuses naming the member."""

    def __init__(self, archive: Path | str, folder: Path, min_free_bytes: int, packed: Callable[[], int]) -> None:
        self.used = 0  # bytes in all, against the limit
        self.start(archive, packed)
        disk = mount_point(folder)
        self.limit = shutil.disk_usage(disk).free - min_free_bytes
        self.why, self.by_disk = f"the free space on {disk} less data.min_free_gb", True
        cap = os.environ.get(MAX_UNPACKED_ENV, "")
        if cap:
            try:
                cap_bytes = int(float(cap) * 2**30)
            except ValueError:
                raise FetchError(MAX_UNPACKED_ENV, f"{cap!r} is not a number of GiB") from None
            if cap_bytes < self.limit:
                self.limit, self.why, self.by_disk = cap_bytes, f"{MAX_UNPACKED_ENV}={cap}", False

    def start(self, archive: Path | str, packed: Callable[[], int]) -> None:
        """Judge the ratio from here on against `packed()` (a nested class tar's own packed size)."""
        self.archive, self.packed, self.part = archive, packed, 0

    def add(self, name: str, n: int) -> None:
        self.used += n
        self.part += n
        if self.used > self.limit:
            kind, hint = (InsufficientSpace, "free space or lower data.min_free_gb") if self.by_disk else (
                UnsafeArchive, f"refusing to extract; any previous copy is kept (raise {MAX_UNPACKED_ENV})")
            raise kind(self.archive, f"extraction of {Path(str(self.archive)).name}: member {name!r} unpacks "
                       f"past {max(self.limit, 0)} bytes ({self.why})", hint)  # fmt: skip
        packed = max(self.packed(), 1)
        if self.part > RATIO_FLOOR and self.part > MAX_RATIO * packed:
            raise UnsafeArchive(
                self.archive,
                f"member {name!r} expands {self.part} bytes out of {packed} packed (over {MAX_RATIO}:1, a "
                "compression bomb)", "refusing to extract; any previous copy is kept",
            )


# ---------------------------------------------------------------------------------------- archives


def is_archive(path: Path) -> bool:
    return str(path).lower().endswith(ARCHIVE_SUFFIXES)


def _refuse(archive: Path | str, name: str, why: str) -> UnsafeArchive:
    return UnsafeArchive(archive, f"member {name!r} {why}", "refusing to extract; any previous copy is kept")


def _check_member(archive: Path, name: str, link: str | None = None, hard: bool = False) -> str:
    """The member's relative POSIX path; `UnsafeArchive` naming it when its name or its link's target would
    escape the target (the static part of the checks; `_check_landing` follows links on disk)."""
    clean = name.replace("\\", "/")
    if clean.startswith("/") or re.match(r"^[A-Za-z]:", clean):
        raise _refuse(archive, name, "has an absolute path")
    if ".." in PurePosixPath(clean).parts:
        raise _refuse(archive, name, "contains '..'")
    if link is not None:
        if link.startswith("/") or re.match(r"^[A-Za-z]:", link):
            raise _refuse(archive, name, f"links to the absolute path {link!r}")
        base = "" if hard else posixpath.dirname(clean.rstrip("/"))
        resolved = posixpath.normpath(posixpath.join(base, link))
        if resolved == ".." or resolved.startswith("../"):
            raise _refuse(archive, name, f"links to {link!r}, outside the target")
    return clean


def _inside(root_real: str, path: str | Path) -> bool:
    """Whether the real path of `path` (every symlink on disk followed) is `root_real` or below it."""
    real = os.path.realpath(path)
    return real == root_real or real.startswith(root_real.rstrip(os.sep) + os.sep)


def _check_landing(
    archive: Path | str, folder: Path, name: str, link: str | None = None, hard: bool = False
) -> None:
    """Just before extracting `name`: where it lands, following the links extracted so far, and where its
    link points are inside `folder` (a chain d/l -> .., d/l/l2 -> .. passes the static check per member)."""
    root = os.path.realpath(folder)
    dest = os.path.join(folder, name.rstrip("/"))
    if not _inside(root, os.path.dirname(dest)) or (not os.path.islink(dest) and not _inside(root, dest)):
        raise _refuse(archive, name, "would be written outside the target through a link extracted before it")
    if link is not None:
        target = os.path.join(folder, link) if hard else os.path.join(os.path.dirname(dest), link)
        if not _inside(root, target):
            raise _refuse(archive, name, f"links to {link!r}, which resolves outside the target")


def _check_tree(archive: Path | str, folder: Path) -> None:
    """After extraction: every symlink of the tree resolves inside `folder` (nothing is followed to look)."""
    root = os.path.realpath(folder)
    for dirpath, dirnames, filenames in os.walk(folder):
        for entry in dirnames + filenames:
            path = os.path.join(dirpath, entry)
            if os.path.islink(path) and not _inside(root, path):
                rel = os.path.relpath(path, folder)
                raise _refuse(
                    archive, rel, f"is a link to {os.readlink(path)!r}, which resolves outside the target"
                )


class _Seen:
    """What the members so far made, name -> "file", "dir" or "link": a member under a file (`d/f`, then `d/f/x`),
    and a hard link to a name that is not a file extracted before it, are refused here with one line
    (tarfile would raise NotADirectoryError or KeyError on its own)."""

    def __init__(self, archive: Path | str) -> None:
        self.archive, self.kinds = archive, {}

    def add(self, name: str, *, is_dir: bool, symlink: bool = False, hard_target: str | None = None) -> None:
        clean = posixpath.normpath(name.rstrip("/"))
        parts = clean.split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            if self.kinds.get(parent) == "file":
                raise _refuse(self.archive, name, f"lies under {parent!r}, which the archive made a file")
        if hard_target is not None and self.kinds.get(posixpath.normpath(hard_target)) != "file":
            raise _refuse(self.archive, name, f"is a hard link to {hard_target!r}, which is not a file "
                          "extracted before it (missing from the archive, or later in it)")  # fmt: skip
        # a symlink's landing is judged on disk by _check_landing (it may point at a folder inside the target)
        self.kinds[clean] = "dir" if is_dir else "link" if symlink else "file"


def _zip_plan(archive: Path, zf: zipfile.ZipFile, budget: _Budget) -> int:
    """Check every member's name and kind, and the declared sizes against `budget`; the declared total."""
    seen, packed = _Seen(archive), 0
    budget.packed = lambda: packed
    for info in zf.infolist():
        if stat.S_ISLNK(info.external_attr >> 16):  # no dataset ships links in a zip; following them is how
            raise _refuse(
                archive, info.filename, "is a symbolic link (links in zip archives are not extracted)"
            )
        seen.add(_check_member(archive, info.filename), is_dir=info.is_dir())
        packed += info.compress_size
        budget.add(info.filename, info.file_size)
    return budget.used


def _tar_plan(archive: Path | str, members: list[tarfile.TarInfo], seen: _Seen,
              budget: _Budget | None = None) -> int:  # fmt: skip
    """Check every member's name, kind and links (`seen` carries what earlier members made) and, with a
    `budget`, the sizes; returns their total (a tar member's size is exactly what tarfile writes)."""
    total = 0
    for m in members:
        if not (m.isfile() or m.isdir() or m.issym() or m.islnk()):
            raise _refuse(archive, m.name, "is a device or fifo")
        _check_member(archive, m.name, m.linkname if (m.issym() or m.islnk()) else None, hard=m.islnk())
        seen.add(m.name, is_dir=m.isdir(), symlink=m.issym(), hard_target=m.linkname if m.islnk() else None)
        total += m.size
        if budget is not None:
            budget.add(m.name, m.size)
    return total


def _extract_zip(archive: Path, folder: Path, min_free_bytes: int) -> None:
    with zipfile.ZipFile(archive) as zf:
        check_free_space(folder, _zip_plan(archive, zf, _Budget(archive, folder, min_free_bytes, int)),
                         min_free_bytes, f"extraction of {archive.name}")  # fmt: skip
        packed = 0
        budget = _Budget(archive, folder, min_free_bytes, lambda: packed)  # now the bytes really written
        for info in zf.infolist():
            name = _check_member(archive, info.filename)
            _check_landing(archive, folder, name)
            dest = folder / name
            if info.is_dir():
                dest.mkdir(parents=True, exist_ok=True)
                continue
            packed += info.compress_size
            dest.parent.mkdir(parents=True, exist_ok=True)
            # O_NOFOLLOW: never write through a link, even one that appeared after the checks
            fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o666)
            with zf.open(info) as src, os.fdopen(fd, "wb") as out:
                while chunk := src.read(1 << 20):
                    budget.add(info.filename, len(chunk))
                    out.write(chunk)


def _tar_extract(archive: Path | str, tf: tarfile.TarFile, m: tarfile.TarInfo, folder: Path) -> None:
    """One member through tarfile's `data` filter, after the landing check; its refusals become UnsafeArchive."""
    _check_landing(archive, folder, m.name, m.linkname if (m.issym() or m.islnk()) else None, hard=m.islnk())
    try:
        tf.extract(m, folder, filter="data")
    except tarfile.FilterError as err:  # LinkOutsideDestinationError, AbsolutePathError, ...
        raise _refuse(archive, m.name, f"refused by tarfile's data filter ({type(err).__name__})") from None


def _extract_tar(archive: Path, folder: Path, min_free_bytes: int, class_tars_into: str | None) -> None:
    with tarfile.open(archive, "r:*") as tf:
        members = tf.getmembers()
        packed = archive.stat().st_size
        plan = _Budget(archive, folder, min_free_bytes, lambda: packed)
        check_free_space(folder, _tar_plan(archive, members, _Seen(archive), plan), min_free_bytes,
                         f"extraction of {archive.name}")  # fmt: skip
        budget = _Budget(archive, folder, min_free_bytes, lambda: packed)
        for m in members:
            if class_tars_into and m.isfile() and "/" not in m.name and m.name.endswith(".tar"):
                # ILSVRC2012_img_train.tar holds one tar per class: unpack each into train/<wnid>/. Its
                # members are counted one by one: the outer header gives only the (maybe gzipped) packed size.
                inner_dir = folder / class_tars_into / m.name[: -len(".tar")]
                inner_dir.mkdir(parents=True, exist_ok=True)
                where, seen = f"{archive}!{m.name}", _Seen(f"{archive}!{m.name}")
                budget.start(where, lambda size=m.size: size)
                with tarfile.open(fileobj=tf.extractfile(m), mode="r|*") as inner:
                    for im in inner:
                        _tar_plan(where, [im], seen, budget)
                        _tar_extract(where, inner, im, inner_dir)
                budget.start(archive, lambda: packed)
            else:
                budget.add(m.name, m.size)
                _tar_extract(archive, tf, m, folder)


def extract_into(
    archive: Path, folder: Path, *, min_free_bytes: int = 0, class_tars_into: str | None = None
) -> None:
    """Check every member of `archive` (.zip/.tar/.tar.gz), then extract into the existing `folder`.

    Refuses (UnsafeArchive, naming the member) absolute paths, `..`, links leading outside `folder`,
    devices, a member under a file member, a hard link to no earlier file, and an unpacked size past the
    free space, the RESTOREBENCH_MAX_UNPACKED_GB cap or MAX_RATIO times the packed size (counted as
    written; a refusal leaves what was written for the caller's staging folder to drop). `class_tars_into`: unpack top-level `X.tar` members into `folder/{class_tars_into}/X/`.
    """
    archive = Path(archive)
    try:
        if archive.name.lower().endswith(".zip"):
            _extract_zip(archive, Path(folder), min_free_bytes)
        elif is_archive(archive):
            _extract_tar(archive, Path(folder), min_free_bytes, class_tars_into)
        else:
            raise FetchError(archive, "not a .zip, .tar or .tar.gz archive")
    except (zipfile.BadZipFile, tarfile.ReadError, EOFError, zlib.error) as err:
        raise FetchError(
            archive,
            f"unreadable archive ({type(err).__name__}: {err})",
            "the file is truncated or corrupt; download it again",
        ) from None
    except OSError as err:  # a full or read-only disk: one line naming it, not a traceback
        failure = disk_error(err, folder, f"extraction of {archive.name}")
        if failure is None:
            raise
        raise failure from None
    _check_tree(archive, Path(folder))


def safe_extract(archive: Path, target: Path, *, min_free_bytes: int = 0) -> Path:
    """Extract `archive` safely (see `extract_into`) into a temporary folder next to `target`, then rename
    it to `target`. On any error `target` is left as it was. Returns `target`."""
    with atomic_dir(target) as tmp:
        extract_into(archive, tmp, min_free_bytes=min_free_bytes)
    return Path(target)
