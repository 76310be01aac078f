"""results/report.html: one self-contained page (images inlined as data URIs, no scripts, no links out).

Per task: a model x cell table of PSNR / SSIM with the gain over the identity floor, the published rows
beside them (marked); the significance table (paired bootstrap intervals from aggregate); a figure of every
cell against the identity floor and the published reference lines; the held-out `val/psnr` curves per cell;
the training loss, one axis per loss kind (a PSNR loss near -30 never shares an axis with an L1 near 0.04);
labelled input | output | ground truth crops. The page names the profile, git revision, params hash and date.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io as _io
import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from PIL import Image  # noqa: E402

from restorebench import io
from restorebench.errors import RestorebenchError

CROP_SCALE = 2  # crops are drawn at twice their pixel size (nearest neighbour), so noise and blur stay visible
MAX_CROP_CELLS = 40
LEGEND_INSIDE = 8  # curves a legend may hold inside its axis (more: below it, in two columns)

CSS = """
body{font-family:system-ui,sans-serif;max-width:1320px;margin:auto;padding:0 12px;color:#222}
h1{margin-bottom:4px} .meta{color:#555;font-size:13px} .meta code{font-size:12px}
table{border-collapse:collapse;font-size:12px;margin:8px 0 16px}
td,th{border:1px solid #ccc;padding:3px 7px;text-align:right;vertical-align:top} th{background:#f3f3f3}
td.name,th.name{text-align:left} .sub{color:#666;font-size:11px} .pos{color:#176117} .neg{color:#a11}
tr.published td{background:#fff8e6;font-style:italic} tr.floor td{background:#f4f4f4}
.badge{display:inline-block;background:#e8a33d;color:#fff;border-radius:3px;padding:0 4px;font-size:10px;
font-style:normal}
img{max-width:100%} figure{display:inline-block;margin:4px 8px 8px 0;text-align:center}
figcaption{font-size:12px;color:#333} .crops{display:flex;flex-wrap:wrap;gap:6px 18px}
.triplet{border:1px solid #ddd;padding:4px} .triplet img{image-rendering:pixelated}
.wide{overflow-x:auto} table.full td{white-space:nowrap}
"""


# ---------------------------------------------------------------------------------------------- formatting


def fmt(value: object, digits: int = 3) -> str:
    """A table value: blank for missing, integers without decimals, floats to `digits`."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return ""
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return f"{value:.{digits}f}"
    return str(value)


def _signed(value: float, digits: int = 2) -> str:
    return "" if value is None or pd.isna(value) else f"{value:+.{digits}f}"


def _interval(row: pd.Series, prefix: str) -> str:
    """'+1.23 dB [+1.01, +1.45]', coloured when the interval excludes 0."""
    mean, lo, hi = row.get(prefix), row.get(f"{prefix}_lo"), row.get(f"{prefix}_hi")
    if mean is None or pd.isna(mean):
        return ""
    cls = "pos" if lo > 0 else "neg" if hi < 0 else ""
    return (f'<span class="{cls}">{_signed(mean, 3)} dB</span> '
            f'<span class="sub">[{_signed(lo, 3)}, {_signed(hi, 3)}]</span>')


def verdict(row: pd.Series, prefix: str) -> str:
    """'better' / 'worse' when the 95% interval excludes 0, else 'not distinguishable'."""
    lo, hi = row.get(f"{prefix}_lo"), row.get(f"{prefix}_hi")
    if lo is None or pd.isna(lo):
        return ""
    return "better" if lo > 0 else "worse" if hi < 0 else "not distinguishable"


def _png(fig) -> bytes:
    buf = _io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def _img(data: bytes, alt: str, width: int | None = None) -> str:
    w = f' width="{width}"' if width else ""
    return f'<img alt="{html.escape(alt)}"{w} src="data:image/png;base64,{base64.b64encode(data).decode()}">'


# ---------------------------------------------------------------------------------------------- tables


def _cell_order(measured: pd.DataFrame) -> list[str]:
    """Cells in grid order: plain strategies first (as the table lists them), then the pretrained ones."""
    cells = list(dict.fromkeys(measured[measured["model"] != "identity"]["cell"]))
    return sorted(cells, key=lambda c: ("-" in c, cells.index(c)))


def score_table(table: pd.DataFrame, task: str) -> str:
    """Model rows x cell columns of PSNR / SSIM with the gain over the floor; the floor and published rows marked."""
    rows = table[table["task"] == task]
    measured = rows[rows["source"] == "measured"]
    cells = _cell_order(measured)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cells)
    out = [f'<table class="scores"><tr><th class="name">model</th>{head}</tr>']
    floor = measured[measured["model"] == "identity"]
    if not floor.empty:
        f = floor.iloc[0]
        out.append(f'<tr class="floor"><td class="name">identity (the degraded input)</td>'
                   f'<td colspan="{max(len(cells), 1)}" style="text-align:left">{fmt(f.psnr)} dB / {fmt(f.ssim_matlab3d, 4)}'
                   f' <span class="sub">the floor every cell must beat</span></td></tr>')  # fmt: skip
    for model, group in measured[measured["model"] != "identity"].groupby("model", sort=False):
        tds = []
        for cell in cells:
            hit = group[group["cell"] == cell]
            if hit.empty:
                tds.append("<td></td>")
                continue
            r = hit.iloc[0]
            spread = f" ± {fmt(r.psnr_sd, 2)}" if pd.notna(r.get("psnr_sd")) else ""
            gain = f'<br><span class="sub">{_signed(r.vs_identity)} dB vs floor</span>' if pd.notna(r.vs_identity) else ""
            tds.append(f"<td>{fmt(r.psnr, 2)}{spread} / {fmt(r.ssim_matlab3d, 4)}{gain}</td>")
        out.append(f'<tr><td class="name">{html.escape(str(model))}</td>{"".join(tds)}</tr>')
    for r in rows[rows["source"] == "published"].itertuples():
        out.append(f'<tr class="published"><td class="name">{html.escape(r.model)} <span class="badge">published</span>'
                   f'</td><td colspan="{max(len(cells), 1)}" style="text-align:left">{fmt(r.psnr, 2)} / '
                   f'{fmt(r.ssim_matlab3d, 3)} <span class="sub">the paper, real data, full schedule</span></td></tr>')  # fmt: skip
    out.append("</table>")
    return "\n".join(out)


def significance_table(table: pd.DataFrame, task: str) -> str:
    """Per cell: seeds, PSNR (mean ± sd over seeds), gain over the floor and over the best baseline, with
    95% paired bootstrap intervals and what they say."""
    rows = table[(table["task"] == task) & (table["source"] == "measured") & (table["model"] != "identity")]
    if rows.empty:
        return ""
    baseline = next((b for b in rows["baseline"] if isinstance(b, str)), None)
    out = ['<table class="significance"><tr><th class="name">model / cell</th><th>seeds</th><th>PSNR (dB)</th>'
           "<th>vs identity floor</th><th></th>"
           f"<th>vs best baseline ({html.escape(baseline or 'none')})</th><th></th></tr>"]  # fmt: skip
    for _, r in rows.iterrows():
        spread = f" ± {fmt(r.psnr_sd, 2)}" if pd.notna(r.get("psnr_sd")) else ""
        vs_base = "baseline" if f"{r.model}/{r.cell}" == baseline else _interval(r, "vs_baseline")
        out.append(f'<tr><td class="name">{html.escape(f"{r.model}/{r.cell}")}</td><td>{fmt(r.seeds)}</td>'
                   f"<td>{fmt(r.psnr, 3)}{spread}</td><td>{_interval(r, 'vs_identity')}</td>"
                   f"<td>{verdict(r, 'vs_identity')}</td><td>{vs_base}</td>"
                   f"<td>{'' if vs_base == 'baseline' else verdict(r, 'vs_baseline')}</td></tr>")  # fmt: skip
    out.append("</table>")
    return "\n".join(out)


def full_table(table: pd.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in table.columns)
    body = []
    for _, r in table.iterrows():
        cls = ' class="published"' if r["source"] == "published" else ""
        tds = "".join(f"<td>{html.escape(fmt(r[c], 4))}</td>" for c in table.columns)
        body.append(f"<tr{cls}>{tds}</tr>")
    return f'<div class="wide"><table class="full"><tr>{head}</tr>' + "".join(body) + "</table></div>"


# ---------------------------------------------------------------------------------------------- figures


def metric_figure(table: pd.DataFrame, task: str) -> bytes | None:
    """Three panels over the cells: the PSNR gain over the identity floor with its 95% bootstrap interval (the
    scale that shows small differences), then PSNR and SSIM beside the identity floor (dashed) and the
    published numbers (one line style per paper), on the scale where the published numbers are."""
    rows = table[table["task"] == task]
    measured = rows[(rows["source"] == "measured") & (rows["model"] != "identity")]
    if measured.empty:
        return None
    floor = rows[(rows["source"] == "measured") & (rows["model"] == "identity")]
    published = rows[rows["source"] == "published"]
    labels = [f"{m}/{c}" for m, c in zip(measured["model"], measured["cell"], strict=True)]
    y = np.arange(len(labels))
    models = list(dict.fromkeys(measured["model"]))
    colours = [plt.cm.tab10(models.index(m) % 10) for m in measured["model"]]
    fig, axes = plt.subplots(1, 3, figsize=(14, 0.28 * len(labels) + 2.2), sharey=True,
                             gridspec_kw={"width_ratios": [1.1, 1, 1]})  # fmt: skip
    gain = measured["vs_identity"].to_numpy(float)
    err = np.vstack([gain - measured["vs_identity_lo"].to_numpy(float), measured["vs_identity_hi"].to_numpy(float) - gain])
    axes[0].errorbar(gain, y, xerr=np.nan_to_num(err.clip(min=0)), fmt="none", ecolor="#666", lw=1, capsize=3)
    axes[0].scatter(gain, y, c=colours, s=22, zorder=3)
    axes[0].axvline(0, color="k", ls="--", lw=1)
    axes[0].set_xlabel("PSNR gain over the identity floor (dB), 95% interval")
    styles = [":", "-.", (0, (1, 3)), (0, (5, 2, 1, 2)), (0, (3, 1))]
    for ax, metric, name in ((axes[1], "psnr", "PSNR (dB)"), (axes[2], "ssim_matlab3d", "SSIM (matlab3d)")):
        ax.scatter(measured[metric].to_numpy(float), y, c=colours, s=22, zorder=3)
        if not floor.empty:
            ax.axvline(float(floor[metric].iloc[0]), color="k", ls="--", lw=1)
            ax.text(float(floor[metric].iloc[0]), -0.6, " identity floor", fontsize=7, va="bottom")
        for i, r in enumerate(published.itertuples()):
            ax.axvline(getattr(r, metric), color=plt.cm.Oranges(0.45 + 0.5 * i / max(len(published), 1)),
                       ls=styles[i % len(styles)], lw=1.3, label=f"{r.model} (published)")
        ax.set_xlabel(name)
    for ax in axes:
        ax.grid(axis="x", alpha=0.3)
    if len(published):  # one legend for the panels with published lines, below them
        handles, names = axes[1].get_legend_handles_labels()
        fig.legend(handles, names, fontsize=7, loc="upper center", bbox_to_anchor=(0.6, 0.0), ncol=5, frameon=False)
    axes[0].set_yticks(y, labels, fontsize=7)
    axes[0].set_ylim(-1.2, len(labels) - 0.4)
    axes[0].invert_yaxis()
    fig.suptitle(f"{task}: every cell's gain over the identity floor, and against the published numbers", fontsize=10)
    return _png(fig)


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


def curve_figures(runs: Path, task: str) -> tuple[bytes | None, bytes | None]:
    """(val/psnr per cell, one panel per model; training loss, one panel per loss kind), legends model/cell."""
    found = _runs(runs, task)
    val: dict[str, list[tuple[str, pd.DataFrame]]] = {}
    loss: dict[str, list[tuple[str, pd.DataFrame]]] = {}
    for model, cell, run in found:
        metrics = run / "dvclive" / "plots" / "metrics"
        v = _read_tsv(metrics / "val" / "psnr.tsv")
        if v is not None:
            val.setdefault(model, []).append((f"{model}/{cell}", v))
        t = _read_tsv(metrics / "train" / "loss.tsv")
        if t is not None:
            loss.setdefault(_loss_kind(run), []).append((f"{model}/{cell}", t))
    return (_panels(val, f"{task}: held-out val/psnr (dB)", "val/psnr (dB)"),
            _panels(loss, f"{task}: training loss, one axis per loss kind", "loss"))  # fmt: skip


def _panels(groups: dict[str, list[tuple[str, pd.DataFrame]]], title: str, ylabel: str) -> bytes | None:
    return _png(panels_figure(groups, title, ylabel)) if groups else None


def panels_figure(groups: dict[str, list[tuple[str, pd.DataFrame]]], title: str, ylabel: str):
    """One axis per group (a model, or a loss kind), one curve per (label, frame[step, value])."""
    n = len(groups)
    cols = min(n, 3)
    # more curves than fit inside an axis: the legend goes below it, two columns, and the row grows to hold it
    most = max(len(curves) for curves in groups.values())
    below = most > LEGEND_INSIDE
    row = 3.0 + (0.14 * math.ceil(most / 2) + 0.3 if below else 0.0)
    fig, axes = plt.subplots(math.ceil(n / cols), cols, figsize=(4.2 * cols, row * math.ceil(n / cols)), squeeze=False)
    for ax, (name, curves) in zip(axes.flat, groups.items(), strict=False):
        for label, frame in curves:
            ax.plot(frame["step"], frame[frame.columns[-1]], lw=1.1, marker="." if len(frame) < 12 else None,
                    label=label)  # fmt: skip
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.set_ylabel(ylabel, fontsize=8)
        ax.tick_params(labelsize=7)
        if below:
            ax.legend(fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2, frameon=False)
        else:
            ax.legend(fontsize=6)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------- crops


def crop_panels(path: Path) -> list[tuple[str, bytes]]:
    """The evaluate stage's strip (input | output | ground truth side by side) as three labelled PNGs."""
    strip = Image.open(path).convert("RGB")
    w, h = strip.size
    s = w // 3
    out = []
    for i, label in enumerate(("input", "output", "ground truth")):
        buf = _io.BytesIO()
        strip.crop((i * s, 0, (i + 1) * s, h)).save(buf, format="PNG")
        out.append((label, buf.getvalue()))
    return out


def crops_section(evals: Path, task: str) -> str:
    """For every cell, its first crop as input | output | ground truth at CROP_SCALE x its pixel size."""
    figures = []
    for folder in sorted((evals / task).glob("*/*/crops"))[:MAX_CROP_CELLS]:
        files = sorted(folder.glob("*.png"))
        if not files:
            continue
        model, cell = folder.parts[-3], folder.parts[-2]
        panels = crop_panels(files[0])
        size = Image.open(files[0]).size[1] * CROP_SCALE
        inner = "".join(f"<figure>{_img(png, f'{model}/{cell} {files[0].stem} {label}', size)}"
                        f"<figcaption>{label}</figcaption></figure>" for label, png in panels)  # fmt: skip
        figures.append(f'<div class="triplet"><div class="sub">{html.escape(f"{model}/{cell}")} · image '
                       f"{html.escape(files[0].stem)}</div>{inner}</div>")  # fmt: skip
    if not figures:
        return ""
    return "<h3>Sample crops: input | output | ground truth</h3>" + f'<div class="crops">{"".join(figures)}</div>'


# ---------------------------------------------------------------------------------------------- page


def build_report(table_path: Path, out: Path, *, runs: Path = Path("runs"), evals: Path = Path("results/eval"),
                 meta: dict | None = None, now: dt.datetime | None = None) -> Path:  # fmt: skip
    """Write the report for results/table.csv; `meta`: profile, git_revision, params_hash (shown on top)."""
    try:
        table = pd.read_csv(table_path, dtype={"seeds": "Int64", "images": "Int64", "params": "Int64"})
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError, ValueError) as err:
        raise RestorebenchError(table_path, f"not a readable results table ({str(err).splitlines()[0]})",
                                "run `restorebench aggregate` again") from None
    missing = [c for c in ("source", "task", "model", "psnr") if c not in table.columns]
    if missing or table.empty:
        what = f"has no column(s) {missing}" if missing else "has no rows (only its header)"
        raise RestorebenchError(table_path, f"{what}; a report of it would be empty",
                                "run `restorebench aggregate` again (after the evaluate stages)")
    meta = dict(meta or {})
    when = (now or dt.datetime.now(dt.UTC)).strftime("%Y-%m-%d %H:%M UTC")
    facts = " · ".join(f"{k.replace('_', ' ')} <code>{html.escape(str(meta[k]))}</code>"
                       for k in ("profile", "git_revision", "params_hash") if k in meta)  # fmt: skip
    parts = [
        "<h1>restorebench report</h1>",
        f'<p class="meta" id="meta">{facts} · built {when}</p>',
        "<p>Measured rows are this pipeline's scores by each task's published protocol. Rows marked "
        '<span class="badge">published</span> are the papers\' numbers on the real datasets with full schedules: '
        "they compare with the paper profile only, never with the demo's tiny models. Intervals are 95% paired "
        "bootstrap intervals over the evaluation images (see the README, 'Reading the report').</p>",
    ]
    for task in sorted(table["task"].unique()):
        parts += [f'<h2 id="{html.escape(task)}">{html.escape(task)}</h2>',
                  "<h3>PSNR (dB) / SSIM by model and cell</h3>", score_table(table, task),
                  "<h3>Is the difference real?</h3>", significance_table(table, task)]  # fmt: skip
        png = metric_figure(table, task)
        if png is not None:
            parts.append(f'<figure class="plot">{_img(png, f"{task} cells vs published")}<figcaption>{task}: cells '
                         "(dots): gain over the identity floor with its 95% interval; PSNR and SSIM beside the floor "
                         "(dashed) and the published numbers</figcaption></figure>")  # fmt: skip
        val_png, loss_png = curve_figures(runs, task)
        for png, what in ((val_png, "val/psnr curves"), (loss_png, "training loss by loss kind")):
            if png is not None:
                parts.append(f'<figure class="plot">{_img(png, f"{task} {what}")}<figcaption>{task}: {what}'
                             "</figcaption></figure>")  # fmt: skip
        parts.append(crops_section(evals, task))
    parts += ["<h2>All rows</h2>", full_table(table)]
    page = ("<!doctype html><html lang='en'><head><meta charset='utf-8'><title>restorebench report</title>"
            f"<style>{CSS}</style></head><body>" + "\n".join(parts) + "</body></html>\n")  # fmt: skip
    io.write_text(out, page)
    return out
