"""Collect every evaluated cell into results/table.csv and metrics/summary.json, with significance.

Inputs per cell (cell = a strategy, or {pretrain}-{strategy}, restorebench.config.cell_name; a seed suffix is
allowed when a grid repeats cells over seeds):
  metrics/finetune/{task}/{model}/{cell}.json        PSNR / SSIM / gain over the input (the DVC metric)
  results/eval/{task}/{model}/{cell}/per_image.csv   per-image scores (the bootstrap resamples these)
  results/eval/{task}/{model}/{cell}/provenance.json what ran: strategy, pretrain, seed, params, ..., and the
                                                     sha256 of the per_image.csv and metrics file written
                                                     with it (a set from two runs is refused)
  results/eval/{task}/{model}/{cell}/timing.json     images/s and training seconds (not hashed by DVC)

Outputs:
  results/table.csv     one row per (task, model, strategy, pretrain), tasks in params order, seeds pooled (mean,
                        sd over seeds), with the mean per-image PSNR difference to the identity floor and to the
                        task's best baseline cell, each with a paired bootstrap 95% interval and a verdict;
                        published rows (docs/ARCHITECTURE.md) follow with source "published" and are never mixed
                        into measured ones.
  metrics/summary.json  {task: {"floor_psnr", "cells", "best": {"model", "cell", "psnr", "ssim", "gain",
                        "gain_lo", "gain_hi"}}} (dB; summarize): a glance at each task. It is not a DVC metric
                        (restorebench.views.dvc_metrics): each cell's file already holds its PSNR, SSIM and gain
                        over the floor, one `dvc metrics show` row per cell, and nested keys would add columns
                        to every row.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from restorebench import io
from restorebench.config import PRETRAIN_METHODS, cell_name
from restorebench.errors import RestorebenchError

# evaluate.TIMING_FILE, named here too so this stage does not import torch (a test holds the two equal)
TIMING_FILE = "timing.json"

# Published (PSNR, SSIM) rows: (label, task) -> (model, variant it matches, PSNR, SSIM, source). A row whose
# model is in the grid is shown when the profile trains that variant for that task (NAFNet width32 rows
# beside width32 cells, width64 rows beside width64 ones); rows of models outside the grid (model None)
# are always shown, as references.
_NAF = "megvii-research/NAFNet README.md results table (Chen et al., ECCV 2022)"
_RST = "Restormer, Zamir et al., CVPR 2022, Table 6 (SIDD, real image denoising) / Table 2 (GoPro, motion deblurring)"
PUBLISHED: dict[tuple[str, str], tuple[str | None, str | None, float, float, str]] = {
    ("NAFNet width32", "denoise"): ("nafnet", "sidd-width32", 39.97, 0.960, _NAF),
    ("NAFNet width32", "deblur"): ("nafnet", "gopro-width32", 32.87, 0.961, _NAF),
    ("NAFNet width64", "denoise"): ("nafnet", "sidd-width64", 40.30, 0.961, _NAF),
    ("NAFNet width64", "deblur"): ("nafnet", "gopro-width64", 33.71, 0.967, _NAF),
    ("Restormer", "denoise"): ("restormer", "denoise", 40.02, 0.960, _RST),
    ("Restormer", "deblur"): ("restormer", "deblur", 32.92, 0.961, _RST),
    ("Uformer-B", "denoise"): (None, None, 39.89, 0.960, "Uformer, Wang et al., CVPR 2022, SIDD table"),
    ("Uformer-B", "deblur"): (None, None, 33.06, 0.967, "Uformer, Wang et al., CVPR 2022, GoPro table"),
    ("MPRNet", "denoise"): (None, None, 39.71, 0.958, "MPRNet, Zamir et al., CVPR 2021, SIDD table"),
    ("MPRNet", "deblur"): (None, None, 32.66, 0.959, "MPRNet, Zamir et al., CVPR 2021, GoPro table"),
}

# The restoration baselines of the study (NAFNet, Restormer): a task's best baseline is its best cell of these models
# trained from their usual init (pretrain "none"); every cell is compared with it.
BASELINE_MODELS = ("nafnet", "restormer")
METRIC_KEYS = ("psnr", "ssim_matlab3d", "ssim_basicsr")
BOOTSTRAP_SAMPLES = 5000
BOOTSTRAP_SEED = 0
# Strategies of cells that no training produced (pipeline.OFFICIAL, a released checkpoint scored as is; "none",
# the identity floor): one run holds all there is of them, no training noise to sample.
UNTRAINED = ("official", "none")
# A verdict is given only when the interval covers every source of noise in the difference: the images, and
# the training runs of each trained side (two or more seeds). One run of a trained cell says nothing about how
# far another seed would move it, so its interval (images only) is shown without a verdict.
VERDICTS = ("better", "worse", "not distinguishable")
ONE_SEED = "no verdict: one seed"

COLUMNS = [
    "source", "task", "model", "cell", "strategy", "pretrain", "seeds",
    "psnr", "psnr_sd", "ssim_matlab3d", "ssim_sd", "ssim_basicsr",
    "vs_identity", "vs_identity_lo", "vs_identity_hi", "vs_identity_verdict",
    "baseline", "vs_baseline", "vs_baseline_lo", "vs_baseline_hi", "vs_baseline_verdict",
    "vs_scratch", "vs_scratch_lo", "vs_scratch_hi", "vs_scratch_verdict",
    "images", "params", "train_seconds", "images_per_s", "init", "reference",
]  # fmt: skip


def paired_bootstrap(a: np.ndarray, b: np.ndarray, *, samples: int = BOOTSTRAP_SAMPLES, seed: int = BOOTSTRAP_SEED,
                     level: float = 0.95) -> tuple[float, float, float]:  # fmt: skip
    """Mean of a - b over paired items (images) and its percentile bootstrap interval at `level`.

    a, b: per-image scores (e.g. PSNR in dB) of the same images in the same order. Images are resampled
    with replacement `samples` times (numpy Generator seeded with `seed`, so the interval is reproducible).
    Returns (mean difference, lower, upper); NaNs when no finite pair is left.
    """
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    d = d[np.isfinite(d)]  # PSNR is inf on an exact match: such an image says nothing about a difference
    if d.size == 0:
        return (float("nan"),) * 3
    rng = np.random.default_rng(seed)
    means = np.empty(samples)
    chunk = max(1, 2_000_000 // d.size)  # resample in chunks: samples x images indices at once can be 100s of MB
    for start in range(0, samples, chunk):
        n = min(chunk, samples - start)
        means[start : start + n] = d[rng.integers(0, d.size, size=(n, d.size))].mean(axis=1)
    tail = (1.0 - level) / 2
    lo, hi = np.quantile(means, [tail, 1.0 - tail])
    return float(d.mean()), float(lo), float(hi)


def two_level_bootstrap(d: np.ndarray, *, samples: int = BOOTSTRAP_SAMPLES, seed: int = BOOTSTRAP_SEED,
                        level: float = 0.95) -> tuple[float, float, float]:  # fmt: skip
    """Mean of d and its two-level percentile bootstrap interval at `level`: seeds, then images.

    d: (seeds, images) paired differences (e.g. PSNR in dB of a cell's run minus its reference's, per image).
    Each of `samples` replicates draws `seeds` rows with replacement, then, within each drawn row, `images`
    images with replacement, and takes the mean of everything drawn (the hierarchical bootstrap of Saravanan
    et al. 2020, "Application of the hierarchical bootstrap to multi-level data in neuroscience"). So the
    interval covers training noise (which runs were drawn) as well as the choice of images. Draw order, per
    chunk of replicates: the seed indices (chunk x seeds), then the image indices (chunk x seeds x images), from
    a numpy Generator seeded with `seed`. An image with a non-finite difference in any row is dropped (PSNR is
    inf on an exact match). Returns (mean difference, lower, upper); NaNs when no image is left.
    """
    d = np.asarray(d, np.float64)
    if d.ndim != 2 or d.shape[0] == 0:
        raise ValueError(f"two_level_bootstrap: expected a (seeds, images) array, got shape {d.shape}")
    d = d[:, np.isfinite(d).all(axis=0)]
    k, n = d.shape
    if n == 0:
        return (float("nan"),) * 3
    rng = np.random.default_rng(seed)
    means = np.empty(samples)
    chunk = max(1, 2_000_000 // (k * n))  # as paired_bootstrap: bounded index arrays
    for start in range(0, samples, chunk):
        m = min(chunk, samples - start)
        runs = rng.integers(0, k, size=(m, k))
        images = rng.integers(0, n, size=(m, k, n))
        means[start : start + m] = d[runs[:, :, None], images].mean(axis=(1, 2))
    tail = (1.0 - level) / 2
    lo, hi = np.quantile(means, [tail, 1.0 - tail])
    return float(d.mean()), float(lo), float(hi)


def verdict(lo: float, hi: float, *, covers_training: bool) -> str:
    """What an interval says: better / worse when it excludes 0, else not distinguishable; ONE_SEED when it
    does not cover the training noise of a trained side (one run of it), '' when there is no interval."""
    if lo is None or hi is None or not (np.isfinite(lo) and np.isfinite(hi)):
        return ""
    if not covers_training:
        return ONE_SEED
    return "better" if lo > 0 else "worse" if hi < 0 else "not distinguishable"


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None


def check_one_run(metrics_path: Path, folder: Path, prov: dict) -> None:
    """Refuse a cell whose files come from different evaluate runs (one killed between its writes): the
    provenance.json of a run records the sha256 of the per_image.csv and metrics file it wrote with it
    (evaluate.stage_results). A provenance without that record (an older layout) is taken as it is."""
    outputs = prov.get("outputs")
    if not isinstance(outputs, dict):
        return
    per_image = folder / "per_image.csv"
    expected = {per_image: outputs.get("per_image.csv"), metrics_path: (outputs.get("metrics") or {}).get("sha256")}
    stale = [str(p) for p, digest in expected.items() if digest and (not p.exists() or io.sha256_file(p) != digest)]
    if stale:
        raise RestorebenchError(
            ", ".join(stale), f"not from the evaluate run that wrote {folder / 'provenance.json'} (a run stopped "
            "between its writes)", f"rerun `restorebench evaluate` for {'/'.join(folder.parts[-3:])}")


def _split_cell(cell: str) -> tuple[str, str]:
    """(strategy, pretrain) from a cell name without provenance: 'dcpt-full' -> ('full', 'dcpt')."""
    prefix, _, rest = cell.partition("-")
    return (rest, prefix) if rest and prefix in PRETRAIN_METHODS else (cell, "none")


def find_cells(metrics_dir: Path) -> list[tuple[str, str, str]]:
    """(task, model, cell) of every metrics/finetune/{task}/{model}/{cell}.json present."""
    return [(p.parts[-3], p.parts[-2], p.stem) for p in sorted((metrics_dir / "finetune").glob("*/*/*.json"))]


def read_cell(metrics_dir: Path, evals_dir: Path, task: str, model: str, cell: str) -> dict:
    """One evaluated cell: its metrics, what its provenance says, and its per-image PSNR (a Series by image id)."""
    path = metrics_dir / "finetune" / task / model / f"{cell}.json"
    if not path.exists():
        raise ValueError(f"{path}: missing; run `restorebench evaluate` for {task}/{model}/{cell}")
    data = _read_json(path)
    missing = [k for k in METRIC_KEYS if k not in data]
    if missing:
        raise ValueError(f"{path}: missing key(s) {missing}")
    folder = evals_dir / task / model / cell
    prov = _read_json(folder / "provenance.json") if (folder / "provenance.json").exists() else {}
    strategy, pretrain = _split_cell(cell)
    strategy, pretrain = prov.get("strategy", strategy), prov.get("pretrain", pretrain)
    seed = prov.get("seed", data.get("seed"))
    if cell_name(strategy, pretrain) != cell and seed is None:  # a seed suffix is the one allowed extra
        raise ValueError(f"{folder / 'provenance.json'}: says strategy {strategy!r}, pretrain {pretrain!r}; "
                         f"the file name says {cell!r}")
    per_image = folder / "per_image.csv"
    check_one_run(path, folder, prov)
    scores = pd.read_csv(per_image, dtype={"id": str}).set_index("id")["psnr"] if per_image.exists() else None
    timing = prov.get("timing") or (_read_json(folder / TIMING_FILE) if (folder / TIMING_FILE).exists() else {})
    return {
        "task": task, "model": model, "file_cell": cell, "strategy": strategy, "pretrain": pretrain, "seed": seed,
        **{k: float(data[k]) for k in METRIC_KEYS},
        "images": prov.get("images"), "params": prov.get("params"), "init": prov.get("init"),
        "train_seconds": timing.get("train_seconds"), "images_per_s": timing.get("images_per_s"),
        "per_image": scores,
    }  # fmt: skip


def _pool(group: list[dict]) -> dict:
    """One row for a cell's seeds: means, the spread (sample sd, NaN for one seed), and `runs` (seed -> per-image
    PSNR Series, None when a run has no per_image.csv) for the comparisons."""
    first = group[0]
    psnr = np.array([r["psnr"] for r in group])
    ssim = np.array([r["ssim_matlab3d"] for r in group])
    complete = all(r["per_image"] is not None for r in group)
    runs = {r["seed"]: r["per_image"] for r in group} if complete else None
    sd = (lambda v: float(v.std(ddof=1)) if v.size > 1 else float("nan"))  # noqa: E731
    return {
        "source": "measured", "task": first["task"], "model": first["model"],
        "cell": cell_name(first["strategy"], first["pretrain"]), "strategy": first["strategy"],
        "pretrain": first["pretrain"], "seeds": len(group),
        "psnr": float(psnr.mean()), "psnr_sd": sd(psnr), "ssim_matlab3d": float(ssim.mean()), "ssim_sd": sd(ssim),
        "ssim_basicsr": float(np.mean([r["ssim_basicsr"] for r in group])),
        "images": first["images"], "params": first["params"], "init": first["init"],
        "train_seconds": _mean_or_none(r["train_seconds"] for r in group),
        "images_per_s": _mean_or_none(r["images_per_s"] for r in group),
        "runs": runs, "trained": first["model"] != "identity" and first["strategy"] not in UNTRAINED,
    }  # fmt: skip


def _mean_or_none(values: Iterable) -> float | None:
    vals = [float(v) for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def differences(row: dict, ref: dict) -> tuple[np.ndarray, bool]:
    """(d, covers_training): d the (units, images) PSNR differences row - ref over the images every run scored,
    one unit per training run; covers_training whether the units sample the training noise of each trained
    side (it has two or more runs in d). Runs pair by seed when both sides have several (the grid repeats every
    training cell with the same seeds); a side with one run is subtracted from, or subtracts, each run of the
    other."""
    ids = pd.concat([*row["runs"].values(), *ref["runs"].values()], axis=1, join="inner").index
    a = {s: v.loc[ids].to_numpy(np.float64) for s, v in row["runs"].items()}
    b = {s: v.loc[ids].to_numpy(np.float64) for s, v in ref["runs"].items()}
    common = [s for s in a if s in b]
    if len(a) > 1 and len(b) > 1 and len(common) > 1:
        return np.stack([a[s] - b[s] for s in common]), True
    if len(a) > 1 and len(b) == 1:
        (only,) = b.values()
        return np.stack([v - only for v in a.values()]), not ref["trained"]
    if len(b) > 1 and len(a) == 1:
        (only,) = a.values()
        return np.stack([only - v for v in b.values()]), not row["trained"]
    # one run each (or several whose seeds do not pair): the runs' means, images only
    mean_a, mean_b = np.mean(list(a.values()), axis=0), np.mean(list(b.values()), axis=0)
    one_run_each = len(a) == 1 and len(b) == 1
    return (mean_a - mean_b)[None, :], one_run_each and not row["trained"] and not ref["trained"]


def _compare(row: dict, ref: dict | None, prefix: str) -> dict:
    """{prefix: mean PSNR difference row - ref, prefix_lo, prefix_hi, prefix_verdict}, paired over the images
    both scored: an image-level bootstrap for one unit, else the two-level one (seeds, then images)."""
    if ref is None or row["runs"] is None or ref["runs"] is None:
        return {}
    d, covers = differences(row, ref)
    mean, lo, hi = paired_bootstrap(d[0], np.zeros_like(d[0])) if len(d) == 1 else two_level_bootstrap(d)
    return {prefix: mean, f"{prefix}_lo": lo, f"{prefix}_hi": hi,
            f"{prefix}_verdict": verdict(lo, hi, covers_training=covers)}  # fmt: skip


def significance(rows: list[dict], baselines: tuple[str, ...] = BASELINE_MODELS) -> None:
    """Fill vs_identity* and baseline / vs_baseline* into each pooled measured row (in place), and vs_scratch*
    into a cell from the profile's checkpoint (pretrain none) whose scratch control (same model and strategy,
    seeded random init) was measured: the study's question, the checkpoint against no checkpoint."""
    for task in sorted({r["task"] for r in rows}):
        ours = [r for r in rows if r["task"] == task]
        floor = next((r for r in ours if r["model"] == "identity"), None)
        controls = {(r["model"], r["strategy"]): r for r in ours if r["pretrain"] == "scratch"}
        candidates = [r for r in ours if r["model"] in baselines and r["pretrain"] == "none"]
        best = max(candidates, key=lambda r: r["psnr"], default=None)
        for r in ours:
            if r["model"] == "identity":
                continue
            r.update(_compare(r, floor, "vs_identity"))
            if r["pretrain"] == "none" and (r["model"], r["strategy"]) in controls:
                r.update(_compare(r, controls[(r["model"], r["strategy"])], "vs_scratch"))
            if best is not None:
                r["baseline"] = f"{best['model']}/{best['cell']}"
                r.update(_compare(r, best, "vs_baseline"))
                if r is best:
                    r["vs_baseline_verdict"] = "baseline"


