"""Collect every metrics JSON into results/table.csv and the nested metrics/summary.json.

Measured rows come from metrics/finetune/{task}/{model}/{cell}.json, a cell being a strategy or
{pretrain}-{strategy} (restorebench.config.cell_name). Published numbers (DESIGN.md)
are separate rows with source "published"; they are never mixed into measured cells, and they stay out
of summary.json so `dvc metrics diff` only ever shows what this pipeline measured.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from restorebench import io
from restorebench.config import cell_name

# (model, task) -> (PSNR, SSIM), from the papers, as listed in DESIGN.md.
PUBLISHED: dict[tuple[str, str], tuple[float, float]] = {
    ("NAFNet width32", "denoise"): (39.97, 0.960),
    ("NAFNet width32", "deblur"): (32.87, 0.961),
    ("NAFNet width64", "denoise"): (40.30, 0.961),
    ("NAFNet width64", "deblur"): (33.71, 0.967),
    ("Restormer", "denoise"): (40.02, 0.960),
    ("Restormer", "deblur"): (32.92, 0.961),
    ("Uformer-B", "denoise"): (39.89, 0.960),
    ("Uformer-B", "deblur"): (33.06, 0.967),
    ("MPRNet", "denoise"): (39.71, 0.958),
    ("MPRNet", "deblur"): (32.66, 0.959),
}

COLUMNS = [
    "source",
    "task",
    "model",
    "strategy",
    "pretrain",
    "psnr",
    "ssim_matlab3d",
    "ssim_basicsr",
    "images",
    "params",
    "train_seconds",
    "images_per_s",
    "init",
]


def read_metrics(metrics_dir: Path) -> list[dict]:
    """Every metrics/finetune/{task}/{model}/{cell}.json, with its path's parts filled in."""
    rows = []
    for path in sorted((metrics_dir / "finetune").glob("*/*/*.json")):
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err})") from None
        task, model, cell = path.parts[-3], path.parts[-2], path.stem
        pretrain = data.get("pretrain", "none")
        strategy = data.get("strategy", cell)
        if cell_name(strategy, pretrain) != cell:
            raise ValueError(f"{path}: says strategy {strategy!r}, pretrain {pretrain!r}; its name says {cell!r}")
        for key in ("psnr", "ssim_matlab3d", "ssim_basicsr"):
            if key not in data:
                raise ValueError(f"{path}: missing key {key!r}")
        rows.append(
            {
                "source": "measured",
                "task": task,
                "model": model,
                "strategy": strategy,
                "pretrain": pretrain,
                "psnr": data["psnr"],
                "ssim_matlab3d": data["ssim_matlab3d"],
                "ssim_basicsr": data["ssim_basicsr"],
                "images": data.get("images"),
                "params": data.get("params"),
                "train_seconds": data.get("train_seconds"),
                "images_per_s": data.get("images_per_s"),
                "init": data.get("init"),
            }
        )
    return rows


def published_rows(tasks: list[str]) -> list[dict]:
    return [
        {"source": "published", "task": task, "model": model, "strategy": "paper", "pretrain": "paper",
         "psnr": p, "ssim_matlab3d": s}
        for (model, task), (p, s) in PUBLISHED.items()
        if task in tasks
    ]


def build_table(metrics_dir: Path, tasks: list[str]) -> pd.DataFrame:
    measured = read_metrics(metrics_dir)
    if not measured:
        raise ValueError(f"{metrics_dir}/finetune: no metrics found; run the evaluate stage first")
    table = pd.DataFrame(measured + published_rows(tasks), columns=COLUMNS)
    order = {"measured": 0, "published": 1}
    table["_o"] = table["source"].map(order)
    table = table.sort_values(["_o", "task", "model", "pretrain", "strategy"]).drop(columns="_o").reset_index(drop=True)
    return table


def summary(table: pd.DataFrame) -> dict:
    """Nested {task: {model: {strategy: {psnr, ssim_matlab3d, ssim_basicsr}}}}, measured rows only."""
    out: dict = {}
    for row in table[table["source"] == "measured"].itertuples():
        key = cell_name(row.strategy, row.pretrain or "none")
        out.setdefault(row.task, {}).setdefault(row.model, {})[key] = {
            "psnr": round(float(row.psnr), 4),
            "ssim_matlab3d": round(float(row.ssim_matlab3d), 5),
            "ssim_basicsr": round(float(row.ssim_basicsr), 5),
        }
    return out


def write_outputs(table: pd.DataFrame, table_path: Path, summary_path: Path) -> None:
    with io.atomic_path(table_path, suffix=".csv") as tmp:
        table.to_csv(tmp, index=False, float_format="%.8g")
    io.write_json(summary_path, summary(table))
