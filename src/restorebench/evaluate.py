"""Evaluation by the published protocols (docs/ARCHITECTURE.md, "Protocol facts").

denoise (SIDD): the validation blocks from ValidationNoisyBlocksSrgb.mat / ValidationGtBlocksSrgb.mat
  (N x B x h x w x 3 uint8); input uint8/255; output clamped to [0, 1], not quantised; data_range 1;
  SSIM matlab3d is the headline (basicsr reported too); score = mean over blocks.
deblur (GoPro): the test pairs, each 1280x720 image whole (the model pads to its multiple and crops back),
  as NAFNet's and Restormer's test scripts run them; tiles only where the whole image runs out of memory
  (infer.ProtocolRestorer), and the summary's `tiling` says whether that happened; output clamped and
  rounded to uint8; data_range 255; PSNR on RGB; SSIM matlab3d (and basicsr).
"""

from __future__ import annotations

import hashlib
import json
import platform
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from restorebench import io
from restorebench.config import TASK_DATASET
from restorebench.data.validate import require_valid
from restorebench.images import to_uint8
from restorebench.lock import lock_sha256
from restorebench.logs import progress
from restorebench.metrics import psnr, ssim_conventions

SIDD_NOISY = "ValidationNoisyBlocksSrgb"
SIDD_GT = "ValidationGtBlocksSrgb"


@dataclass(frozen=True)
class EvalItem:
    id: str
    lq: np.ndarray  # HxWx3 uint8
    gt: np.ndarray  # HxWx3 uint8


@dataclass(frozen=True)
class Protocol:
    task: str
    data_range: float
    quantise: bool  # round the output to uint8 before scoring (GoPro) or not (SIDD)


PROTOCOLS = {
    "denoise": Protocol("denoise", data_range=1.0, quantise=False),
    "deblur": Protocol("deblur", data_range=255.0, quantise=True),
}


def _load_mat(path: Path, key: str) -> np.ndarray:
    from restorebench.data.manifest import load_mat_blocks

    if not path.exists():
        raise FileNotFoundError(f"{path}: SIDD validation file missing (expected variable {key!r})")
    arr = load_mat_blocks(path)  # a cut or corrupt file: a RestorebenchError naming it
    if arr.ndim != 5 or arr.shape[-1] != 3 or arr.dtype != np.uint8:
        raise ValueError(f"{path}:{key}: expected N x B x h x w x 3 uint8, got {arr.shape} {arr.dtype}")
    return arr


def sidd_blocks(raw_dir: Path) -> Iterator[EvalItem]:
    """The SIDD validation blocks, ids 'IIII_BB' (image, block), in file order."""
    noisy = _load_mat(raw_dir / f"{SIDD_NOISY}.mat", SIDD_NOISY)
    gt = _load_mat(raw_dir / f"{SIDD_GT}.mat", SIDD_GT)
    if noisy.shape != gt.shape:
        raise ValueError(f"{raw_dir}: noisy blocks {noisy.shape} and GT blocks {gt.shape} differ in shape")
    for i in range(noisy.shape[0]):
        for b in range(noisy.shape[1]):
            yield EvalItem(f"{i:04d}_{b:02d}", noisy[i, b], gt[i, b])


def gopro_test_pairs(raw_dir: Path, manifest: pd.DataFrame) -> Iterator[EvalItem]:
    """The GoPro test pairs listed in the manifest (split 'test'), decoded whole."""
    rows = manifest[manifest["split"] == "test"].sort_values("pair_id")
    for row in rows.itertuples():
        lq = np.asarray(Image.open(raw_dir / row.lq_path).convert("RGB"))
        gt = np.asarray(Image.open(raw_dir / row.gt_path).convert("RGB"))
        yield EvalItem(str(row.pair_id), lq, gt)


def eval_items(task: str, data_root: Path) -> Iterator[EvalItem]:
    dataset = TASK_DATASET[task]
    require_valid(data_root, dataset, "evaluate")  # never score on data that failed validation
    raw = data_root / "raw" / dataset
    if task == "denoise":
        return sidd_blocks(raw)
    manifest = pd.read_parquet(data_root / "manifests" / f"{dataset}.parquet")
    return gopro_test_pairs(raw, manifest)


def score(output: np.ndarray, item: EvalItem, protocol: Protocol) -> dict[str, float]:
    """output: HxWx3 float in [0, 1] (already clamped). Returns PSNR and SSIM in both conventions."""
    if protocol.quantise:
        pred = to_uint8(output)
        target = item.gt
    else:
        pred = output.astype(np.float64)
        target = item.gt.astype(np.float64) / 255.0
    r = protocol.data_range
    both = ssim_conventions(pred, target, data_range=r)  # one filtering pass for both conventions
    return {"psnr": psnr(pred, target, data_range=r), "ssim_matlab3d": both["matlab3d"], "ssim_basicsr": both["basicsr"],
            "psnr_input": input_psnr(item, protocol)}  # fmt: skip


