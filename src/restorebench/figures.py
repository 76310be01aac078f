"""The report's figures (restorebench.report draws the page around them), as matplotlib Figures or PNG bytes.

- `comparison_figure`: per task, the cells ranked by PSNR: their gain over the identity floor and their
  difference to the best baseline, each with its 95% interval and value, on scales fitted to the cells; the
  published numbers on a panel of their own (real data, full schedules), each labelled with its value.
- `curve_figures`: the held-out `val/psnr` and the training loss per run (dvclive's TSV files), one panel per
  model, one figure per loss kind (a PSNR loss near -30 never shares an axis with an L1 near 0.04); every
  panel of a figure shares its y-range; each curve is smoothed (`smooth`), its raw values drawn faint beside
  it, and no colour repeats within a panel (`palette`).
"""

from __future__ import annotations

import io as _io
import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib import colors as mcolors  # noqa: E402

LEGEND_INSIDE = 8  # curves a legend may hold inside its axis (more: below it, in two columns)
RAW_ALPHA = 0.25  # the unsmoothed values, drawn faint under their smoothed curve
VAL_MIN_SPAN = 0.5  # dB: a val/psnr axis spans at least this, so a 0.07 dB wiggle does not fill the panel
LINE_STYLES = ("-", "--", "-.", ":")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def png(fig) -> bytes:
    """The figure as PNG bytes (closed after); no timestamp in the file, so the same figure gives the same bytes."""
    buf = _io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------- palette


def palette(n: int) -> list[tuple[str, object, str | None]]:
    """n (colour hex, line style, marker) with n distinct colours: tab10 up to 10 lines, tab20 up to 20, then
    tab20 + tab20b + tab20c (60 distinct) with line styles and markers cycling so neighbours differ in shape
    too, and beyond 60 evenly spaced hues."""
    if n <= 10:
        return [(mcolors.to_hex(c), "-", None) for c in plt.get_cmap("tab10").colors[:n]]
    if n <= 20:
        return [(mcolors.to_hex(c), "-", None) for c in plt.get_cmap("tab20").colors[:n]]
    colours = list(dict.fromkeys(mcolors.to_hex(c) for name in ("tab20", "tab20b", "tab20c")
                                 for c in plt.get_cmap(name).colors))  # fmt: skip
    if n > len(colours):
        colours = [mcolors.to_hex(plt.get_cmap("hsv")(i / n)) for i in range(n)]
    return [(colours[i], LINE_STYLES[i % len(LINE_STYLES)], MARKERS[i % len(MARKERS)]) for i in range(n)]


