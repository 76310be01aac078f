"""Loader throughput: 256x256 training pairs per second vs DataLoader workers, side by side for

- store: the packed store (`restorebench.data.store`), a decode-free crop from memory-mapped arrays;
- store_u8: the same, batches left as uint8 (converted to float on the device);
- png:   the unprepared baseline, decode a 512x512 lq and gt PNG sub-image pair, then crop;
- lmdb:  BasicSR's format (PNG-encoded values, compression level 1, one key per sub-image), when the
         `lmdb` package is installed.

All three do the same random 256 crop + dihedral augmentation + float CHW conversion, through
`step_loader`. Prints a table and writes results/bench_loader.json.

    python benchmarks/loader.py [--images 8] [--seconds 2] [--workers 0,1,2,16] [--out results/bench_loader.json]
    python benchmarks/run_all.py --only loader     # `section`: per core only, in bench.json
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from restorebench.data.datasets import PairedPatchDataset, counter_ints, step_loader, to_tensor
from restorebench.data.prepare import prepare_store

PATCH, SUB = 256, 512


def photo_like(rng: np.random.Generator) -> np.ndarray:
    """A 512x512 uint8 image that compresses like a photo (smooth structure + mild noise)."""
    yy, xx = np.mgrid[0:SUB, 0:SUB]
    f = rng.uniform(3, 40, 6)
    base = np.stack([np.sin(xx / f[c] + c) * np.cos(yy / f[c + 3] - c) for c in range(3)], -1)
    return np.clip(128 + 90 * base + rng.normal(0, 6, (SUB, SUB, 3)), 0, 255).astype(np.uint8)


class RawPngPairs(Dataset):
    """The baseline: PNG files decoded per sample."""

    def __init__(self, pairs: list[tuple[Path, Path]], seed: int = 0):
        self.pairs, self.seed, self.epoch = pairs, seed, 0

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index):
        epoch, i = index
        lq = np.asarray(Image.open(self.pairs[i][0]).convert("RGB"))
        gt = np.asarray(Image.open(self.pairs[i][1]).convert("RGB"))
        return crop_pair(lq, gt, self.seed, epoch, i)


class LmdbPairs(Dataset):
    """BasicSR-style LMDB: values are PNG bytes; the environment is opened lazily per worker."""

    def __init__(self, path: Path, n: int, seed: int = 0):
        self.path, self.n, self.seed, self.env = str(path), n, seed, None

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index):
        import lmdb

        if self.env is None:
            self.env = lmdb.open(self.path, readonly=True, lock=False, readahead=False, meminit=False)
        epoch, i = index
        with self.env.begin(write=False) as txn:
            lq = np.asarray(Image.open(io.BytesIO(txn.get(f"lq{i}".encode()))).convert("RGB"))
            gt = np.asarray(Image.open(io.BytesIO(txn.get(f"gt{i}".encode()))).convert("RGB"))
        return crop_pair(lq, gt, self.seed, epoch, i)

    def __getstate__(self):
        return {**self.__dict__, "env": None}


def crop_pair(lq: np.ndarray, gt: np.ndarray, seed: int, epoch: int, i: int):
    y, x, k = counter_ints(seed, epoch, i, (SUB - PATCH + 1, SUB - PATCH + 1, 8))
    lq, gt = lq[y : y + PATCH, x : x + PATCH], gt[y : y + PATCH, x : x + PATCH]
    return to_tensor(lq, k), to_tensor(gt, k)


def make_store(root: Path, n: int, store_dir: Path | None = None) -> list[tuple[Path, Path]]:
    """n photo-like 512x512 (lq, gt) PNG pairs under root, packed into a store at store_dir (root/store)."""
    rng = np.random.default_rng(0)
    pairs = []
    for i in range(n):
        gt = photo_like(rng)
        lq = np.clip(gt + rng.normal(0, 12, gt.shape), 0, 255).astype(np.uint8)
        for name, arr in (("lq", lq), ("gt", gt)):
            Image.fromarray(arr).save(root / f"{name}{i:04d}.png")  # Pillow default compression (6)
        pairs.append((root / f"lq{i:04d}.png", root / f"gt{i:04d}.png"))
    prepare_store(
        [(f"im{i}", lq, gt) for i, (lq, gt) in enumerate(pairs)],
        store_dir or root / "store",
        size=SUB,
        step=SUB,
        workers=1,
        progress=False,
    )
    return pairs


def build(root: Path, n: int) -> dict[str, Dataset]:
    pairs = make_store(root, n)
    sets: dict[str, Dataset] = {
        "store": PairedPatchDataset(root / "store", PATCH),
        "store_u8": PairedPatchDataset(root / "store", PATCH, uint8=True),  # float conversion on the GPU
        "png": RawPngPairs(pairs),
    }
    try:
        import lmdb
    except ImportError:
        return sets
    env = lmdb.open(str(root / "lmdb"), map_size=1 << 32)
    with env.begin(write=True) as txn:
        for i, (lq, gt) in enumerate(pairs):
            for name, p in (("lq", lq), ("gt", gt)):
                buf = io.BytesIO()
                Image.open(p).save(buf, format="PNG", compress_level=1)  # BasicSR: cv2 level 1
                txn.put(f"{name}{i}".encode(), buf.getvalue())
    env.close()
    sets["lmdb"] = LmdbPairs(root / "lmdb", n)
    return sets


def rate(ds: Dataset, workers: int, seconds: float, batch: int = 16) -> float:
    """Pairs per second, excluding worker start-up and the first batch."""
    it = step_loader(ds, batch, seed=0, workers=workers, pin_memory=False)  # endless: epochs roll over
    done = 0
    next(it)
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        done += len(next(it)[0])
    elapsed = time.perf_counter() - start
    del it
    return done / elapsed


def section(*, quick: bool = False) -> dict:
    """The loader part of run_all.py: pairs/s per core of each format (workers=0, one thread); the ceiling is
    `store_u8`, what training reads."""
    images, seconds = (2, 0.3) if quick else (8, 2.0)
    formats = ("store", "store_u8", "png")
    print(f"\n== loader: {PATCH}x{PATCH} pairs/s per core (workers=0, 1 thread), "
          f"{images} sub-images of {SUB}, {seconds} s per format", flush=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            sets = build(Path(tmp), images)
            per_core = {n: rate(sets[n], 0, seconds) for n in formats}
    finally:
        torch.set_num_threads(threads)
    for n, v in per_core.items():
        print(f"  {n:>9}: {v:8.0f} pairs/s per core", flush=True)
    ratio = per_core["store"] / per_core["png"]
    print(f"  ceiling (store_u8, what training uses): {per_core['store_u8']:.0f} pairs/s per core; "
          f"store/png {ratio:.1f}x", flush=True)
    return {"patch": PATCH, "subimage": SUB, "images": images, "seconds": seconds,
            "per_core_pairs_per_s": per_core, "ceiling_pairs_per_s_per_core": per_core["store_u8"],
            "store_over_png": ratio}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=8, help="512x512 sub-image pairs in each format")
    ap.add_argument("--seconds", type=float, default=2.0, help="timed seconds per (format, workers)")
    cpus = os.cpu_count() or 1
    ap.add_argument("--workers", default=",".join(str(w) for w in sorted({0, 1, 2, cpus})))
    ap.add_argument("--out", default="results/bench_loader.json")
    args = ap.parse_args()
    workers = [int(w) for w in args.workers.split(",")]
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        sets = build(Path(tmp), args.images)
        # the store is repeated so an epoch is not over after a few batches
        results = {name: {w: rate(ds, w, args.seconds) for w in workers} for name, ds in sets.items()}
    names = list(results)
    print(f"pairs/s of {PATCH}x{PATCH} (lq+gt) from {SUB}x{SUB} sub-images, {cpus} CPUs, batch 16")
    print(
        f"{'workers':>8} "
        + " ".join(f"{n:>10}" for n in names)
        + f" {'store/png':>10}"
        + (f" {'store/lmdb':>10}" if "lmdb" in names else "")
    )
    rows = []
    for w in workers:
        r = {n: results[n][w] for n in names}
        line = f"{w:>8} " + " ".join(f"{r[n]:>10.0f}" for n in names) + f" {r['store'] / r['png']:>10.1f}"
        if "lmdb" in names:
            line += f" {r['store'] / r['lmdb']:>10.1f}"
        print(line)
        rows.append(
            {
                "workers": w,
                **{f"{n}_per_s": round(r[n], 1) for n in names},
                "store_over_png": round(r["store"] / r["png"], 2),
            }
        )
    per_core = {n: round(results[n][0], 1) for n in names}  # workers=0: one process, one core
    print(
        "per core (workers=0): "
        + ", ".join(f"{n} {v:.0f}/s" for n, v in per_core.items())
        + f"; store/png = {per_core['store'] / per_core['png']:.1f}x (target >= 10x)"
    )
    out = {
        "patch": PATCH,
        "subimage": SUB,
        "images": args.images,
        "seconds": args.seconds,
        "batch": 16,
        "cpu_count": cpus,
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "rows": rows,
        "per_core": per_core,
        "store_over_png_per_core": round(per_core["store"] / per_core["png"], 2),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
