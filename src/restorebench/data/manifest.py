"""Manifests: one row per image pair (per image for ImageNet), written as data/manifests/{dataset}.parquet.

Columns (paths relative to raw_dir, POSIX separators):

    split, group, pair_id            train/val/test; scene instance / sequence / class; unique id
    lq_path, gt_path                 degraded input and clean target ("" for ImageNet's lq)
    alt_path                         GoPro's blur_gamma frame (the other blur convention), else ""
    mat_image, mat_block             SIDD validation rows: index into N x B of the .mat arrays, else -1
    height, width, channels, dtype   of the gt image (from the file header), -1 / "" when missing
    bytes, sha256                    gt file size and sha256 ("" when the file is missing)
    lq_height, lq_width, lq_channels, lq_dtype, lq_bytes, lq_sha256   the same for lq
    offset                           where gt's bytes start inside the tar that gt_path names, else -1

ImageNet kept as its class tars (train/nXXXXXXXX.tar, as ILSVRC2012_img_train.tar holds them): one row per
JPEG member, gt_path "train/n01440764.tar!n01440764_10026.JPEG" (tar!member, as data.archives names
members), offset and bytes locate its data, so `read_image_bytes` reads one image with a seek and no
extraction; validation and the degrade stage both read through it. The raw copy stays about a thousand
files (what DVC tracks) instead of 1.28M.

Decisions:
- Pairs are enumerated from the union of lq and gt files, so a pair missing one side still gets a row
  (its missing side has sha256 "") and validation names the missing file.
- GoPro's lq is `blur` (what published GoPro results train and test on); `blur_gamma` is kept as alt_path.
- SIDD validation blocks (ValidationNoisyBlocksSrgb.mat / ValidationGtBlocksSrgb.mat in raw_dir) get one
  row per block, split "val", group "val_{image:04d}", pair_id "val_{image:04d}_{block:02d}"; both paths
  point at the .mat files; bytes and sha256 are those of the block's uint8 array (C order), not the file.
- Rows are sorted by (split, group, pair_id) so the same files always give the same manifest.
"""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from restorebench.data.parallel import parallel_list
from restorebench.errors import RestorebenchError
from restorebench.io import atomic_path

from .sources import SIDD_VAL_GT, SIDD_VAL_NOISY

COLUMNS = [
    "split", "group", "pair_id", "lq_path", "gt_path", "alt_path", "mat_image", "mat_block",
    "height", "width", "channels", "dtype", "bytes", "sha256",
    "lq_height", "lq_width", "lq_channels", "lq_dtype", "lq_bytes", "lq_sha256", "offset",
]  # fmt: skip
IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")
MEMBER = "!"  # tar!member in gt_path
NO_LQ = {"height": None, "width": None, "channels": None, "dtype": "", "bytes": None, "sha256": ""}
MISSING = {"height": -1, "width": -1, "channels": -1, "dtype": "", "bytes": -1, "sha256": ""}
# PNG colour type -> channels; Pillow mode -> (channels, dtype)
PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
MODES = {
    "1": (1, "bool"), "L": (1, "uint8"), "P": (1, "uint8"), "LA": (2, "uint8"), "RGB": (3, "uint8"),
    "RGBA": (4, "uint8"), "CMYK": (4, "uint8"), "YCbCr": (3, "uint8"), "I;16": (1, "uint16"),
    "I": (1, "int32"), "F": (1, "float32"),
}  # fmt: skip


def header_info(data: bytes) -> tuple[int, int, int, str]:
    """(height, width, channels, dtype) of an encoded image, from its header (no full decode).

    PNG is read from IHDR directly, because Pillow reports 16-bit RGB PNGs as 8-bit "RGB".
    """
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
        width, height, depth, colour = struct.unpack(">IIBB", data[16:26])
        return height, width, PNG_CHANNELS.get(colour, -1), "uint16" if depth == 16 else "uint8"
    import io

    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        channels, dtype = MODES.get(im.mode, (-1, im.mode))
        return im.height, im.width, channels, dtype


def read_image_bytes(raw_dir: str | Path, rel: str, offset: int = -1, size: int = -1) -> bytes:
    """The encoded bytes of one manifest image: the file raw_dir/rel, or, with offset >= 0, `size` bytes at
    `offset` of the tar that rel ("train/n01440764.tar!n01440764_10026.JPEG") names. FileNotFoundError for
    a missing file; OSError when the tar ends before the member does."""
    if offset is None or offset < 0:
        return (Path(raw_dir) / rel).read_bytes()
    tar = Path(raw_dir) / rel.split(MEMBER, 1)[0]
    with open(tar, "rb") as f:
        f.seek(int(offset))
        data = f.read(int(size))
    if len(data) != size:
        raise OSError(f"cut short: {tar} ends {size - len(data)} bytes into this member")
    return data


def bytes_info(data: bytes) -> dict[str, Any]:
    """Header facts, size and sha256 of one encoded image."""
    try:
        height, width, channels, dtype = header_info(data)
    except Exception:  # undecodable header: validation reports it, the manifest still lists the file
        height, width, channels, dtype = -1, -1, -1, ""
    return {
        "height": height, "width": width, "channels": channels, "dtype": dtype,
        "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(),
    }  # fmt: skip


