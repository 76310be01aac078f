"""results/report.html: one self-contained page (images inlined), readable offline.

PSNR/SSIM by model and strategy per task (measured, with the identity floor and the published numbers
drawn as reference lines), training curves from each run's dvclive folder, and the sample crops
(input | output | ground truth) the evaluate stage saved. Also writes the plots as PNG beside it.
"""

from __future__ import annotations

import base64
import html
import io as _io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from restorebench import io  # noqa: E402


def _png(fig) -> bytes:
    buf = _io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def _img(data: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'


def metric_plot(table: pd.DataFrame, task: str, metric: str) -> bytes | None:
    measured = table[(table["source"] == "measured") & (table["task"] == task) & (table["model"] != "identity")]
    if measured.empty:
        return None
    pivot = measured.pivot_table(index="model", columns="strategy", values=metric)
    fig, ax = plt.subplots(figsize=(7, 3.2))
    pivot.plot.bar(ax=ax, rot=0)
    floor = table[(table["task"] == task) & (table["model"] == "identity")][metric]
    if not floor.empty:
        ax.axhline(float(floor.iloc[0]), color="k", ls="--", lw=1, label="identity (input)")
    ax.set_ylabel(metric)
    ax.set_title(f"{task}: {metric} (measured, this profile)")
    lo = min(pivot.min().min(), float(floor.iloc[0]) if not floor.empty else pivot.min().min())
    ax.set_ylim(bottom=lo - 0.05 * abs(lo))
    ax.legend(fontsize=7, ncol=3)
    return _png(fig)


def curve_plot(runs: Path, task: str) -> bytes | None:
    files = sorted(runs.glob(f"finetune/{task}/*/*/dvclive/plots/metrics/train/loss.tsv"))
    if not files:
        return None
    fig, ax = plt.subplots(figsize=(7, 3.2))
    for path in files:
        curve = pd.read_csv(path, sep="\t")
        model, strategy = path.parts[-8], path.parts[-7]
        ax.plot(curve["step"], curve["loss"], lw=1, label=f"{model}/{strategy}")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_title(f"{task}: training curves")
    ax.legend(fontsize=6, ncol=2)
    return _png(fig)


def build_report(table_path: Path, out: Path, *, runs: Path = Path("runs"), evals: Path = Path("results/eval")) -> Path:
    table = pd.read_csv(table_path)
    parts = ["<h1>restorebench report</h1>",
             "<p>Measured rows come from this pipeline's metrics; published rows are the papers' numbers "
             "(DESIGN.md) on the real datasets and are not comparable with demo-profile runs.</p>"]
    for task in sorted(table["task"].unique()):
        parts.append(f"<h2>{html.escape(task)}</h2>")
        for metric in ("psnr", "ssim_matlab3d"):
            png = metric_plot(table, task, metric)
            if png is not None:
                io.write_bytes(out.parent / f"{task}_{metric}.png", png)
                parts.append(_img(png, f"{task} {metric}"))
        png = curve_plot(runs, task)
        if png is not None:
            io.write_bytes(out.parent / f"{task}_curves.png", png)
            parts.append(_img(png, f"{task} curves"))
        crops = sorted((evals / task).glob("*/*/crops/*.png"))
        if crops:
            parts.append("<h3>Sample crops (input | output | ground truth)</h3>")
            for crop in crops[:24]:
                label = "/".join(crop.parts[-4:-2]) + f" {crop.stem}"
                parts.append(f"<figure>{_img(crop.read_bytes(), label)}<figcaption>{html.escape(label)}"
                             "</figcaption></figure>")
    parts.append("<h2>Table</h2>")
    parts.append(table.to_html(index=False, float_format=lambda v: f"{v:.4f}", na_rep=""))
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>restorebench report</title><style>"
            "body{font-family:sans-serif;max-width:1100px;margin:auto}img{max-width:100%}"
            "figure{display:inline-block;margin:4px}table{border-collapse:collapse;font-size:12px}"
            "td,th{border:1px solid #ccc;padding:2px 6px}</style></head><body>"
            + "\n".join(parts) + "</body></html>")
    io.write_text(out, page)
    return out
