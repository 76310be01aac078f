"""Fetch a dataset into data/raw/{dataset}: from the embedded sample, the official URLs, or a path on disk.

Nothing half-done is ever left where a later stage would take it as complete:
- downloads grow `{cache}/{file}.part` (resumed with an HTTP Range request after a cut connection) and
  are renamed to `{cache}/{file}` only after their sha256 checks out;
- `fetch_and_index` builds the new copy in a staging folder next to data/raw/{dataset}, builds its manifest
  and checks it (every .mat readable, every pair whole, at least one pair and at least `expected_pairs` per
  split), and only then swaps the copy and the manifest in: a refused or broken fetch leaves the previous copy and its
  manifest exactly as they were; a killed fetch's staging folder is removed by the next fetch of that
  dataset (`data.staging`);
- the free disk space is checked before each download and each extraction.

Archives are extracted by `data.archives` (as tarfile's `data` filter does, for zip too; a refusal is one
`UnsafeArchive` line naming the member).

Checksums: no dataset publishes them, so the first fetch records each file's sha256 in
`{cache}/checksums.json` and every later fetch verifies against it.

`source: /some/path` (a folder): `data/raw/{dataset}` becomes a real folder holding symlinks:
`{layout_root}` (SIDD_Medium_Srgb, GOPRO_Large or train) -> the user's copy, plus the SIDD validation .mat
files when found next to it. Manifest building walks folders with `iterdir`, which follows these links.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

from restorebench.config import SampleConfig
from restorebench.errors import RestorebenchError
from restorebench.io import atomic_dir, atomic_path, sha256_file, write_json

from . import staging as stale
from .archives import (  # noqa: F401  (re-exported: fetch's public names before the split)
    ARCHIVE_SUFFIXES,
    FetchError,
    InsufficientSpace,
    UnsafeArchive,
    check_free_space,
    disk_error,
    extract_into,
    is_archive,
    safe_extract,
)
from .samples import make_sample
from .sources import DatasetSource, get_source


class DownloadError(FetchError, RuntimeError):
    """A download failed after every retry and mirror."""


class ChecksumMismatch(DownloadError):
    """A file's sha256 differs from the recorded (or given) one; the bad file has been removed."""


class LayoutError(FetchError, FileNotFoundError):
    """A dataset folder does not have the expected layout."""


class SourceError(FetchError, ValueError):
    """A dataset source that cannot be used as given (no anonymous download, not an archive ...)."""


class IncompleteDataset(FetchError, ValueError):
    """A fetched copy holds no pairs, or fewer than its profile's expected_pairs."""


# --------------------------------------------------------------------------------------- checksums


def _load_checksums(path: Path) -> dict[str, str]:
    import json

    if not path.exists():
        return {}
    try:
        return dict(json.loads(path.read_text()))
    except ValueError as err:
        raise SourceError(
            path, f"not valid JSON ({err})", "fix or delete it to re-record checksums"
        ) from None


def _verify_or_record(file: Path, name: str, checksums: Path, expected: str | None) -> str:
    """sha256 of `file`; compared to `expected` or the recorded value, recorded when there is none.
    On a mismatch the file is removed and `ChecksumMismatch` names it and both hashes."""
    got = sha256_file(file)
    known = _load_checksums(checksums)
    want = expected or known.get(name)
    if want and got != want:
        file.unlink()
        raise ChecksumMismatch(
            f"{name}: sha256 mismatch: expected {want} ({'given' if expected else f'recorded in {checksums}'}), "
            f"got {got}; the file was removed. If the remote file really changed, delete its entry in {checksums}."
        )
    if known.get(name) != got:
        known[name] = got
        write_json(checksums, known)
    return got


# ----------------------------------------------------------------------------------------- download


class _Incomplete(Exception):
    pass


def _fetch_once(url: str, part: Path, *, timeout: float, min_free_bytes: int, size_hint: int | None) -> None:
    """Continue `part` from its current size with one GET; raises on any network problem."""
    import requests
    from tqdm import tqdm

    pos = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={pos}-"} if pos else {}
    with requests.get(url, headers=headers, stream=True, timeout=timeout) as r:
        if pos and r.status_code == 416:  # nothing left to send: the part may already be complete
            total = r.headers.get("Content-Range", "").rpartition("/")[2]
            if total.isdigit() and int(total) == pos:
                return
            part.unlink()
            raise _Incomplete(f"server refused to resume at byte {pos}; restarting")
        r.raise_for_status()
        if pos and r.status_code != 206:  # Range ignored: the body is the whole file
            pos = 0
        length = int(r.headers.get("Content-Length") or 0)
        remaining = length or ((size_hint - pos) if size_hint else 0)
        total = pos + length if length else size_hint
        check_free_space(part.parent, remaining, min_free_bytes, f"download of {part.name[:-5]}")
        with (
            open(part, "ab" if pos else "wb") as f,
            tqdm(
                total=total,
                initial=pos,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=part.name[:-5],
                disable=None,
            ) as bar,
        ):
            for chunk in r.iter_content(chunk_size=1 << 16):  # small: a cut loses < 64 KiB
                f.write(chunk)
                bar.update(len(chunk))
    got = part.stat().st_size
    if length and got != pos + length:
        raise _Incomplete(f"connection closed at byte {got} of {pos + length}")