def file_info(path: str | Path) -> dict[str, Any]:
    """Header facts, size and sha256 of one image file; MISSING values when it does not exist."""
    try:
        return bytes_info(Path(path).read_bytes())
    except FileNotFoundError:
        return dict(MISSING)


def tar_infos(path: str | Path) -> list[tuple[str, int, dict[str, Any]]]:
    """(member name, data offset, bytes_info) of every image member of an uncompressed tar, in tar order:
    the headers are walked and each member's bytes read once, nothing is written to disk."""
    import tarfile

    out = []
    with tarfile.open(path, "r:") as tf:
        for m in tf:
            if m.isfile() and m.name.lower().endswith(IMAGE_SUFFIXES):
                with tf.extractfile(m) as f:
                    out.append((m.name, m.offset_data, bytes_info(f.read())))
    return out


def _row(split: str, group: str, pair_id: str, lq: str, gt: str, alt: str = "") -> dict[str, Any]:
    return {"split": split, "group": group, "pair_id": pair_id, "lq_path": lq, "gt_path": gt, "alt_path": alt,
            "mat_image": -1, "mat_block": -1, "offset": -1}  # fmt: skip


def _sidd_pairs(folder: Path) -> list[tuple[str, str]]:
    """(lq name, gt name) for every *_NOISY_* / *_GT_* PNG in one SIDD instance folder, either side present."""
    pairs = {}
    for f in folder.iterdir():
        if f.suffix.lower() == ".png" and ("_GT_" in f.name or "_NOISY_" in f.name):
            lq = f.name.replace("_GT_", "_NOISY_")
            pairs[lq] = lq.replace("_NOISY_", "_GT_")
    return sorted(pairs.items())


def _sidd_rows(raw_dir: Path) -> list[dict[str, Any]]:
    data = raw_dir / "SIDD_Medium_Srgb" / "Data"
    if not data.is_dir():
        raise FileNotFoundError(f"{data}: SIDD folder not found (expected SIDD_Medium_Srgb/Data/<instance>/)")
    rows = []
    for inst in sorted(p for p in data.iterdir() if p.is_dir()):
        rel = f"SIDD_Medium_Srgb/Data/{inst.name}"
        for lq, gt in _sidd_pairs(inst):
            suffix = Path(lq).stem.split("_")[-1]
            rows.append(_row("train", inst.name, f"{inst.name}_{suffix}", f"{rel}/{lq}", f"{rel}/{gt}"))
    return rows


def load_mat_blocks(path: Path) -> np.ndarray:
    """The one array variable of a SIDD validation .mat file (N x B x h x w x 3 uint8)."""
    import scipy.io

    from restorebench.errors import RestorebenchError

    try:
        mat = scipy.io.loadmat(path)
    except FileNotFoundError:
        raise
    except Exception as err:  # scipy raises ValueError, OSError, TypeError ... for a cut or corrupt file
        link = f" (a link to {path.resolve()})" if path.is_symlink() else ""
        raise RestorebenchError(path, f"unreadable .mat file{link}: {type(err).__name__}: "
                                f"{str(err).splitlines()[0] if str(err) else ''}".rstrip(": "),
                                "the file is truncated or corrupt; download it again") from None  # fmt: skip
    names = [k for k in mat if not k.startswith("__")]
    if path.stem in mat:
        return mat[path.stem]
    raise KeyError(f"{path}: no variable named {path.stem!r} (found {names})")


def _sidd_val_rows(raw_dir: Path) -> list[dict[str, Any]]:
    arrays = {}
    for name in (SIDD_VAL_NOISY, SIDD_VAL_GT):
        if (raw_dir / name).exists():
            arrays[name] = load_mat_blocks(raw_dir / name)
    if not arrays:
        return []
    shape = next(iter(arrays.values())).shape[:2]
    rows = []
    for n in range(shape[0]):
        for b in range(shape[1]):
            row = _row("val", f"val_{n:04d}", f"val_{n:04d}_{b:02d}", SIDD_VAL_NOISY, SIDD_VAL_GT)
            row.update(mat_image=n, mat_block=b)
            for prefix, name in (("lq_", SIDD_VAL_NOISY), ("", SIDD_VAL_GT)):
                arr = arrays.get(name)
                if arr is None or arr.ndim < 3 or n >= arr.shape[0] or b >= arr.shape[1]:
                    info = dict(MISSING)
                else:
                    block = np.ascontiguousarray(arr[n, b])
                    info = {"height": block.shape[0], "width": block.shape[1],
                            "channels": block.shape[2] if block.ndim == 3 else 1, "dtype": str(block.dtype),
                            "bytes": block.nbytes, "sha256": hashlib.sha256(block.tobytes()).hexdigest()}  # fmt: skip
                row.update({prefix + k: v for k, v in info.items()})
            rows.append(row)
    return rows