def input_psnr(item: EvalItem, protocol: Protocol) -> float:
    """PSNR (dB) of the degraded input itself by the task's protocol: what the identity floor scores on this
    image, so a cell's gain over the floor is paired image by image without reading the floor's files."""
    if protocol.quantise:
        return psnr(item.lq, item.gt, data_range=protocol.data_range)
    return psnr(item.lq.astype(np.float64) / 255.0, item.gt.astype(np.float64) / 255.0, data_range=protocol.data_range)


def mean_gain(table: pd.DataFrame) -> float:
    """Mean per-image PSNR gain (dB) of the output over the degraded input (`psnr` - `psnr_input`), over the
    images where both are finite (PSNR is inf on an exact match); NaN when none is."""
    d = (table["psnr"] - table["psnr_input"]).to_numpy(np.float64)
    d = d[np.isfinite(d)]
    return float(d.mean()) if d.size else float("nan")


Restorer = Callable[[torch.Tensor], torch.Tensor]


def identity(x: torch.Tensor) -> torch.Tensor:
    """The floor every model must beat: returns the degraded input."""
    return x


def evaluate(
    restorer: Restorer,
    task: str,
    items: Iterator[EvalItem],
    *,
    max_images: int = 0,
    crops_dir: Path | None = None,
    crops: int = 3,
    crop_size: int = 96,
) -> tuple[pd.DataFrame, dict]:
    """Run `restorer` ((1,3,H,W) float in [0,1] -> same) over `items`; per-image rows and the summary."""
    protocol = PROTOCOLS[task]
    rows = []
    start = time.perf_counter()
    for n, item in enumerate(progress(items, total=max_images or None, desc=f"evaluate {task}", unit="images")):
        if max_images and n >= max_images:
            break
        t0 = time.perf_counter()
        x = torch.from_numpy(np.array(item.lq)).permute(2, 0, 1)[None].float().div(255.0)
        with torch.inference_mode():
            y = restorer(x).clamp(0, 1)
        out = y[0].permute(1, 2, 0).double().cpu().numpy()
        seconds = time.perf_counter() - t0
        rows.append({"id": item.id, **score(out, item, protocol), "seconds": seconds})
        if crops_dir is not None and n < crops:
            save_crop(crops_dir / f"{item.id}.png", item, out, crop_size)
    if not rows:
        raise ValueError(f"{task}: the evaluation set is empty")
    elapsed = time.perf_counter() - start
    table = pd.DataFrame(rows)
    summary = {
        "task": task,
        "psnr": float(table["psnr"].mean()),
        "ssim": float(table["ssim_matlab3d"].mean()),
        "ssim_matlab3d": float(table["ssim_matlab3d"].mean()),
        "ssim_basicsr": float(table["ssim_basicsr"].mean()),
        "gain": mean_gain(table),
        "images": len(table),
        "images_per_s": len(table) / elapsed,
        "protocol": {"data_range": protocol.data_range, "quantised": protocol.quantise, "headline_ssim": "matlab3d"},
        # whole images unless memory forced tiles (a restorer without a record: whole images, e.g. identity)
        "tiling": restorer.record() if hasattr(restorer, "record") else {"used": False, "tiled_images": 0},
    }
    return table, summary


def save_crop(path: Path, item: EvalItem, output: np.ndarray, size: int) -> None:
    """Input | output | ground truth, a centre crop side by side, as one PNG."""
    h, w = item.gt.shape[:2]
    s = min(size, h, w)
    y0, x0 = (h - s) // 2, (w - s) // 2
    out8 = to_uint8(output)
    strip = np.concatenate([a[y0 : y0 + s, x0 : x0 + s] for a in (item.lq, out8, item.gt)], axis=1)
    with io.atomic_path(path, suffix=".png") as tmp:
        Image.fromarray(strip).save(tmp, format="PNG")


# What metrics/finetune/{task}/{model}/{cell}.json holds, and nothing else: the numbers `dvc metrics diff`
# compares, and one row of `dvc metrics show` (four short keys keep the row within 120 columns; "ssim" would
# repeat ssim_matlab3d, the headline). `gain` is the mean per-image PSNR over the degraded input's, in dB: the
# cell's gain over the identity floor on the same images (0 for the floor itself). Strings, counts and hashes go to provenance.json beside per_image.csv (not a metric); timings,
# which differ from run to run, go to timing.json there (git ignores it; DVC caches it with the folder, so a
# pull brings it back), so the same evaluation writes the same bytes to the metrics file and per_image.csv.
METRIC_KEYS = ("psnr", "ssim_matlab3d", "ssim_basicsr", "gain")
TIMING_KEYS = ("images_per_s", "train_seconds")
TIMING_FILE = "timing.json"