def download(url: str, dest_file: Path, *, mirrors: Sequence[str] = (), expected_sha256: str | None = None,
             checksums: Path, retries: int = 5, backoff: float = 1.0, timeout: float = 60.0,
             min_free_bytes: int = 0, size_hint: int | None = None) -> Path:  # fmt: skip
    """Download `url` (or a mirror) to `dest_file`, resumably, and verify its sha256.

    The bytes grow in `dest_file.part`; a cut connection resumes from its size with an HTTP Range request.
    Each of `retries` rounds tries `url` then every mirror; rounds are separated by `backoff * 2**round`
    seconds. The sha256 is checked against `expected_sha256`, else the one recorded in `checksums`
    (JSON {file name: sha256}), else recorded there. A mismatch removes the file and raises
    `ChecksumMismatch`. An existing `dest_file` is verified the same way instead of downloaded again.
    """
    dest_file = Path(dest_file)
    dest_file.parent.mkdir(parents=True, exist_ok=True)
    if dest_file.exists():
        _verify_or_record(dest_file, dest_file.name, Path(checksums), expected_sha256)
        return dest_file
    part = dest_file.with_name(dest_file.name + ".part")
    urls = (url, *mirrors)
    errors: list[str] = []
    for round_ in range(max(1, retries)):
        for candidate in urls:
            try:
                _fetch_once(
                    candidate, part, timeout=timeout, min_free_bytes=min_free_bytes, size_hint=size_hint
                )
            except InsufficientSpace:
                raise
            except Exception as err:  # requests' errors, a short body: retry (resuming) on the next try
                errors.append(f"{candidate}: {type(err).__name__}: {err}")
                continue
            _verify_or_record(part, dest_file.name, Path(checksums), expected_sha256)
            os.replace(part, dest_file)
            return dest_file
        if round_ + 1 < retries:
            time.sleep(backoff * 2**round_)
    raise DownloadError(
        f"{dest_file.name}: download failed after {retries} round(s) over {len(urls)} URL(s); last error: "
        + (errors[-1] if errors else "none")
        + f" (the partial file {part} is kept and resumed next time)"
    )


# ------------------------------------------------------------------------------------------ layouts


def check_layout(src: DatasetSource, folder: Path, label: str | Path) -> None:
    """Raise `LayoutError` naming `label` unless `folder/{layout_root}` has the required sub-folders."""
    root = folder / src.layout_root
    if not root.is_dir():
        raise LayoutError(
            f"{label}: no {src.layout_root}/ folder; a {src.name} copy unpacks to {src.layout_root}/"
        )
    for sub in src.required:
        if not (root / sub).is_dir():
            raise LayoutError(
                f"{label}: {src.layout_root}/ has no {sub}/ folder (expected {src.layout_root}/{sub}/)"
            )
    if src.name == "imagenet" and not any(_imagenet_class(p) for p in root.iterdir()):
        raise LayoutError(
            f"{label}: {src.layout_root}/ holds no class tars nXXXXXXXX.tar or class folders nXXXXXXXX/"
        )


def _imagenet_class(path: Path) -> bool:
    """An ImageNet class: its tar nXXXXXXXX.tar (as ILSVRC2012_img_train.tar holds them) or its folder."""
    return bool(re.fullmatch(r"n\d{8}", path.name) and path.is_dir()
                or re.fullmatch(r"n\d{8}\.tar", path.name) and path.is_file())  # fmt: skip


def _keep_class_tars(folder: Path, layout_root: str) -> None:
    """ILSVRC2012_img_train.tar unpacks to one nXXXXXXXX.tar per class: move them under `layout_root`/ as
    they are (about a thousand files, read in place through the manifest's offsets) instead of unpacking
    1.28M JPEGs."""
    tars = [p for p in folder.iterdir() if _imagenet_class(p) and p.is_file()]
    if tars:
        (folder / layout_root).mkdir(exist_ok=True)
        for t in tars:
            os.replace(t, folder / layout_root / t.name)