def _gopro_rows(raw_dir: Path) -> list[dict[str, Any]]:
    root = raw_dir / "GOPRO_Large"
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: GoPro folder not found (expected GOPRO_Large/{{train,test}}/)")
    rows = []
    for split_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for seq in sorted(p for p in split_dir.iterdir() if p.is_dir()):
            names = sorted({f.name for sub in ("blur", "sharp") if (seq / sub).is_dir()
                            for f in (seq / sub).iterdir() if f.suffix.lower() == ".png"})  # fmt: skip
            rel = f"GOPRO_Large/{split_dir.name}/{seq.name}"
            alt = seq / "blur_gamma"
            for name in names:
                rows.append(_row(split_dir.name, seq.name, f"{seq.name}_{Path(name).stem}", f"{rel}/blur/{name}",
                                 f"{rel}/sharp/{name}", f"{rel}/blur_gamma/{name}" if alt.is_dir() else ""))  # fmt: skip
    return rows


def _imagenet_rows(raw_dir: Path, workers: int = 0) -> list[dict[str, Any]]:
    """Rows of train/nXXXXXXXX/*.JPEG files and of the JPEG members of train/nXXXXXXXX.tar class tars
    (these with their offset and bytes_info, read here, one tar per worker task)."""
    root = raw_dir / "train"
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: ImageNet folder not found (expected train/nXXXXXXXX.tar or "
                                "train/nXXXXXXXX/*.JPEG)")  # fmt: skip
    rows = []
    for cls in sorted(p for p in root.iterdir() if p.is_dir()):
        for f in sorted(cls.iterdir()):
            if f.suffix.lower() in IMAGE_SUFFIXES:
                rows.append(_row("train", cls.name, f.stem, "", f"train/{cls.name}/{f.name}"))
    tars = sorted(p for p in root.iterdir() if p.is_file() and p.suffix == ".tar")
    members = parallel_list(tar_infos, [str(t) for t in tars], workers, desc="manifest imagenet", unit="tars")
    for tar, found in zip(tars, members, strict=True):
        for name, offset, info in found:
            row = _row("train", tar.stem, Path(name).stem, "", f"train/{tar.name}{MEMBER}{name}")
            rows.append({**row, **info, "offset": offset})
    return rows


ROWS = {"sidd": _sidd_rows, "gopro": _gopro_rows, "imagenet": _imagenet_rows}


def build_manifest(dataset: str, raw_dir: Path, *, workers: int = 0) -> pd.DataFrame:
    """One row per pair under `raw_dir` (data/raw/{dataset}); see the module docstring for the columns.

    Files are hashed (sha256) and their headers read in `workers` processes (0 = all cores).
    """
    if dataset not in ROWS:
        raise ValueError(f"unknown dataset {dataset!r}; choose from {sorted(ROWS)}")
    raw_dir = Path(raw_dir)
    rows = _imagenet_rows(raw_dir, workers) if dataset == "imagenet" else ROWS[dataset](raw_dir)
    mat_rows = _sidd_val_rows(raw_dir) if dataset == "sidd" else []
    paths = sorted({r[k] for r in rows for k in ("lq_path", "gt_path") if r[k] and r["offset"] < 0})
    infos = dict(zip(paths, parallel_list(file_info, [str(raw_dir / p) for p in paths], workers,
                                                   desc=f"manifest {dataset}", unit="files"), strict=True))
    for r in rows:
        if r["offset"] < 0:
            r.update(infos[r["gt_path"]])
        lq = infos[r["lq_path"]] if r["lq_path"] else NO_LQ
        r.update({"lq_" + k: v for k, v in lq.items()})
    df = pd.DataFrame(rows + mat_rows, columns=COLUMNS)
    df = df.sort_values(["split", "group", "pair_id"], kind="stable").reset_index(drop=True)
    for col in ("lq_height", "lq_width", "lq_channels", "lq_bytes"):
        df[col] = df[col].astype("Int64")
    return df


def write_manifest(df: pd.DataFrame, path: Path) -> None:
    """Write `df` to `path` as parquet, atomically (temporary file in the same folder, then rename)."""
    with atomic_path(path, suffix=".parquet") as tmp:
        df.to_parquet(tmp, index=False)


def read_manifest(path: Path, *, dataset: str | None = None, columns: list[str] | None = None,
                  split: str | None = None) -> pd.DataFrame:  # fmt: skip
    """Read a manifest written by `write_manifest` (only `columns`, only the rows of `split` when given);
    a missing file fails naming it and the command that makes it (ManifestMissing, a RestorebenchError)."""
    path = Path(path)
    if not path.exists():
        raise ManifestMissing(path, "manifest not found",
                              f"run `restorebench fetch --dataset {dataset or path.stem}` first")  # fmt: skip
    if columns is not None and split is not None and "split" not in columns:
        columns = ["split", *columns]
    df = pd.read_parquet(path, columns=columns)
    return df[df["split"] == split] if split is not None else df


class ManifestMissing(RestorebenchError, FileNotFoundError):
    """No manifest where a stage expects one."""
