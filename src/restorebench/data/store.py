"""Packed, memory-mappable stores of training sub-images (the `prepare` and `degrade` stages write them).

One store is one folder holding a few large files, which DVC tracks well (instead of hundreds of
thousands of small PNGs) and which a loader reads without decoding:

    meta.json       format, version, item count, arrays {name: [h, w, c]}, tasks, provenance
    index.parquet   one row per item: id, image (source id), y, x (top-left in the source image)
    <name>.u8       raw uint8, C order, N x h x w x c, one file per array (e.g. lq.u8, gt.u8)

Every item has one fixed shape per array. Paired stores (`prepare`) hold `lq` and `gt`. Degradation
stores (`degrade`) hold one clean window per row (`clean`) and, in meta.json, each task's degradation
spec, label and scale; `restorebench.data.synth.open_store(path, task=...)` returns that task's view, which synthesises the
degraded input when an item is drawn (restorebench.data.synth). A store from before that change, with one
stored `lq_<task>` array per task, still opens as pairs.

Stores are written under a temporary name next to the target and renamed into place when complete
(`restorebench.io.atomic_dir`): an exception or a failing image never leaves a partial store in place, and
the temporary folder of a killed writer is removed by the next writer of that store (`data.staging`).
Writing is deterministic: the same inputs give the same bytes in every file.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from restorebench.data import staging
from restorebench.errors import RestorebenchError
from restorebench.io import atomic_dir

FORMAT = "restorebench-store"
VERSION = 1
REBUILD = "the store is cut or damaged; delete the folder and run its prepare/degrade stage again"


class StoreError(RestorebenchError, ValueError):
    """A store on disk that cannot be read as written (missing or cut array file, unreadable index)."""


INDEX_COLUMNS = {"id": pa.string(), "image": pa.string(), "y": pa.int32(), "x": pa.int32()}
ROW_GROUP = 65536  # index rows buffered before a parquet row group is written (bounded memory)


# ------------------------------------------------------------------------------------------- writer


class StoreWriter:
    """Append items to a new store at `path`; it appears there only on `close()` (or a clean `with` exit).

    arrays: name -> (h, w, c) of every item's uint8 array. meta: extra JSON-able provenance (e.g. the
    source manifest's sha256, the recipe) merged into meta.json; keep it free of time stamps so rebuilds
    are byte-identical.
    """

    def __init__(
        self, path: str | Path, arrays: Mapping[str, Sequence[int]], *, meta: Mapping[str, Any] | None = None
    ):
        if not arrays:
            raise ValueError("arrays: a store needs at least one array")
        self.path = Path(path)
        self.shapes = {name: tuple(int(v) for v in shape) for name, shape in arrays.items()}
        for name, shape in self.shapes.items():
            if not name.isidentifier() or len(shape) != 3 or min(shape) < 1:
                raise ValueError(
                    f"arrays[{name!r}]: need an identifier name and a positive (h, w, c), got {shape}"
                )
        self.meta = dict(meta or {})
        self.n = 0
        staging.sweep(self.path.parent, f".{self.path.name}.")  # what a killed writer left (data.staging)
        self._ctx = atomic_dir(self.path)
        self.tmp = self._ctx.__enter__()
        staging.claim(self.tmp)
        self._files = {name: open(self.tmp / f"{name}.u8", "wb") for name in self.shapes}  # noqa: SIM115
        self._rows: dict[str, list] = {k: [] for k in INDEX_COLUMNS}
        self._index = pq.ParquetWriter(self.tmp / "index.parquet", pa.schema(INDEX_COLUMNS))
        self._open = True

    def add(self, *, id: str, image: str = "", y: int = 0, x: int = 0, **arrays: np.ndarray) -> None:
        """Append one item: its index fields and one uint8 array per store array (exact shapes)."""
        if set(arrays) != set(self.shapes):
            raise ValueError(f"item {id!r}: got arrays {sorted(arrays)}, the store has {sorted(self.shapes)}")
        for name, arr in arrays.items():
            if arr.dtype != np.uint8 or arr.shape != self.shapes[name]:
                raise ValueError(
                    f"item {id!r}: array {name!r} is {arr.dtype} {arr.shape}, expected uint8 {self.shapes[name]}"
                )
            self._files[name].write(np.ascontiguousarray(arr).data)
        for key, value in (("id", str(id)), ("image", str(image)), ("y", int(y)), ("x", int(x))):
            self._rows[key].append(value)
        self.n += 1
        if len(self._rows["id"]) >= ROW_GROUP:
            self._flush_index()

    def _flush_index(self) -> None:
        if self._rows["id"]:
            self._index.write_table(pa.table(self._rows, schema=pa.schema(INDEX_COLUMNS)))
            self._rows = {k: [] for k in INDEX_COLUMNS}

    def close(self) -> Path:
        """Finish the files, write meta.json and rename the store into place; returns its path."""
        if not self._open:
            return self.path
        self._flush_index()
        self._index.close()
        for f in self._files.values():
            f.close()
        meta = {
            **self.meta,
            "format": FORMAT,
            "version": VERSION,
            "n": self.n,
            "dtype": "uint8",
            "layout": "N x h x w x c, C order, one <name>.u8 file per array",
            "arrays": {k: list(v) for k, v in self.shapes.items()},
        }
        (self.tmp / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        self._open = False
        self._ctx.__exit__(None, None, None)
        staging.release(self.tmp)
        return self.path

    def abort(self, exc: BaseException | None = None) -> None:
        """Drop everything written so far; the target path is left as it was."""
        if not self._open:
            return
        self._open = False
        for f in self._files.values():
            f.close()
        try:
            self._index.close()
        except Exception:  # noqa: BLE001 - the temp folder is being removed anyway
            pass
        err = exc or RuntimeError("store writing aborted")
        try:
            self._ctx.__exit__(type(err), err, err.__traceback__)
        finally:
            staging.release(self.tmp)

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc is None:
            self.close()
        else:
            self.abort(exc)


# ------------------------------------------------------------------------------------------- reader


class Store:
    """A read-only store: `len(store)` items, `store.get(i) -> (lq, gt, meta)` as uint8 HxWxC views.

    Arrays are memory-mapped lazily (and re-opened after pickling, so DataLoader workers started with
    spawn do not copy the data). `lq`/`gt` name the arrays `get` returns; `label` is added to the meta.
    """

    def __init__(self, path: str | Path, *, lq: str = "lq", gt: str = "gt", label: int | None = None):
        self.path = Path(path)
        meta_path = self.path / "meta.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"{self.path}: not a store (no meta.json); run the prepare/degrade stage")
        self.meta = json.loads(meta_path.read_text())
        if self.meta.get("format") != FORMAT or self.meta.get("version") != VERSION:
            raise ValueError(
                f"{meta_path}: format {self.meta.get('format')!r} v{self.meta.get('version')}, "
                f"expected {FORMAT!r} v{VERSION}; rebuild the store"
            )
        self.shapes = {k: tuple(v) for k, v in self.meta["arrays"].items()}
        for key, name in (("lq", lq), ("gt", gt)):
            if name not in self.shapes:
                raise ValueError(
                    f"{self.path}: {key}={name!r} is not an array here; arrays: {sorted(self.shapes)}"
                )
        self.lq_name, self.gt_name, self.label = lq, gt, label
        self.n = int(self.meta["n"])
        self._check_sizes()
        try:
            self.index = pq.read_table(self.path / "index.parquet").to_pydict()
        except (OSError, ValueError) as err:  # pyarrow's ArrowInvalid is a ValueError
            raise StoreError(
                self.path / "index.parquet", f"unreadable ({str(err).splitlines()[0]})", REBUILD
            ) from None
        self._maps: dict[str, np.ndarray] = {}

    def _check_sizes(self) -> None:
        """Each array file holds n x shape bytes: a cut copy fails here naming the file, not in np.memmap
        ("mmap length is greater than file size") inside a training run."""
        for name, shape in self.shapes.items():
            path = self.path / f"{name}.u8"
            want = self.n * int(np.prod(shape))
            have = path.stat().st_size if path.is_file() else None
            if have is None and want:
                raise StoreError(path, "missing", REBUILD)
            if have is not None and have < want:
                raise StoreError(
                    path, f"truncated: {have} bytes, expected {want} ({self.n} x {list(shape)})", REBUILD
                )

    def array(self, name: str) -> np.ndarray:
        """The whole N x h x w x c array `name`, memory-mapped read-only."""
        if name not in self._maps:
            shape = (self.n, *self.shapes[name])
            if self.n == 0:
                self._maps[name] = np.empty(shape, np.uint8)
            else:
                self._maps[name] = np.memmap(self.path / f"{name}.u8", np.uint8, "r", shape=shape)
        return self._maps[name]

    def __len__(self) -> int:
        return self.n

    def get(self, i: int, *, seed: int = 0, draw: int = 0,
            crop: tuple[int, int, int] | None = None) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:  # fmt: skip
        """Item i: (lq, gt) uint8 views (no copy) and its index row (+ label). crop: (y, x, size) in gt
        pixels, the lq view cut at y / scale. seed and draw change nothing here (the pairs are stored); a
        synthesising store (restorebench.data.synth) degrades per draw."""
        if not -self.n <= i < self.n:
            raise IndexError(f"item {i} out of range for a store of {self.n}")
        i = i % self.n
        meta = {k: v[i] for k, v in self.index.items()}
        if self.label is not None:
            meta["label"] = self.label
        lq, gt = self.array(self.lq_name)[i], self.array(self.gt_name)[i]
        if crop is not None:
            y, x, size = crop
            s = gt.shape[0] // lq.shape[0]
            lq, gt = lq[y // s : (y + size) // s, x // s : (x + size) // s], gt[y : y + size, x : x + size]
        return lq, gt, meta

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_maps": {}}


# ------------------------------------------------------------------------------------------ helpers


def decode_rgb(data: bytes, name: str | Path) -> np.ndarray:
    """Decode encoded image bytes to HxWx3 uint8 RGB; errors name `name` (the file or tar member)."""
    import io

    return read_rgb(io.BytesIO(data), name=name)


def read_rgb(path: str | Path | Any, *, name: str | Path | None = None) -> np.ndarray:
    """Decode an image file (or a binary file object) to HxWx3 uint8 RGB; errors name the file (`name`)."""
    try:
        with Image.open(path) as im:
            im.load()
            return np.asarray(im.convert("RGB"))
    except Exception as err:  # PIL raises several types for corrupt data
        raise ValueError(f"cannot decode image {str(name or path)!r}: {type(err).__name__}: {err}") from None


def crop_subimages(
    img: np.ndarray | Sequence[int], size: int, step: int, *, name: str = "image"
) -> list[tuple[int, int]]:
    """Top-left (y, x) of overlapping size x size sub-images, as BasicSR's
    scripts/data_preparation/extract_subimages.py does (thresh_size 0): positions 0, step, 2 step, ...
    along each axis, plus the last position (h - size) when the border would otherwise be missed.

    img: an HxW(xC) array or its shape. Raises ValueError naming `name` and the sizes when the image is
    smaller than `size`.
    """
    h, w = (img.shape if isinstance(img, np.ndarray) else tuple(img))[:2]
    if size < 1 or step < 1:
        raise ValueError(f"size and step must be >= 1, got size={size}, step={step}")
    if h < size or w < size:
        raise ValueError(f"{name}: {h}x{w} is smaller than the sub-image size {size}x{size}")

    def axis(n: int) -> list[int]:
        pos = list(range(0, n - size + 1, step))
        if n - (pos[-1] + size) > 0:
            pos.append(n - size)
        return pos

    return [(y, x) for y in axis(h) for x in axis(w)]


def source_group(image: str) -> str:
    """The group of a source image id: the id up to its last "_". Manifest pair ids, which the prepare and
    degrade stages keep as their items' `image`, are "{group}_{frame}" (restorebench.data.manifest): SIDD
    "{scene instance}_010", GoPro "{sequence}_000047", ImageNet "{class}_{number}". An id without "_" is
    a group of its own."""
    return image.rpartition("_")[0] or image


def holdout_split(store: Store, fraction: float, key: str = "holdout") -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out) item indices. Whole groups of source images (`source_group`: a GoPro sequence, a
    SIDD scene instance, an ImageNet class) are held out, since the frames of a sequence are near copies of
    each other: no patch of a held-out group is ever trained on. The held-out groups are the last in store
    order, as many as bring the held-out share of source images closest to `fraction` (ties: the more), at
    least one when fraction > 0, and at least one group stays to train on. A store whose images fall in
    fewer than two groups holds out whole images the same way. `key` names the setting in error messages."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"{key}: {fraction} must be in [0, 1) (the fraction of source images held out)")
    images = store.index["image"]
    order = list(dict.fromkeys(images))  # unique source images, first-seen order
    group = {img: source_group(img) for img in order}
    if len(set(group.values())) < 2:  # nothing to keep together
        group = {img: img for img in order}
    sizes = Counter(group[img] for img in order)  # images per group, in first-seen order
    names = list(sizes)
    n_out = 0
    if fraction > 0 and len(names) > 1:
        tail = np.cumsum([sizes[g] for g in reversed(names)])[:-1]  # images in the last 1, 2, ... groups
        err = np.abs(tail - fraction * len(order))
        n_out = len(err) - int(np.argmin(err[::-1]))  # the closest; on a tie, the larger count
    held = set(names[len(names) - n_out :])
    mask = np.fromiter((group[img] in held for img in images), bool, count=len(images))
    train_idx, held_idx = np.flatnonzero(~mask), np.flatnonzero(mask)
    if len(train_idx) == 0:
        raise ValueError(f"{key}: {store.path} has no items to train on")
    return train_idx, held_idx