def stage_results(table: pd.DataFrame, summary: dict, *, folder: Path, metrics_path: Path,
                  record: dict) -> tuple[dict, bytes]:  # fmt: skip
    """Write per_image.csv, provenance.json and timing.json into `folder` (a staging folder: nothing here is
    atomic) and return (provenance, the metrics file's bytes). provenance["outputs"] records the sha256 of
    per_image.csv and of those metrics bytes: the set's run id, which aggregate checks, so files of two
    evaluate runs are never read as one."""
    (folder / "crops").mkdir(parents=True, exist_ok=True)  # declared by both orchestrators, even with no crops
    scores = table.drop(columns=["seconds"], errors="ignore")
    scores.to_csv(folder / "per_image.csv", index=False, float_format="%.6f")
    # + 0.0: a rounding of -4e-8 (the floor's gain through float32) is written 0.0, not -0.0
    metrics = (json.dumps({k: round(float(summary[k]), 6) + 0.0 for k in METRIC_KEYS}, indent=2, sort_keys=True)
               + "\n").encode()  # fmt: skip
    rest = {**{k: v for k, v in summary.items() if k not in METRIC_KEYS and k != "ssim"}, **record}
    prov = {k: v for k, v in rest.items() if k not in TIMING_KEYS}
    prov["outputs"] = {"per_image.csv": io.sha256_file(folder / "per_image.csv"),
                       "metrics": {"path": metrics_path.as_posix(), "sha256": hashlib.sha256(metrics).hexdigest()}}
    timing = {k: rest[k] for k in TIMING_KEYS if rest.get(k) is not None}
    if "seconds" in table:
        timing["seconds_per_image"] = dict(zip(table["id"].astype(str), table["seconds"].astype(float), strict=True))
    (folder / "provenance.json").write_text(json.dumps(prov, indent=2, sort_keys=True, default=str) + "\n")
    (folder / TIMING_FILE).write_text(json.dumps(timing, indent=2, sort_keys=True) + "\n")
    return prov, metrics


def write_results(table: pd.DataFrame, summary: dict, *, metrics_path: Path, out_dir: Path, record: dict) -> dict:
    """Write one evaluated cell: out_dir/ (per_image.csv, provenance.json, timing.json, crops/) staged and
    published in one rename (io.atomic_dir), then metrics_path (PSNR/SSIM only, 6 decimals). A kill between
    the two leaves a metrics file whose hash provenance.json does not record: aggregate refuses that set.
    Returns the provenance written."""
    with io.atomic_dir(out_dir) as stage:
        prov, metrics = stage_results(table, summary, folder=stage, metrics_path=metrics_path, record=record)
    io.write_bytes(metrics_path, metrics)
    return prov


def remove_stale_staging(out_dir: Path) -> None:
    """Remove the staging folders of killed evaluate runs of this cell (.{cell}.*.tmp beside it). Run before
    evaluating: the cell's own staging, and only the evaluate of this cell writes there."""
    for stale in out_dir.parent.glob(f".{out_dir.name}.*.tmp") if out_dir.parent.is_dir() else []:
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)


def git_revision(root: Path = Path(".")) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True)
        return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def provenance(*, params_hash: str, data_files: list[Path], checkpoint: Path | None) -> dict:
    import numpy
    import scipy
    import skimage

    return {
        "params_hash": params_hash,
        "git_revision": git_revision(),
        "data_sha256": {str(p): io.sha256_file(p) for p in data_files if p.exists()},
        "checkpoint_sha256": io.sha256_file(checkpoint) if checkpoint is not None else None,
        "lock_sha256": lock_sha256(),  # requirements.lock: the exact environment (None outside a checkout)
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "numpy": numpy.__version__,
            "scipy": scipy.__version__,
            "scikit-image": skimage.__version__,
        },
    }


