"""The `degrade` stage: ImageNet's pretraining store, data/store/imagenet/train/ (IPT's and DCPT's pretraining
set). It stores clean windows of the training images, each task's degradation spec in meta.json; a task's
degraded input is synthesised when a sample is drawn (restorebench.data.synth), never stored.

This module reads manifests and writes stores, so it sits in the data layer (tests/test_imports.py's LAYERS),
above the degradations it records, which the data readers import.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from restorebench import logs
from restorebench.data.manifest import read_image_bytes, read_manifest
from restorebench.data.parallel import parallel_map
from restorebench.data.store import StoreWriter, decode_rgb, read_rgb
from restorebench.data.synth import CLEAN
from restorebench.data.validate import require_valid
from restorebench.degrade.chain import build_pipeline
from restorebench.degrade.rng import derive_rng
from restorebench.errors import RestorebenchError


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


def describe_degrade(stats: dict) -> str:
    """One sentence: `degrade: 20 ImageNet images -> 40 clean patches (9.2 MB), 10 task(s) synthesised ...`."""
    return (f"degrade: {stats['images']} ImageNet images -> {stats['patches']} clean patches "
            f"({stats['bytes'] / 1e6:.1f} MB), {stats['tasks']} task(s) synthesised per draw, in {stats['path']}")