def _normalise_layout(src: DatasetSource, folder: Path) -> None:
    """Some copies of an archive lack the top folder (train/ and test/ at the top instead of
    GOPRO_Large/train/ ...): move the required sub-folders under `{layout_root}/`."""
    if src.required and not (folder / src.layout_root).exists():
        if all((folder / sub).is_dir() for sub in src.required):
            (folder / src.layout_root).mkdir()
            for sub in src.required:
                os.replace(folder / sub, folder / src.layout_root / sub)


def _find_root(src: DatasetSource, path: Path) -> Path:
    """The folder to link as `{layout_root}`: `path/{layout_root}` or `path` itself."""
    if (path / src.layout_root).is_dir():
        return path / src.layout_root
    if src.required and all((path / sub).is_dir() for sub in src.required):
        return path
    if src.name == "imagenet" and any(_imagenet_class(p) for p in path.iterdir()):
        return path
    want = ", ".join(f"{src.layout_root}/{s}/" for s in src.required) or f"{src.layout_root}/nXXXXXXXX.tar"
    raise LayoutError(
        f"{path}: not a {src.name} copy: expected {want} inside it (or to be that folder itself)"
    )


def _link_folder(src: DatasetSource, path: Path, dest: Path) -> Path:
    root = _find_root(src, path.resolve())
    with atomic_dir(dest) as tmp:
        os.symlink(root, tmp / src.layout_root, target_is_directory=True)
        for name in src.extra_files:
            for where in (root.parent, root):
                if (where / name).is_file():
                    os.symlink(where / name, tmp / name)
                    break
        check_layout(src, tmp, path)
    return dest


def _place(file: Path, target: Path) -> None:
    """Put a downloaded loose file into the dataset folder: hard link when possible, else copy."""
    try:
        os.link(file, target)
    except OSError:
        shutil.copy2(file, target)


def fetch_dataset(dataset: str, source: str, dest: Path, *, cache_dir: Path, sample: SampleConfig, seed: int,
                  min_free_bytes: int) -> Path:  # fmt: skip
    """Make `dest` (data/raw/{dataset}) a complete copy of `dataset` in its real layout; returns `dest`.

    source: "sample" -> the embedded look-alike (`make_sample`); "url" -> the official archives of
    `SOURCES[dataset]`, downloaded into `cache_dir` and extracted; anything else is a path to a folder
    (linked, not copied) or to an archive (extracted). `dest` is replaced atomically.
    """
    src = get_source(dataset)
    dest, cache_dir = Path(dest), Path(cache_dir)
    if source == "sample":
        return make_sample(dataset, dest, sample, seed=seed)
    if source == "url":
        if src.manual_download:
            raise SourceError(f"data.{dataset}.source", f"url: {src.manual_download}")
        files = [
            download(a.url, cache_dir / a.filename, mirrors=a.mirrors, checksums=cache_dir / "checksums.json",
                     min_free_bytes=min_free_bytes, size_hint=a.size)
            for a in src.archives
        ]  # fmt: skip
        with atomic_dir(dest) as tmp:
            for archive, file in zip(src.archives, files, strict=True):
                if archive.unpack:
                    extract_into(file, tmp, min_free_bytes=min_free_bytes)
                else:
                    _place(file, tmp / archive.filename)
            _normalise_layout(src, tmp)
            check_layout(src, tmp, f"{dest} (from {', '.join(a.filename for a in src.archives)})")
        return dest
    path = Path(source).expanduser()
    if not path.exists():
        raise LayoutError(
            f"data.{dataset}.source: {path} does not exist (expected 'sample', 'url', or a folder or archive path)"
        )
    if path.is_dir():
        return _link_folder(src, path, dest)
    if not is_archive(path):
        raise SourceError(
            f"data.{dataset}.source", f"{path} is neither a folder nor a .zip/.tar/.tar.gz archive"
        )
    with atomic_dir(dest) as tmp:
        extract_into(path, tmp, min_free_bytes=min_free_bytes)
        if dataset == "imagenet":
            _keep_class_tars(tmp, src.layout_root)
        for name in src.extra_files:  # e.g. SIDD's validation .mat files kept next to the archive
            if (path.parent / name).is_file() and not (tmp / name).exists():
                os.symlink(path.parent.resolve() / name, tmp / name)
        _normalise_layout(src, tmp)
        check_layout(src, tmp, path)
    return dest


# ------------------------------------------------------------------------------ fetch, check, swap


def count_pairs(manifest) -> dict[str, int]:
    """Pairs (images for ImageNet; blocks for SIDD's .mat validation set) per split of a manifest."""
    return {str(k): int(v) for k, v in manifest.groupby("split").size().items()}