def evaluate_cell(
    *,
    task: str,
    model: str,
    strategy: str,
    pretrain: str,
    cell: str,
    profile: str,
    params_hash: str,
    data_root: Path,
    build: Callable[[], torch.nn.Module] | None,
    variant: str | None,
    rerun: str,
    official: str | None = None,
    max_images: int = 0,
    crops: int = 3,
    crop_size: int = 96,
    tile: int | None = None,
    fallback_tile: int | None = 512,
    overlap: int = 32,
    batch: int = 4,
    autocast: bool | str | None = None,
    tf32: bool = False,
) -> tuple[dict, dict, Path]:
    """The `evaluate` stage for one cell: load runs/finetune/{task}/{model}/{cell}/model.safetensors into
    `build()` (None: the identity floor), run the task's protocol over the evaluation set, and write
    results/eval/{task}/{model}/{cell}/ (per_image.csv, provenance.json, crops), metrics/finetune/{task}/{model}/
    {cell}.json (PSNR/SSIM only: write_results) and the run folder's model card.
    Whole images; tiles (fallback_tile, overlap in pixels, batch tiles per pass) only where an image runs out
    of memory, or every image with `tile` (infer.ProtocolRestorer, recorded); autocast, tf32: precision
    (restorebench.infer). `rerun`: the command that trains the cell, for messages. `official`: the released
    checkpoint `build()` loaded (official_model), scored as is: no run folder, no model card.
    Returns (summary, provenance, metrics path)."""
    from restorebench.errors import RestorebenchError
    from restorebench.infer import cell_restorer, load_weights

    checkpoint = None
    if build is None:
        restorer = identity
        extra: dict = {"params": 0, "init": "none", "pretrain": "none", "precision": "fp32"}  # the input as is
    elif official is not None:
        checkpoint = Path(official)
        net = build()
        restorer, prec = cell_restorer(net, tile=tile, overlap=overlap, batch=batch, autocast=autocast, tf32=tf32,
                                       fallback_tile=fallback_tile)  # fmt: skip
        extra = {"params": sum(p.numel() for p in net.parameters()), "precision": prec,
                 "init": f"official:{official}", "pretrain": "none"}  # fmt: skip
    else:
        checkpoint = Path("runs/finetune") / task / model / cell / "model.safetensors"
        net = build()
        load_weights(net, checkpoint, model=model, variant=str(variant), profile=profile, rerun=rerun)
        restorer, prec = cell_restorer(net, tile=tile, overlap=overlap, batch=batch, autocast=autocast, tf32=tf32,
                                       fallback_tile=fallback_tile)  # fmt: skip
        meta_path = checkpoint.parent / "train.json"
        meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
        extra = {"params": sum(p.numel() for p in net.parameters()), "precision": prec}
        extra.update({k: meta[k] for k in ("init", "pretrain", "train_seconds", "seed") if k in meta})
    out_dir = Path("results/eval") / task / model / cell
    dest = Path("metrics/finetune") / task / model / f"{cell}.json"
    remove_stale_staging(out_dir)
    # every file of the cell's folder is staged and published in one rename, then the metrics file; a
    # read-only or full results/metrics folder is one line naming it (io.write_failure)
    with io.refused_writes(out_dir.parent, "the evaluation results", scope="results"), io.atomic_dir(out_dir) as stage:
        try:
            table, summary = evaluate(restorer, task, eval_items(task, data_root), max_images=max_images,
                                      crops_dir=stage / "crops", crops=crops, crop_size=crop_size)  # fmt: skip
        except (FileNotFoundError, KeyError, ValueError) as err:
            if isinstance(err, RestorebenchError):
                raise
            raise RestorebenchError(f"evaluate {task}/{model}/{cell}", str(err).strip("'\""),
                                    f"run `restorebench validate --dataset {TASK_DATASET[task]}`") from err
        record = {**extra, "model": model, "strategy": strategy, "pretrain": pretrain, "cell": cell,
                  "profile": profile}  # fmt: skip
        record.update(provenance(params_hash=params_hash,
                                 data_files=[data_root / "manifests" / f"{TASK_DATASET[task]}.parquet"],
                                 checkpoint=checkpoint))  # fmt: skip
        prov, metrics = stage_results(table, summary, folder=stage, metrics_path=dest, record=record)
    with io.refused_writes(dest.parent, f"the metrics file {dest.name}", scope="metrics"):
        io.write_bytes(dest, metrics)
    if checkpoint is not None and official is None:
        from restorebench.card import write_model_card

        with io.refused_writes(checkpoint.parent, "the model card README.md", scope="runs"):
            write_model_card(checkpoint.parent, {k: summary[k] for k in METRIC_KEYS}, prov)
    return summary, prov, dest


def official_model(model: str, variant: str, path: str | None, *, where: str) -> torch.nn.Module:
    """`model` at `variant` with the released checkpoint `path` (params key `where`) loaded strictly: the
    `official` cell. A missing key, a missing file or weights that do not fit fail in one line."""
    from restorebench.errors import RestorebenchError
    from restorebench.models import build_model

    if not path:
        raise RestorebenchError(where, "no released checkpoint named; the cell `official` needs one",
                                "name the release file there (see params.yaml)")  # fmt: skip
    if not Path(path).is_file():
        raise RestorebenchError(where, f"{path} not found", "download the release file (see params.yaml)")
    try:
        return build_model(model, variant=variant, pretrained=path)
    except RestorebenchError:
        raise
    except (RuntimeError, ValueError, KeyError) as err:
        raise RestorebenchError(where, f"{path} does not load into {model} variant {variant}: {str(err).splitlines()[0]}") from None
