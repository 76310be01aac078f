"""The `prepare` and `degrade` stages: pick the training rows of a manifest and pack them into a store.

prepare: a paired dataset's training pairs (SIDD noisy/GT; GoPro blur or blur_gamma/sharp) cropped into
overlapping sub-images, data/store/{dataset}/train/. degrade: ImageNet's training images cut into
patches with one synthesized degradation per task, data/store/imagenet/train/ (IPT's pretraining set).
"""

from __future__ import annotations

from pathlib import Path

from restorebench.data.manifest import read_manifest
from restorebench.data.store import degrade_store, prepare_store
from restorebench.errors import RestorebenchError

PAIRED = ("sidd", "gopro")


def prepare_dataset(
    dataset: str, *, root: Path, size: int, step: int, gopro_input: str = "blur", workers: int = 0
) -> dict:
    """Pack `dataset`'s training pairs (manifest split "train") into root/store/{dataset}/train/.

    size, step: sub-image side and stride in pixels. gopro_input: "blur" or "blur_gamma" (GoPro's
    input column). Returns the store's stats (images, subimages, size, step, bytes, path)."""
    if dataset not in PAIRED:
        raise RestorebenchError(f"--dataset {dataset}", "has no paired training set", f"choose {' or '.join(PAIRED)}")
    rows = read_manifest(root / "manifests" / f"{dataset}.parquet", dataset=dataset, split="train")
    lq_col = "alt_path" if dataset == "gopro" and gopro_input == "blur_gamma" else "lq_path"
    raw = root / "raw" / dataset
    pairs = [(r.pair_id, raw / getattr(r, lq_col), raw / r.gt_path) for r in rows.itertuples()]
    try:
        return prepare_store(pairs, root / "store" / dataset / "train", size=size, step=step, workers=workers,
                             meta={"dataset": dataset, "lq": lq_col})  # fmt: skip
    except (ValueError, OSError) as err:
        raise RestorebenchError(raw, str(err), f"run `restorebench validate --dataset {dataset}`") from err


def degrade_imagenet(
    *,
    root: Path,
    tasks: dict,
    patch: int,
    patches_per_image: int,
    max_images: int = 0,
    seed: int = 0,
    workers: int = 0,
    where: str = "degrade.tasks",
) -> dict:
    """Write ImageNet's degraded pretraining store, root/store/imagenet/train/, from the first
    `max_images` (0: all) training images of its manifest. tasks: degrade task name -> spec; patch: side
    in pixels. Returns the store's stats (images, patches, tasks, path)."""
    if not tasks:
        raise RestorebenchError(where, "empty", "list at least one task -> degradation pipeline")
    rows = read_manifest(root / "manifests" / "imagenet.parquet", dataset="imagenet",
                         columns=["pair_id", "gt_path"], split="train")  # fmt: skip
    if max_images:
        rows = rows.head(max_images)
    raw = root / "raw" / "imagenet"
    images = ((r.pair_id, raw / r.gt_path) for r in rows.itertuples())  # a stream, not a list
    try:
        return degrade_store(images, root / "store" / "imagenet" / "train", tasks=tasks, patch=patch,
                             patches_per_image=patches_per_image, seed=seed, workers=workers,
                             total=len(rows))  # fmt: skip
    except (ValueError, OSError) as err:
        raise RestorebenchError(raw, str(err), "run `restorebench validate --dataset imagenet`") from err


def describe_prepare(dataset: str, stats: dict) -> str:
    """One sentence: `prepare sidd: 12 training pairs -> 480 sub-images of 64x64 (step 48), 11.8 MB in ...`."""
    return (f"prepare {dataset}: {stats['images']} training pairs -> {stats['subimages']} sub-images of "
            f"{stats['size']}x{stats['size']} (step {stats['step']}), {stats['bytes'] / 1e6:.1f} MB "
            f"in {stats['path']}")  # fmt: skip


def describe_degrade(stats: dict) -> str:
    """One sentence: `degrade: 20 ImageNet images -> 80 patches, each degraded 6 ways, in ...`."""
    return (f"degrade: {stats['images']} ImageNet images -> {stats['patches']} clean patches, each degraded "
            f"{stats['tasks']} way(s), in {stats['path']}")