def smooth(values: np.ndarray) -> np.ndarray:
    """A centred moving average over about a tenth of the points (an odd window; 1, i.e. the values, under 15
    points), partial windows at the ends: unlike an exponential average it does not lag behind a rising curve,
    so the smoothed line ends where the run ended. NaNs are skipped."""
    window = max(1, len(values) // 10) | 1
    return pd.Series(np.asarray(values, np.float64)).rolling(window, center=True, min_periods=1).mean().to_numpy()


def y_range(values: list[np.ndarray], min_span: float | None = None) -> tuple[float, float] | None:
    """One y-range for every panel of a figure: all values (the smoothed curves: a one-step spike in the raw
    values does not flatten the rest) padded by 5%, widened to `min_span` around its middle."""
    flat = np.concatenate([np.asarray(v, np.float64).ravel() for v in values]) if values else np.array([])
    flat = flat[np.isfinite(flat)]
    if flat.size == 0:
        return None
    lo, hi = float(flat.min()), float(flat.max())
    pad = 0.05 * (hi - lo) or 0.05 * max(abs(hi), 1e-3)
    lo, hi = lo - pad, hi + pad
    if min_span is not None and hi - lo < min_span:
        mid = (lo + hi) / 2
        lo, hi = mid - min_span / 2, mid + min_span / 2
    return lo, hi


# ---------------------------------------------------------------------------------------------- comparison


def ranked(table: pd.DataFrame, task: str) -> pd.DataFrame:
    """The task's measured cells (identity floor left out), best PSNR first (ties: the higher SSIM)."""
    rows = table[(table["task"] == task) & (table["source"] == "measured") & (table["model"] != "identity")]
    return rows.sort_values(["psnr", "ssim_matlab3d"], ascending=False, kind="stable")


def comparison_figure(table: pd.DataFrame, task: str):
    """Three panels: (a) each ranked cell's PSNR gain over the identity floor and (b) its difference to the best
    baseline, dots with 95% interval bars and their values, each on an axis fitted to the cells; (c) the
    published PSNR, a panel of its own, each dot labelled with PSNR / SSIM. None without measured cells."""
    cells = ranked(table, task)
    if cells.empty:
        return None
    published = table[(table["task"] == task) & (table["source"] == "published")].sort_values("psnr", ascending=False)
    labels = [f"{m}/{c}" for m, c in zip(cells["model"], cells["cell"], strict=True)]
    models = list(dict.fromkeys(cells["model"]))
    colour = dict(zip(models, (c for c, _, _ in palette(len(models))), strict=True))
    rows = max(len(labels), len(published), 3)
    fig = plt.figure(figsize=(14, 0.26 * rows + 2.0))  # a row per cell (or published model), room for the labels
    grid = fig.add_gridspec(1, 3, width_ratios=[1.1, 1.1, 0.9], wspace=0.08)
    ax_gain = fig.add_subplot(grid[0])
    ax_base = fig.add_subplot(grid[1], sharey=ax_gain)
    ax_pub = fig.add_subplot(grid[2])
    y = np.arange(len(labels))
    baseline = next((b for b in cells["baseline"] if isinstance(b, str)), None)
    for ax, prefix, xlabel in ((ax_gain, "vs_identity", "(a) PSNR gain over the identity floor (dB)"),
                               (ax_base, "vs_baseline", f"(b) PSNR difference to the best baseline\n"
                                                        f"({baseline or 'none'}) (dB)")):  # fmt: skip
        mean = cells[prefix].to_numpy(float)
        lo, hi = cells[f"{prefix}_lo"].to_numpy(float), cells[f"{prefix}_hi"].to_numpy(float)
        ax.errorbar(mean, y, xerr=np.nan_to_num(np.vstack([mean - lo, hi - mean]).clip(min=0)), fmt="none",
                    ecolor="#777", lw=1, capsize=2)  # fmt: skip
        ax.scatter(mean, y, c=[colour[m] for m in cells["model"]], s=22, zorder=3)
        ax.axvline(0, color="k", ls="--", lw=0.8)
        finite = np.concatenate([v[np.isfinite(v)] for v in (lo, hi, mean)] + [np.zeros(1)])
        span = float(finite.max() - finite.min()) or 0.1
        ax.set_xlim(finite.min() - 0.05 * span, finite.max() + 0.3 * span)  # room for the values on the right
        for yi, m, h in zip(y, mean, hi, strict=True):
            if np.isfinite(m):
                ax.text((h if np.isfinite(h) else m) + 0.02 * span, yi, f"{m:+.3f}", va="center", fontsize=6.5)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.grid(axis="x", alpha=0.3)
        ax.tick_params(labelsize=7)
    ax_gain.set_yticks(y, labels, fontsize=7)
    plt.setp(ax_base.get_yticklabels(), visible=False)
    ax_gain.set_ylim(len(labels) - 0.5, -0.7)  # rank 1 on top
    if published.empty:
        ax_pub.text(0.5, 0.5, "no published numbers for this task", ha="center", va="center", fontsize=8)
        ax_pub.set_axis_off()
    else:
        yp = np.arange(len(published))
        ax_pub.scatter(published["psnr"], yp, color="#c06000", marker="D", s=24, zorder=3)
        for yi, r in zip(yp, published.itertuples(), strict=True):
            ax_pub.annotate(f"{r.psnr:.2f} dB / {r.ssim_matlab3d:.3f}", (r.psnr, yi), xytext=(6, 0),
                            textcoords="offset points", va="center", fontsize=7)  # fmt: skip
        ax_pub.set_yticks(yp, list(published["model"]), fontsize=7)
        ax_pub.yaxis.tick_right()
        lo, hi = float(published["psnr"].min()), float(published["psnr"].max())
        ax_pub.set_xlim(lo - 0.3 - 0.1 * (hi - lo), hi + 0.9 + 0.6 * (hi - lo))
        ax_pub.set_ylim(len(published) - 0.5, -0.7)
        ax_pub.set_xlabel("(c) published PSNR (dB) / SSIM:\nreal data, full schedules", fontsize=8)
        ax_pub.grid(axis="x", alpha=0.3)
        ax_pub.tick_params(labelsize=7)
    handles = [plt.Line2D([], [], color=colour[m], marker="o", ls="", label=m) for m in models]
    fig.legend(handles=handles, loc="upper right", bbox_to_anchor=(0.99, 0.995), ncol=min(len(models), 6),
               fontsize=7, frameon=False)  # fmt: skip
    fig.suptitle(f"{task}: cells ranked by PSNR (best on top), 95% intervals", fontsize=10, x=0.02, ha="left")
    height = 0.26 * rows + 2.0
    fig.subplots_adjust(left=0.16, right=0.9, top=1 - 0.55 / height, bottom=0.8 / height)
    return fig


# ---------------------------------------------------------------------------------------------- curves


def _read_tsv(path: Path) -> pd.DataFrame | None:
    try:
        frame = pd.read_csv(path, sep="\t")
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError):
        return None
    return frame if {"step"} <= set(frame.columns) and len(frame.columns) >= 2 else None