def published_rows(tasks: list[str], variants: dict[str, dict[str, str]] | None = None) -> list[dict]:
    """The published rows for `tasks`. With `variants` (model -> task -> variant, the profile's), a model with
    a published row for the variant it trains shows that row only (NAFNet width32 rows beside width32 cells);
    a model training a variant with none (the demo's tiny ones) keeps all its rows, as references, as do the
    models outside the grid."""
    rows = []
    for (label, task), (model, variant, p, s, ref) in PUBLISHED.items():
        if task not in tasks:
            continue
        if variants is not None and model is not None:
            trained = variants.get(model, {}).get(task)
            published = {v for (m, v, *_), (_, t) in zip(PUBLISHED.values(), PUBLISHED, strict=True)
                         if m == model and t == task}
            if trained in published and trained != variant:
                continue
        rows.append({"source": "published", "task": task, "model": label, "cell": "paper",
                     "strategy": "paper", "pretrain": "paper", "psnr": p, "ssim_matlab3d": s, "reference": ref})
    return rows


def collect(metrics_dir: Path, evals_dir: Path, cells: list[tuple[str, str, str]] | None = None) -> list[dict]:
    """Every cell read (`cells`: (task, model, cell) to take, e.g. exactly the current grid; None: every
    metrics file present)."""
    cells = find_cells(metrics_dir) if cells is None else list(cells)
    if not cells:
        raise ValueError(f"{metrics_dir}/finetune: no metrics found; run the evaluate stage first")
    return [read_cell(metrics_dir, evals_dir, *c) for c in cells]


