"""A synthetic evaluated grid written by the real writers (evaluate.write_results, evaluate.save_crop), plus
dvclive-style curves: what aggregate and report read, without training anything."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from restorebench.evaluate import EvalItem, mean_gain, save_crop, write_results


def write_cell(root: Path, task: str, model: str, cell: str, per_image_psnr: np.ndarray, *, strategy: str,
               pretrain: str = "none", seed: int | None = None, ssim: float = 0.8,
               input_psnr: np.ndarray | None = None) -> None:  # fmt: skip
    """metrics/finetune/T/M/C.json, results/eval/T/M/C/{per_image.csv, provenance.json} under `root`.
    `input_psnr`: the degraded inputs' per-image PSNR (the floor; default 20 dB each)."""
    ids = [f"{i:04d}" for i in range(len(per_image_psnr))]
    floor = np.full(len(ids), 20.0) if input_psnr is None else np.asarray(input_psnr, np.float64)
    table = pd.DataFrame({"id": ids, "psnr": per_image_psnr, "ssim_matlab3d": ssim, "ssim_basicsr": ssim - 0.05,
                          "psnr_input": floor, "seconds": 0.01})  # fmt: skip
    summary = {"task": task, "psnr": float(np.mean(per_image_psnr)), "ssim": ssim, "ssim_matlab3d": ssim,
               "ssim_basicsr": ssim - 0.05, "gain": mean_gain(table), "images": len(ids), "images_per_s": 12.5,
               "protocol": {"data_range": 1.0, "quantised": False, "headline_ssim": "matlab3d"}}  # fmt: skip
    record = {"model": model, "strategy": strategy, "pretrain": pretrain, "cell": cell, "params": 1234,
              "init": "random(seed=0)", "precision": "fp32", "train_seconds": 3.5, "git_revision": "abc",
              "checkpoint_sha256": f"{hash((task, model, cell)) & 0xFFFF:x}"}  # fmt: skip
    if seed is not None:
        record["seed"] = seed
    write_results(table, summary, metrics_path=root / "metrics/finetune" / task / model / f"{cell}.json",
                  out_dir=root / "results/eval" / task / model / cell, record=record)  # fmt: skip


# The grid write_grid writes, as the CLI's -S overrides: `aggregate` takes exactly the params' grid.
GRID_OVERRIDES = ("models=[nafnet,swin_upernet]", "strategies=[full,frozen]", "pretrain_models.ipt=[]",
                  "pretrain_models.dcpt=[swin_upernet]", "pretrain_models.scratch=[swin_upernet]")  # fmt: skip


def write_grid(root: Path, *, images: int = 12, with_curves: bool = True) -> None:
    """Two tasks; identity, nafnet and swin_upernet cells (GRID_OVERRIDES' grid); crops and curves for each."""
    rng = np.random.default_rng(0)
    cells = [("identity", "none", "none", 0.0), ("nafnet", "full", "none", 3.0), ("nafnet", "frozen", "none", 1.0),
             ("swin_upernet", "full", "none", 2.0), ("swin_upernet", "frozen", "none", 0.5),
             ("swin_upernet", "dcpt-full", "dcpt", 2.5), ("swin_upernet", "scratch-full", "scratch", 1.5)]  # fmt: skip
    for task, base in (("denoise", 28.0), ("deblur", 22.0)):
        floor = base + rng.normal(0, 1.0, images)
        gt = (rng.random((48, 48, 3)) * 255).astype(np.uint8)  # the task's image, the same for every cell
        lq = np.clip(gt + rng.normal(0, 25, gt.shape), 0, 255).astype(np.uint8)
        for model, cell, pretrain, gain in cells:
            strategy = cell.rpartition("-")[2]
            scores = floor + gain + rng.normal(0, 0.1, images) if model != "identity" else floor
            write_cell(root, task, model, cell, scores, strategy=strategy, pretrain=pretrain, input_psnr=floor)
            out = lq / 255.0 if model == "identity" else np.clip(gt / 255.0 + rng.normal(0, 0.1 / (1 + gain), gt.shape), 0, 1)
            for image in ("0000", "0001", "0002"):
                save_crop(root / "results/eval" / task / model / cell / "crops" / f"{image}.png",
                          EvalItem(image, lq, gt), out, 48)  # fmt: skip
            if with_curves and model != "identity":
                write_curves(root / "runs/finetune" / task / model / cell, loss="psnr" if model == "nafnet" else "l1",
                             shift=gain, seed=int(rng.integers(1 << 30)))  # fmt: skip


def write_curves(run: Path, *, loss: str, steps: int = 40, shift: float = 0.0, seed: int = 0) -> None:
    """dvclive's files (plots/metrics/train/loss.tsv every step, val/psnr.tsv every 5) and the run's config.json
    loss kind; `shift` (dB) raises the run's curves, `seed` draws their noise."""
    rng = np.random.default_rng(seed)
    metrics = run / "dvclive" / "plots" / "metrics"
    (metrics / "train").mkdir(parents=True, exist_ok=True)
    (metrics / "val").mkdir(parents=True, exist_ok=True)
    step = np.arange(steps)
    value = -25 - shift - np.log1p(step) if loss == "psnr" else 0.05 / (1 + 0.1 * step) / (1 + shift / 10)
    value = value + rng.normal(0, 0.3 if loss == "psnr" else 0.003, steps)
    pd.DataFrame({"timestamp": 0, "step": step, "loss": value}).to_csv(metrics / "train/loss.tsv", sep="\t", index=False)
    val = step[::5]
    pd.DataFrame({"timestamp": 0, "step": val, "psnr": 25 + shift / 4 + np.log1p(val)}).to_csv(
        metrics / "val/psnr.tsv", sep="\t", index=False)
    (run / "config.json").write_text(f'{{"loss": "{loss}"}}')
