"""The `prepare` and `degrade` stages: pick the training rows of a manifest and pack them into a store.

prepare: a paired dataset's training pairs (SIDD noisy/GT; GoPro blur or blur_gamma/sharp) cropped into
overlapping sub-images, data/store/{dataset}/train/. degrade: clean windows of ImageNet's training
images, data/store/imagenet/train/ (IPT's and DCPT's pretraining set); each task's degraded input is
synthesised when a sample is drawn (restorebench.data.synth).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from restorebench import logs
from restorebench.data.archives import check_free_space, disk_error
from restorebench.data.manifest import read_image_bytes, read_manifest
from restorebench.data.parallel import parallel_map
from restorebench.data.store import StoreWriter, crop_subimages, decode_rgb, read_rgb
from restorebench.data.synth import CLEAN
from restorebench.data.validate import require_valid
from restorebench.degrade.rng import derive_rng
from restorebench.errors import RestorebenchError

PAIRED = ("sidd", "gopro")


# -------------------------------------------------------------------------------------- prepare stage


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


# -------------------------------------------------------------------------------------- degrade stage


def _clean_windows(job: tuple) -> tuple[str, list[tuple[int, int]], np.ndarray]:
    image_id, source, patch, margin, align, count, seed = job
    if isinstance(source, tuple):  # (raw folder, manifest path, offset, size): a JPEG inside a class tar
        img = decode_rgb(read_image_bytes(*source), f"{source[0]}/{source[1]}")
    else:
        img = read_rgb(source)
    h, w = img.shape[:2]
    if h < patch or w < patch:
        raise ValueError(f"{image_id} ({source if not isinstance(source, tuple) else source[1]}): {h}x{w} is "
                         f"smaller than patch={patch}")  # fmt: skip
    # as much real context as the image has (a multiple of every SR scale, so the LR crop lands on whole LR
    # pixels); the rest of the margin mirrors the border, as MATLAB's imresize and scipy's filters pad
    m = min(margin, (min(h, w) - patch) // 2) // align * align
    side = patch + 2 * m
    pos_rng = derive_rng(seed, "position", image_id)
    pos, windows = [], []
    for _ in range(count):
        y0, x0 = int(pos_rng.integers(0, h - side + 1)), int(pos_rng.integers(0, w - side + 1))
        window = img[y0 : y0 + side, x0 : x0 + side]
        if m < margin:
            window = np.pad(window, ((margin - m,) * 2, (margin - m,) * 2, (0, 0)), mode="symmetric")
        windows.append(window)
        pos.append((y0 + m, x0 + m))
    return image_id, pos, np.stack(windows)


def degrade_store(
    images: Iterable[tuple[str, str | Path | tuple]],
    out_dir: str | Path,
    *,
    tasks: Mapping[str, Sequence[Mapping[str, Any]]],
    patch: int = 48,
    patches_per_image: int = 1,
    seed: int = 0,
    workers: int = 0,
    margin: int = 24,
    labels: Mapping[str, int] | None = None,
    meta: Mapping[str, Any] | None = None,
    total: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """The pretraining set: for each clean (id, source) image, `patches_per_image` clean windows of
    (patch + 2 margin)^2 pixels at seeded random positions, packed into one store at out_dir (`clean.u8`),
    with each task's degradation recorded in meta.json and synthesised when a sample is drawn
    (restorebench.data.synth: derive_rng(seed, "degrade", item id, task, draw)), not stored.

    source: an image file's path, or (raw folder, manifest path, byte offset, size) of an image inside a
    tar (restorebench.data.manifest.read_image_bytes). tasks: task name -> pipeline spec (as in
    params.yaml), e.g. {"denoise_30": [{"name": "gaussian_noise", "sigma": 30}], "sr_x2": [{"name":
    "bicubic_down", "scale": 2}]}. Task labels: `labels` or the order of `tasks` (0, 1, ...); meta.json
    records task -> label, scale, spec. margin: pixels of real context the degradations see around the
    patch (rounded down to a multiple of every SR scale; 0: the degradations' own border handling).
    Positions come from derive_rng(seed, "position", image id) only, so a rebuild gives identical bytes
    for any worker count. `images` is consumed as a stream (ImageNet-scale works in bounded memory);
    `total` sizes the progress bar when it has no len().
    """
    from restorebench.degrade.chain import build_pipeline

    if not tasks:
        raise ValueError("tasks: need at least one task -> pipeline spec")
    if patch < 1 or patches_per_image < 1 or margin < 0:
        raise ValueError(
            f"need patch >= 1, patches_per_image >= 1, margin >= 0; got {patch}, {patches_per_image}, {margin}"
        )
    pipelines = {t: build_pipeline(spec, where=f"tasks.{t}") for t, spec in tasks.items()}
    labels = dict(labels) if labels is not None else {t: i for i, t in enumerate(tasks)}
    if set(labels) != set(tasks):
        raise ValueError(f"labels: keys {sorted(labels)} must equal the tasks {sorted(tasks)}")
    scales = {}
    for task, pipe in pipelines.items():  # output size per task from a dry run on a blank patch
        out = pipe(np.zeros((patch, patch, 3), np.float32), np.random.default_rng(0))
        s = patch // out.shape[0] if out.shape[0] else 0
        if out.shape[:2] != (patch // max(s, 1), patch // max(s, 1)) or s < 1 or patch % s:
            raise ValueError(
                f"tasks.{task}: patch={patch} gives lq {out.shape[:2]}; patch must be a multiple of the scale"
            )
        if not task.isidentifier():
            raise ValueError(f"tasks: task name {task!r} must be an identifier (letters, digits, _)")
        scales[task] = s
    align = math.lcm(*scales.values())
    margin = margin // align * align
    side = patch + 2 * margin
    recipe = {
        **dict(meta or {}),
        "stage": "degrade",
        "synthesis": "per draw: derive_rng(seed, 'degrade', item id, task, draw) (restorebench.data.synth)",
        "patch": patch,
        "patches_per_image": patches_per_image,
        "seed": seed,
        "margin": margin,
        "tasks": {
            t: {"label": int(labels[t]), "scale": scales[t], "spec": pipelines[t].to_spec()} for t in tasks
        },
    }
    jobs = ((str(i), src, patch, margin, align, patches_per_image, seed) for i, src in images)
    total = total if total is not None else (len(images) if hasattr(images, "__len__") else None)
    n_images = 0
    with StoreWriter(out_dir, {CLEAN: (side, side, 3)}, meta=recipe) as writer:
        done = parallel_map(_clean_windows, jobs, workers)
        if progress:
            done = logs.progress(done, total=total, desc="degrade", unit="images")
        for image_id, pos, windows in done:
            for k, ((y, x), window) in enumerate(zip(pos, windows, strict=True)):
                writer.add(id=f"{image_id}/{k}", image=image_id, y=y, x=x, **{CLEAN: window})
            n_images += 1
    return {"images": n_images, "patches": writer.n, "tasks": len(tasks), "path": str(out_dir),
            "bytes": writer.n * side * side * 3}  # fmt: skip


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


def degrade_imagenet(
    *,
    root: Path,
    tasks: dict,
    patch: int,
    patches_per_image: int,
    max_images: int = 0,
    margin: int = 24,
    seed: int = 0,
    workers: int = 0,
    where: str = "degrade.tasks",
) -> dict:
    """Write ImageNet's pretraining store, root/store/imagenet/train/ (clean windows; the degraded inputs
    are synthesised per draw), from the first `max_images` (0: all) training images of its manifest, read
    in place (a class tar's member by its offset, data.manifest.read_image_bytes). tasks: degrade task name
    -> spec; patch, margin: pixels. Returns the store's stats (images, patches, tasks, path, bytes)."""
    if not tasks:
        raise RestorebenchError(where, "empty", "list at least one task -> degradation pipeline")
    rows = read_manifest(root / "manifests" / "imagenet.parquet", dataset="imagenet",
                         columns=["pair_id", "gt_path", "offset", "bytes"], split="train")  # fmt: skip
    require_valid(root, "imagenet", "degrade")
    if max_images:
        rows = rows.head(max_images)
    raw = root / "raw" / "imagenet"
    # a stream, not a list; each source is what read_image_bytes takes (the same index validation reads)
    images = ((r.pair_id, (str(raw), r.gt_path, int(r.offset), int(r.bytes))) for r in rows.itertuples())
    try:
        return degrade_store(images, root / "store" / "imagenet" / "train", tasks=tasks, patch=patch,
                             patches_per_image=patches_per_image, seed=seed, workers=workers, margin=margin,
                             total=len(rows))  # fmt: skip
    except (ValueError, OSError) as err:
        raise RestorebenchError(raw, str(err), "run `restorebench validate --dataset imagenet`") from err


def describe_prepare(dataset: str, stats: dict) -> str:
    """One sentence: `prepare sidd: 12 training pairs -> 480 sub-images of 64x64 (step 48), 11.8 MB in ...`."""
    return (f"prepare {dataset}: {stats['images']} training pairs -> {stats['subimages']} sub-images of "
            f"{stats['size']}x{stats['size']} (step {stats['step']}), {stats['bytes'] / 1e6:.1f} MB "
            f"in {stats['path']}")  # fmt: skip


def describe_degrade(stats: dict) -> str:
    """One sentence: `degrade: 20 ImageNet images -> 40 clean patches (9.2 MB), 10 task(s) synthesised ...`."""
    return (f"degrade: {stats['images']} ImageNet images -> {stats['patches']} clean patches "
            f"({stats['bytes'] / 1e6:.1f} MB), {stats['tasks']} task(s) synthesised per draw, in {stats['path']}")