def build_table(metrics_dir: Path, tasks: list[str], *, evals_dir: Path = Path("results/eval"),
                cells: list[tuple[str, str, str]] | None = None,
                variants: dict[str, dict[str, str]] | None = None) -> tuple[pd.DataFrame, dict]:  # fmt: skip
    """(results table, summary.json content) from the evaluated cells (see the module docstring)."""
    read = collect(metrics_dir, evals_dir, cells)
    groups: dict[tuple, list[dict]] = {}
    for r in read:
        groups.setdefault((r["task"], r["model"], r["strategy"], r["pretrain"]), []).append(r)
    pooled = [_pool(g) for g in groups.values()]
    significance(pooled)
    table = pd.DataFrame(pooled + published_rows(tasks, variants), columns=COLUMNS)
    order = {t: i for i, t in enumerate(dict.fromkeys([*tasks, *sorted(set(table["task"]))]))}  # params order
    table["_o"] = table["source"].map({"measured": 0, "published": 1})
    table["_t"] = table["task"].map(order)
    table = table.sort_values(["_o", "_t", "model", "pretrain", "strategy"], kind="stable").drop(columns=["_o", "_t"])
    for col in ("seeds", "images", "params"):
        table[col] = table[col].astype("Int64")  # integers print as integers, blanks stay blank
    table = table.reset_index(drop=True)
    return table, summarize(table)


