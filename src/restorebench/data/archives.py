"""Safe archive extraction (.zip, .tar, .tar.gz), as tarfile's `data` filter does, for zip too.

No absolute names, no `..`, no member whose real path (following every link extracted so far) or whose
link target leaves the destination, no devices; symlinks inside zips are refused outright (no dataset ships
them, and following them is how a chain like `d/l -> ..`, `d/l/l2 -> ..`, `d/l/l2/evil.txt` escapes), and a
last sweep checks every link of the extracted tree. Tar members also go through tarfile's own `data` filter,
whose refusals (LinkOutsideDestinationError ...) arrive translated. A refusal is one `UnsafeArchive` line
naming the archive and the member. The free disk space is checked before anything is written.
"""

from __future__ import annotations

import os
import posixpath
import re
import shutil
import stat
import tarfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from restorebench.errors import RestorebenchError
from restorebench.io import atomic_dir

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz")


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


def _zip_plan(archive: Path, zf: zipfile.ZipFile) -> int:
    total = 0
    for info in zf.infolist():
        if stat.S_ISLNK(info.external_attr >> 16):  # no dataset ships links in a zip; following them is how
            raise _refuse(
                archive, info.filename, "is a symbolic link (links in zip archives are not extracted)"
            )
        _check_member(archive, info.filename)
        total += info.file_size
    return total


def _tar_plan(archive: Path | str, members: list[tarfile.TarInfo]) -> int:
    total = 0
    for m in members:
        if not (m.isfile() or m.isdir() or m.issym() or m.islnk()):
            raise _refuse(archive, m.name, "is a device or fifo")
        _check_member(archive, m.name, m.linkname if (m.issym() or m.islnk()) else None, hard=m.islnk())
        total += m.size
    return total


def _extract_zip(archive: Path, folder: Path, min_free_bytes: int) -> None:
    with zipfile.ZipFile(archive) as zf:
        check_free_space(folder, _zip_plan(archive, zf), min_free_bytes, f"extraction of {archive.name}")
        for info in zf.infolist():
            name = _check_member(archive, info.filename)
            _check_landing(archive, folder, name)
            dest = folder / name
            if info.is_dir():
                dest.mkdir(parents=True, exist_ok=True)
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            # O_NOFOLLOW: never write through a link, even one that appeared after the checks
            fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o666)
            with zf.open(info) as src, os.fdopen(fd, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)


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
        check_free_space(folder, _tar_plan(archive, members), min_free_bytes, f"extraction of {archive.name}")
        for m in members:
            if class_tars_into and m.isfile() and "/" not in m.name and m.name.endswith(".tar"):
                # ILSVRC2012_img_train.tar holds one tar per class: unpack each into train/<wnid>/
                inner_dir = folder / class_tars_into / m.name[: -len(".tar")]
                inner_dir.mkdir(parents=True, exist_ok=True)
                with tarfile.open(fileobj=tf.extractfile(m), mode="r|*") as inner:
                    for im in inner:
                        _tar_plan(f"{archive}!{m.name}", [im])
                        _tar_extract(f"{archive}!{m.name}", inner, im, inner_dir)
            else:
                _tar_extract(archive, tf, m, folder)


def extract_into(
    archive: Path, folder: Path, *, min_free_bytes: int = 0, class_tars_into: str | None = None
) -> None:
    """Check every member of `archive` (.zip/.tar/.tar.gz), then extract into the existing `folder`.

    Refuses (UnsafeArchive, naming the member) absolute paths, `..`, links leading outside `folder`, and
    devices. `class_tars_into`: unpack top-level `X.tar` members into `folder/{class_tars_into}/X/`.
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
    _check_tree(archive, Path(folder))


def safe_extract(archive: Path, target: Path, *, min_free_bytes: int = 0) -> Path:
    """Extract `archive` safely (see `extract_into`) into a temporary folder next to `target`, then rename
    it to `target`. On any error `target` is left as it was. Returns `target`."""
    with atomic_dir(target) as tmp:
        extract_into(archive, tmp, min_free_bytes=min_free_bytes)
    return Path(target)
