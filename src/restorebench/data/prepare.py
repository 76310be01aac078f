"""The `prepare` stage: a paired dataset's training pairs (SIDD noisy/GT; GoPro blur or blur_gamma/sharp),
picked from its manifest and cropped into overlapping sub-images packed in a store,
data/store/{dataset}/train/. (The `degrade` stage, ImageNet's pretraining store, is
restorebench.degrade.stage.)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from restorebench import logs
from restorebench.data.archives import check_free_space, disk_error
from restorebench.data.manifest import read_manifest
from restorebench.data.parallel import parallel_map
from restorebench.data.store import StoreWriter, crop_subimages, read_rgb
from restorebench.data.validate import require_valid
from restorebench.errors import RestorebenchError

PAIRED = ("sidd", "gopro")


def _crop_pair(
    job: tuple[str, str, str, int, int],
) -> tuple[str, list[tuple[int, int]], np.ndarray, np.ndarray]:
    image_id, lq_path, gt_path, size, step = job
    lq, gt = read_rgb(lq_path), read_rgb(gt_path)
    if lq.shape != gt.shape:
        raise ValueError(f"{image_id}: {lq_path} is {lq.shape[:2]} but {gt_path} is {gt.shape[:2]}")
    pos = crop_subimages(gt, size, step, name=f"{image_id} ({gt_path})")
    lq_c = np.stack([lq[y : y + size, x : x + size] for y, x in pos])
    gt_c = np.stack([gt[y : y + size, x : x + size] for y, x in pos])
    return image_id, pos, lq_c, gt_c


def prepare_store(
    pairs: Sequence[tuple[str, str | Path, str | Path]],
    out_dir: str | Path,
    *,
    size: int,
    step: int,
    workers: int = 0,
    meta: Mapping[str, Any] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Crop (id, lq_path, gt_path) image pairs into overlapping size x size sub-images (positions from
    `crop_subimages`) and pack them into a store at out_dir (lq.u8, gt.u8, index.parquet, meta.json).

    Reference recipes: SIDD size 512, step 384; GoPro size 512, step 256. PNGs are decoded in `workers`
    processes (0 = all cores), written in input order. A file that fails to decode aborts the stage with
    its path in the error and leaves no store behind. Returns counts for the stage's log.
    """
    recipe = {"stage": "prepare", "size": int(size), "step": int(step), **dict(meta or {})}
    jobs = [(str(i), str(lq), str(gt), int(size), int(step)) for i, lq, gt in pairs]
    n_sub = 0
    with StoreWriter(out_dir, {"lq": (size, size, 3), "gt": (size, size, 3)}, meta=recipe) as writer:
        done = parallel_map(_crop_pair, jobs, workers)
        if progress:
            done = logs.progress(done, total=len(jobs), desc=f"prepare {Path(out_dir).parent.name}", unit="images")
        for image_id, pos, lq_c, gt_c in done:
            for (y, x), lq, gt in zip(pos, lq_c, gt_c, strict=True):
                writer.add(id=f"{image_id}/{y}_{x}", image=image_id, y=y, x=x, lq=lq, gt=gt)
            n_sub += len(pos)
    return {
        "images": len(jobs),
        "subimages": n_sub,
        "size": size,
        "step": step,
        "bytes": 2 * n_sub * size * size * 3,
        "path": str(out_dir),
    }


def prepare_dataset(
    dataset: str, *, root: Path, size: int, step: int, gopro_input: str = "blur", workers: int = 0
) -> dict:
    """Pack `dataset`'s training pairs (manifest split "train") into root/store/{dataset}/train/.

    size, step: sub-image side and stride in pixels. gopro_input: "blur" or "blur_gamma" (GoPro's
    input column). Refuses a dataset that has not passed validation (data.validate.require_valid) and a
    disk without `store_bytes` free; a full or read-only disk fails naming it and the bytes needed.
    Returns the store's stats (images, subimages, size, step, bytes, path)."""
    if dataset not in PAIRED:
        raise RestorebenchError(f"--dataset {dataset}", "has no paired training set", f"choose {' or '.join(PAIRED)}")
    rows = read_manifest(root / "manifests" / f"{dataset}.parquet", dataset=dataset, split="train")
    require_valid(root, dataset, "prepare")  # a frame that failed validation is never packed
    lq_col = "alt_path" if dataset == "gopro" and gopro_input == "blur_gamma" else "lq_path"
    raw, out = root / "raw" / dataset, root / "store" / dataset / "train"
    pairs = [(r.pair_id, raw / getattr(r, lq_col), raw / r.gt_path) for r in rows.itertuples()]
    need = store_bytes(zip(rows["height"], rows["width"], strict=True), size, step)
    check_free_space(out.parent, need, 0, f"prepare {dataset}")  # names the disk, not the data
    try:
        return prepare_store(pairs, out, size=size, step=step, workers=workers,
                             meta={"dataset": dataset, "lq": lq_col})  # fmt: skip
    except OSError as err:  # the store's disk (full, read-only), not the data, unless it says otherwise
        failure = disk_error(err, out, f"prepare {dataset}", need_bytes=need)
        if failure is None:
            raise RestorebenchError(raw, str(err), f"run `restorebench validate --dataset {dataset}`") from err
        raise failure from None
    except ValueError as err:
        raise RestorebenchError(raw, str(err), f"run `restorebench validate --dataset {dataset}`") from err


def store_bytes(shapes: Iterable[tuple[int, int]], size: int, step: int) -> int:
    """Bytes of the lq.u8 and gt.u8 arrays `prepare_store` writes for images of these (height, width):
    2 x sub-images x size x size x 3 (uint8; the index and meta.json add a few KB). An image smaller than
    `size` counts 0 (prepare_store refuses it, naming it)."""
    n = sum(len(crop_subimages((int(h), int(w)), size, step)) for h, w in shapes if h >= size and w >= size)
    return 2 * n * size * size * 3


def describe_prepare(dataset: str, stats: dict) -> str:
    """One sentence: `prepare sidd: 12 training pairs -> 480 sub-images of 64x64 (step 48), 11.8 MB in ...`."""
    return (f"prepare {dataset}: {stats['images']} training pairs -> {stats['subimages']} sub-images of "
            f"{stats['size']}x{stats['size']} (step {stats['step']}), {stats['bytes'] / 1e6:.1f} MB "
            f"in {stats['path']}")  # fmt: skip