def _runs(runs: Path, task: str) -> list[tuple[str, str, Path]]:
    """(model, cell, run folder) of every finetuned run of `task` (runs/finetune/{task}/{model}/{cell}/)."""
    base = runs / "finetune" / task
    return [(d.parent.name, d.name, d) for d in sorted(base.glob("*/*")) if (d / "dvclive").is_dir()]


def _loss_kind(run: Path) -> str:
    for name in ("config.json", "train.json"):
        try:
            kind = json.loads((run / name).read_text()).get("loss")
        except (OSError, json.JSONDecodeError):
            continue
        if kind:
            return str(kind)
    return "unknown kind"


Curves = dict[str, list[tuple[str, pd.DataFrame]]]  # panel name (a model) -> [(legend label, frame[step, value])]


def read_curves(runs: Path, task: str) -> tuple[Curves, dict[str, Curves]]:
    """(val/psnr curves by model, {loss kind: loss curves by model}) of the task's runs; labels model/cell."""
    val: Curves = {}
    loss: dict[str, Curves] = {}
    for model, cell, run in _runs(runs, task):
        metrics = run / "dvclive" / "plots" / "metrics"
        v = _read_tsv(metrics / "val" / "psnr.tsv")
        if v is not None:
            val.setdefault(model, []).append((f"{model}/{cell}", v))
        t = _read_tsv(metrics / "train" / "loss.tsv")
        if t is not None:
            loss.setdefault(_loss_kind(run), {}).setdefault(model, []).append((f"{model}/{cell}", t))
    return val, loss


def curve_figures(runs: Path, task: str) -> list[tuple[str, bytes]]:
    """[(what, PNG)]: the val/psnr figure, then one training-loss figure per loss kind; empty without runs."""
    val, loss = read_curves(runs, task)
    out = []
    if val:
        out.append(("held-out val/psnr", png(panels_figure(val, f"{task}: held-out val/psnr (dB)", "val/psnr (dB)",
                                                             min_span=VAL_MIN_SPAN))))  # fmt: skip
    for kind, groups in sorted(loss.items()):
        out.append((f"training loss ({kind})", png(panels_figure(groups, f"{task}: training loss ({kind})",
                                                                 f"{kind} loss"))))  # fmt: skip
    return out


def panels_figure(groups: Curves, title: str, ylabel: str, *, min_span: float | None = None):
    """One axis per group, one smoothed curve per (label, frame[step, value]) over its faint raw values; every
    axis shares one y-range (`y_range`); colours never repeat within an axis (`palette`)."""
    n = len(groups)
    cols = min(n, 3)
    # more curves than fit inside an axis: the legend goes below it, two columns, and the row grows to hold it
    most = max(len(curves) for curves in groups.values())
    below = most > LEGEND_INSIDE
    row = 3.0 + (0.14 * math.ceil(most / 2) + 0.3 if below else 0.0)
    fig, axes = plt.subplots(math.ceil(n / cols), cols, figsize=(4.4 * cols, row * math.ceil(n / cols)),
                             squeeze=False, sharey=True)  # fmt: skip
    values = [smooth(frame[frame.columns[-1]].to_numpy(float)) for curves in groups.values() for _, frame in curves]
    for ax, (name, curves) in zip(axes.flat, groups.items(), strict=False):
        for (label, frame), (colour, style, marker) in zip(curves, palette(len(curves)), strict=True):
            raw = frame[frame.columns[-1]].to_numpy(float)
            ax.plot(frame["step"], raw, color=colour, lw=0.8, alpha=RAW_ALPHA)
            ax.plot(frame["step"], smooth(raw), color=colour, ls=style, lw=1.3, label=label, marker=marker,
                    markevery=max(1, len(raw) // 5), markersize=3)  # fmt: skip
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.set_ylabel(ylabel, fontsize=8)
        ax.tick_params(labelsize=7, labelleft=True)
        if below:
            ax.legend(fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2, frameon=False)
        else:
            ax.legend(fontsize=6)
        ax.grid(alpha=0.3)
    limits = y_range(values, min_span)
    if limits is not None:
        axes.flat[0].set_ylim(*limits)  # shared: every axis of the figure
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle(f"{title}; smoothed (centred moving average), raw values faint", fontsize=10)
    fig.tight_layout()
    return fig