def check_counts(dataset: str, manifest, expected_pairs: dict[str, int], where: str) -> None:
    """`IncompleteDataset` unless the manifest holds pairs, and at least `expected_pairs[split]` per split."""
    counts = count_pairs(manifest)
    if not counts:
        raise IncompleteDataset(where, f"{dataset}: 0 pairs found",
                                "the source holds no images in the expected layout; check data."
                                f"{dataset}.source")  # fmt: skip
    short = {split: (counts.get(split, 0), want) for split, want in expected_pairs.items()
             if counts.get(split, 0) < want}  # fmt: skip
    if short:
        found = ", ".join(f"{split} {got} of {want}" for split, (got, want) in short.items())
        raise IncompleteDataset(
            where,
            f"{dataset}: fewer pairs than expected ({found})",
            f"an incomplete copy; fetch it again, or lower data.{dataset}.expected_pairs",
        )


def check_pairs_whole(dataset: str, manifest, where: str) -> None:
    """`IncompleteDataset` naming the first missing files unless every pair of the manifest has both sides
    (a pair is listed when either side exists, with sha256 "" for the missing one: data.manifest)."""
    has_lq = manifest["lq_path"] != ""
    gone = [*manifest.loc[manifest["sha256"] == "", "gt_path"],
            *manifest.loc[has_lq & (manifest["lq_sha256"].fillna("") == ""), "lq_path"]]  # fmt: skip
    if gone:
        gone = sorted(set(gone))
        more = f" and {len(gone) - 3} more" if len(gone) > 3 else ""
        raise IncompleteDataset(where, f"{dataset}: {len(gone)} file(s) of a pair missing: "
                                f"{', '.join(gone[:3])}{more}", "an incomplete copy; the previous copy is kept")  # fmt: skip


def fetch_and_index(dataset: str, source: str, raw_dir: Path, manifest_path: Path, *, cache_dir: Path,
                    sample: SampleConfig, seed: int, min_free_bytes: int, expected_pairs: dict[str, int],
                    workers: int = 0):  # fmt: skip
    """`fetch_dataset` into a staging folder next to `raw_dir`, build its manifest (data.manifest) and
    check it (`check_counts`, `check_pairs_whole`; unreadable .mat files fail naming the file), then swap
    the copy into `raw_dir` and the manifest into `manifest_path`. On any failure both stay as they were; a
    read-only or full disk is one line naming it. Returns the manifest (a pandas DataFrame)."""
    raw_dir, manifest_path = Path(raw_dir), Path(manifest_path)
    try:
        return _fetch_and_index(dataset, source, raw_dir, manifest_path, cache_dir=cache_dir, sample=sample,
                                seed=seed, min_free_bytes=min_free_bytes, expected_pairs=expected_pairs,
                                workers=workers)  # fmt: skip
    except OSError as err:  # a read-only or full disk: one line naming it
        failure = disk_error(err, raw_dir, f"fetch {dataset}")
        if failure is None:
            raise
        raise failure from None


def _fetch_and_index(dataset: str, source: str, raw_dir: Path, manifest_path: Path, *, cache_dir: Path,
                     sample: SampleConfig, seed: int, min_free_bytes: int, expected_pairs: dict[str, int],
                     workers: int):  # fmt: skip
    import tempfile

    from .manifest import build_manifest

    raw_dir.parent.mkdir(parents=True, exist_ok=True)
    stale.sweep(raw_dir.parent, f".{raw_dir.name}.")  # what a killed fetch of this dataset left
    staging = Path(tempfile.mkdtemp(prefix=f".{raw_dir.name}.", suffix=".fetch", dir=raw_dir.parent))
    stale.claim(staging)
    stage = staging / raw_dir.name
    try:
        try:
            fetch_dataset(dataset, source, stage, cache_dir=cache_dir, sample=sample, seed=seed,
                          min_free_bytes=min_free_bytes)  # fmt: skip
            manifest = build_manifest(dataset, stage, workers=workers)
        except RestorebenchError as err:  # name files where they will be, not in the staging folder
            err.where, err.what = (x.replace(str(stage), str(raw_dir)) for x in (err.where, err.what))
            raise
        check_counts(dataset, manifest, expected_pairs, f"data.{dataset}.source ({source})")
        check_pairs_whole(dataset, manifest, f"data.{dataset}.source ({source})")
        with atomic_path(manifest_path, suffix=".parquet") as tmp:  # renamed into place after the swap
            manifest.to_parquet(tmp, index=False)
            if raw_dir.exists() or raw_dir.is_symlink():
                os.replace(raw_dir, staging / "previous")  # removed with the staging folder
            os.replace(stage, raw_dir)
        return manifest
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        stale.release(staging)