def summarize(table: pd.DataFrame) -> dict:
    """summary.json: per task, the floor's PSNR, how many cells were measured and the best one (highest mean
    PSNR, seeds pooled) with its gain over the floor and that gain's interval, in dB. A handful of keys: the
    per-cell numbers live in each cell's metrics file, one `dvc metrics show` row each."""
    out: dict = {}
    measured = table[table["source"] == "measured"]
    for task, rows in measured.groupby("task", sort=False):
        floor = rows[rows["model"] == "identity"]
        cells = rows[rows["model"] != "identity"]
        entry: dict = {"floor_psnr": _num(floor["psnr"].iloc[0]) if len(floor) else None, "cells": len(cells)}
        if len(cells):
            best = cells.loc[cells["psnr"].idxmax()]
            entry["best"] = {"model": best["model"], "cell": best["cell"], "psnr": _num(best["psnr"]),
                             "ssim": _num(best["ssim_matlab3d"]), "gain": _num(best["vs_identity"]),
                             "gain_lo": _num(best["vs_identity_lo"]), "gain_hi": _num(best["vs_identity_hi"])}  # fmt: skip
        out[str(task)] = entry
    return out


def _num(value: object) -> float | None:
    """A table value for JSON: 4 decimals, None for a blank (NaN)."""
    return None if pd.isna(value) else round(float(value), 4)


def write_outputs(table: pd.DataFrame, summary: dict, table_path: Path, summary_path: Path) -> None:
    with io.atomic_path(table_path, suffix=".csv") as tmp:
        table.to_csv(tmp, index=False, float_format="%.8g")
    io.write_json(summary_path, summary)
