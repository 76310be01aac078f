"""results/report.html: one self-contained page (images inlined as data URIs, no scripts, no links out), read
like a paper's results section.

A table of contents, then how to read the intervals (one seed: image-level intervals and no verdict, and why;
several: two-level intervals and verdicts; restorebench.aggregate decides), then per task in params order
(results/table.csv's order): the cells ranked by PSNR with the best of each column marked, the model x cell
grid with the published rows, the comparison figure (restorebench.figures), the val/psnr and loss curves, and
a few crops (the best cell, the best baseline, the other models' best and the lowest-ranked cell on the same
images, each labelled with the PSNR of the crop shown); last, every row of the table, in a box that scrolls with its header kept in view.
The page names the profile, git revision, params hash and date.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io as _io
import math
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from restorebench import io
from restorebench.aggregate import BASELINE_MODELS, ONE_SEED, VERDICTS
from restorebench.errors import RestorebenchError
from restorebench.figures import comparison_figure, curve_figures, png, ranked

CROP_SCALE = 2  # crops are drawn at twice their pixel size (nearest neighbour), so noise and blur stay visible
CROP_IMAGES = 2  # images per task whose crops are shown, each as input | chosen cells' outputs | ground truth

CSS = """
body{font-family:system-ui,sans-serif;max-width:1320px;margin:auto;padding:0 12px;color:#222}
h1{margin-bottom:4px} h2{margin-top:32px;border-bottom:1px solid #ddd} .meta{color:#555;font-size:13px}
.meta code{font-size:12px} nav.toc{background:#f7f7f7;border:1px solid #ddd;padding:4px 16px;font-size:13px}
nav.toc ol{margin:4px 0;padding-left:20px} nav.toc h2{font-size:15px;border:0;margin:6px 0}
.note{background:#f2f6fb;border-left:4px solid #4a78b0;padding:6px 10px;font-size:13px}
table{border-collapse:separate;border-spacing:0;font-size:12px;margin:0}
td,th{border-right:1px solid #ddd;border-bottom:1px solid #ddd;padding:3px 7px;text-align:right;
vertical-align:top;white-space:nowrap} th{background:#f3f3f3}
td.name,th.name{text-align:left} .sub{color:#666;font-size:11px} .pos{color:#176117} .neg{color:#a11}
td.best{font-weight:600;background:#e4f3e4} td.best::after{content:" \\2605";color:#2a7a2a}
tr.published td{background:#fff8e6;font-style:italic} tr.floor td{background:#f4f4f4}
.badge{display:inline-block;background:#e8a33d;color:#fff;border-radius:3px;padding:0 4px;font-size:10px;
font-style:normal}
.wide{overflow:auto;max-height:80vh;border:1px solid #ccc;margin:8px 0 16px;max-width:100%}
.wide th{position:sticky;top:0;z-index:1}
img{max-width:100%} figure{margin:4px 0 12px} figure.plot{display:block}
figcaption{font-size:12px;color:#333} .crops{display:flex;flex-direction:column;gap:10px}
.triplet{border:1px solid #ddd;padding:4px;display:flex;flex-wrap:wrap;gap:4px 12px;align-items:flex-start}
.triplet .sub{flex-basis:100%} .triplet figure{margin:0;text-align:center}
.triplet img{image-rendering:pixelated}
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
    """'+1.23 dB [+1.01, +1.45]', coloured by its verdict (none: uncoloured)."""
    mean, lo, hi = row.get(prefix), row.get(f"{prefix}_lo"), row.get(f"{prefix}_hi")
    if mean is None or pd.isna(mean):
        return ""
    said = row.get(f"{prefix}_verdict")
    cls = {"better": "pos", "worse": "neg"}.get(said if isinstance(said, str) else "", "")
    return (f'<span class="{cls}">{_signed(mean, 3)} dB</span> '
            f'<span class="sub">[{_signed(lo, 3)}, {_signed(hi, 3)}]</span>')


def _img(data: bytes, alt: str, width: int | None = None) -> str:
    w = f' width="{width}"' if width else ""
    return f'<img alt="{html.escape(alt)}"{w} src="data:image/png;base64,{base64.b64encode(data).decode()}">'


def _wide(inner: str) -> str:
    """A table in a box that scrolls both ways, its header row sticky at the box's top."""
    return f'<div class="wide">{inner}</div>'


def _best(values: pd.Series) -> object:
    """The index of the column's best (highest) value, None when it has none."""
    v = pd.to_numeric(values, errors="coerce")
    return v.idxmax() if v.notna().any() else None


def _gives_verdicts(rows: pd.DataFrame) -> bool:
    cols = [c for c in ("vs_identity_verdict", "vs_baseline_verdict") if c in rows.columns]
    return any(rows[c].isin(VERDICTS).any() for c in cols)


# ---------------------------------------------------------------------------------------------- tables


def ranking_table(table: pd.DataFrame, task: str) -> str:
    """The task's cells best PSNR first: rank, init, seeds, PSNR (± sd over seeds), SSIM, the gain over the
    identity floor and the difference to the best baseline with their intervals (and verdicts, when the
    intervals cover training noise); the best value of each column marked; the floor last."""
    rows = ranked(table, task)
    if rows.empty:
        return ""
    verdicts = _gives_verdicts(rows)
    best = {c: _best(rows[c]) for c in ("psnr", "ssim_matlab3d", "vs_identity", "vs_baseline")}
    baseline = next((b for b in rows["baseline"] if isinstance(b, str)), None)
    said = "<th>verdict</th>" if verdicts else ""
    out = ['<table class="ranking"><tr><th>#</th><th class="name">model / cell</th><th class="name">init</th>'
           f"<th>seeds</th><th>PSNR (dB)</th><th>SSIM</th><th>vs identity floor</th>{said}"
           f"<th>vs best baseline ({html.escape(baseline or 'none')})</th>{said}</tr>"]  # fmt: skip

    def td(idx, col: str, text: str) -> str:
        return f'<td class="{col}{" best" if best.get(col) == idx else ""}">{text}</td>'

    for rank, (idx, r) in enumerate(rows.iterrows(), start=1):
        spread = f' <span class="sub">± {fmt(r.psnr_sd, 2)}</span>' if pd.notna(r.get("psnr_sd")) else ""
        is_base = f"{r.model}/{r.cell}" == baseline
        cells = [f'<td class="rank">{rank}</td>', f'<td class="name">{html.escape(f"{r.model}/{r.cell}")}</td>',
                 f'<td class="name">{html.escape(fmt(r.pretrain))}</td>', f"<td>{fmt(r.seeds)}</td>",
                 td(idx, "psnr", f"{fmt(r.psnr, 3)}{spread}"), td(idx, "ssim_matlab3d", fmt(r.ssim_matlab3d, 4)),
                 td(idx, "vs_identity", _interval(r, "vs_identity"))]  # fmt: skip
        if verdicts:
            cells.append(f"<td>{_verdict(r, 'vs_identity')}</td>")
        cells.append(td(idx, "vs_baseline", "baseline" if is_base else _interval(r, "vs_baseline")))
        if verdicts:
            cells.append(f"<td>{'' if is_base else _verdict(r, 'vs_baseline')}</td>")
        out.append(f'<tr data-psnr="{r.psnr:.6f}">{"".join(cells)}</tr>')
    floor = table[(table["task"] == task) & (table["source"] == "measured") & (table["model"] == "identity")]
    if not floor.empty:
        f = floor.iloc[0]
        out.append(f'<tr class="floor"><td></td><td class="name">identity (the degraded input)</td><td></td><td></td>'
                   f"<td>{fmt(f.psnr, 3)}</td><td>{fmt(f.ssim_matlab3d, 4)}</td>"
                   f'<td class="name" colspan="{4 if verdicts else 2}"><span class="sub">the floor every cell must '
                   "beat</span></td></tr>")  # fmt: skip
    out.append("</table>")
    return _wide("\n".join(out))


def scratch_table(table: pd.DataFrame, task: str) -> str:
    """Per model and strategy finetuned from the profile's checkpoint with a scratch control: both PSNRs and
    the paired difference (checkpoint - scratch) with its interval and verdict."""
    if "vs_scratch" not in table.columns:
        return ""
    rows = table[(table["source"] == "measured") & (table["task"] == task) & table["vs_scratch"].notna()]
    if rows.empty:
        return ""
    scratch = table[(table["task"] == task) & (table["pretrain"] == "scratch")].set_index(["model", "strategy"])
    out = ['<table><thead><tr><th>model</th><th>strategy</th><th>from its checkpoint (dB)</th><th>scratch (dB)</th>'
           "<th>checkpoint - scratch</th><th>verdict</th></tr></thead><tbody>"]
    for _, r in rows.iterrows():
        ctrl = scratch.loc[(r["model"], r["strategy"]), "psnr"]
        out.append(f"<tr><td>{html.escape(str(r['model']))}</td><td>{html.escape(str(r['strategy']))}</td>"
                   f"<td>{fmt(r['psnr'])}</td><td>{fmt(ctrl)}</td><td>{_interval(r, 'vs_scratch')}</td>"
                   f"<td>{_verdict(r, 'vs_scratch')}</td></tr>")  # fmt: skip
    out.append("</tbody></table>")
    note = ('<p class="sub">The same architecture and recipe from a seeded random init (cells <code>scratch-*</code>): '
            "the difference is what the segmentation checkpoint brings, paired over the evaluation images.</p>")
    return note + _wide("\n".join(out))


def _verdict(row: pd.Series, prefix: str) -> str:
    said = row.get(f"{prefix}_verdict")
    if not isinstance(said, str):
        return ""
    return f'<span class="sub">{html.escape(said)}</span>' if said == ONE_SEED else html.escape(said)


def _cell_order(measured: pd.DataFrame) -> list[str]:
    """Cells in grid order: plain strategies first (as the table lists them), then the pretrained ones."""
    cells = list(dict.fromkeys(measured[measured["model"] != "identity"]["cell"]))
    return sorted(cells, key=lambda c: ("-" in c, cells.index(c)))


def score_table(table: pd.DataFrame, task: str) -> str:
    """Model rows x cell columns of PSNR / SSIM with the gain over the floor, the best PSNR of each column
    marked; the floor and the published rows (marked) span the columns."""
    rows = table[table["task"] == task]
    measured = rows[rows["source"] == "measured"]
    trained = measured[measured["model"] != "identity"]
    cells = _cell_order(measured)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cells)
    out = [f'<table class="scores"><tr><th class="name">model</th>{head}</tr>']
    floor = measured[measured["model"] == "identity"]
    span = max(len(cells), 1)
    if not floor.empty:
        f = floor.iloc[0]
        out.append(f'<tr class="floor"><td class="name">identity (the degraded input)</td>'
                   f'<td colspan="{span}" class="name">{fmt(f.psnr)} dB / {fmt(f.ssim_matlab3d, 4)}'
                   f' <span class="sub">the floor every cell must beat</span></td></tr>')  # fmt: skip
    best = {c: _best(trained[trained["cell"] == c]["psnr"]) for c in cells}
    for model, group in trained.groupby("model", sort=False):
        tds = []
        for cell in cells:
            hit = group[group["cell"] == cell]
            if hit.empty:
                tds.append("<td></td>")
                continue
            r = hit.iloc[0]
            spread = f" ± {fmt(r.psnr_sd, 2)}" if pd.notna(r.get("psnr_sd")) else ""
            gain = f'<br><span class="sub">{_signed(r.vs_identity)} dB vs floor</span>' if pd.notna(r.vs_identity) else ""
            mark = ' class="best"' if best[cell] == hit.index[0] else ""
            tds.append(f"<td{mark}>{fmt(r.psnr, 2)}{spread} / {fmt(r.ssim_matlab3d, 4)}{gain}</td>")
        out.append(f'<tr><td class="name">{html.escape(str(model))}</td>{"".join(tds)}</tr>')
    for r in rows[rows["source"] == "published"].itertuples():
        out.append(f'<tr class="published"><td class="name">{html.escape(r.model)} <span class="badge">published</span>'
                   f'</td><td colspan="{span}" class="name">{fmt(r.psnr, 2)} / {fmt(r.ssim_matlab3d, 3)} '
                   '<span class="sub">the paper, real data, full schedule</span></td></tr>')  # fmt: skip
    out.append("</table>")
    return _wide("\n".join(out))


def full_table(table: pd.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in table.columns)
    body = []
    for _, r in table.iterrows():
        cls = ' class="published"' if r["source"] == "published" else ""
        tds = "".join(f"<td>{html.escape(fmt(r[c], 4))}</td>" for c in table.columns)
        body.append(f"<tr{cls}>{tds}</tr>")
    return _wide(f'<table class="full"><tr>{head}</tr>' + "".join(body) + "</table>")


# ---------------------------------------------------------------------------------------------- crops


def crop_panels(path: Path) -> list[tuple[str, np.ndarray]]:
    """The evaluate stage's strip (input | output | ground truth side by side) as three HxWx3 uint8 arrays."""
    strip = np.asarray(Image.open(path).convert("RGB"))
    s = strip.shape[1] // 3
    return [(label, strip[:, i * s : (i + 1) * s]) for i, label in enumerate(("input", "output", "ground truth"))]


def crop_psnr(x: np.ndarray, gt: np.ndarray) -> float:
    """PSNR (dB) of the uint8 crop shown against its ground truth crop: float64 MSE over every pixel and
    channel, data range 255, inf when equal (metrics.psnr's definition, without importing torch here)."""
    mse = float(np.mean((x.astype(np.float64) - gt.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def _cell_folder(evals: Path, task: str, model: str, cell: str) -> Path | None:
    """A pooled row's evaluated folder: the cell's, or its first seed's (full-seed0) when it ran seeds."""
    for folder in [evals / task / model / cell, *sorted((evals / task / model).glob(f"{cell}-seed*"))]:
        if (folder / "crops").is_dir():
            return folder
    return None


def crop_choices(table: pd.DataFrame, evals: Path, task: str) -> list[tuple[str, Path]]:
    """(caption, evaluated folder) of the cells whose crops are shown, each once: the best cell, the best
    baseline, the best cell of the other models (the study's subject) and the lowest-ranked cell."""
    rows = ranked(table, task)
    if rows.empty:
        return []
    name = lambda r: f"{r.model}/{r.cell}"  # noqa: E731
    studied = rows[~rows["model"].isin(BASELINE_MODELS)]
    baseline = next((b for b in rows["baseline"] if isinstance(b, str)), None)
    picks: dict[str, str] = {name(rows.iloc[0]): "best"}
    if baseline:
        picks.setdefault(baseline, "best baseline")
    if not studied.empty:
        picks.setdefault(name(studied.iloc[0]), "best of the other models")
    picks.setdefault(name(rows.iloc[-1]), "lowest")
    out = []
    for name, role in picks.items():
        model, _, cell = name.partition("/")
        folder = _cell_folder(evals, task, model, cell)
        if folder is not None:
            out.append((f"{name} ({role})", folder))
    return out


def crops_section(table: pd.DataFrame, evals: Path, task: str) -> str:
    """CROP_IMAGES images, each a row: input, the chosen cells' outputs, ground truth, at CROP_SCALE x their
    pixel size, each captioned with the PSNR of the crop shown."""
    chosen = crop_choices(table, evals, task)
    if not chosen:
        return ""
    ids = [p.stem for p in sorted((chosen[0][1] / "crops").glob("*.png"))]
    ids = [i for i in ids if all((f / "crops" / f"{i}.png").exists() for _, f in chosen)][:CROP_IMAGES]
    rows = []
    for image in ids:
        strips = [(caption, crop_panels(folder / "crops" / f"{image}.png")) for caption, folder in chosen]
        (_, lq), _, (_, gt) = strips[0][1]
        # (caption, pixels, its ground truth): each output against the ground truth of its own strip
        shown = [("input", lq, gt), *((c, panels[1][1], panels[2][1]) for c, panels in strips), ("ground truth", gt, None)]
        figs = []
        for caption, pixels, truth in shown:
            buf = _io.BytesIO()
            Image.fromarray(pixels).save(buf, format="PNG")
            label = html.escape(caption) + ("" if truth is None else f"<br>{crop_psnr(pixels, truth):.2f} dB")
            figs.append(f"<figure>{_img(buf.getvalue(), f'{task} image {image} {caption}', pixels.shape[1] * CROP_SCALE)}"
                        f"<figcaption>{label}</figcaption></figure>")  # fmt: skip
        rows.append(f'<div class="triplet"><div class="sub">image {html.escape(image)}: a centre crop, drawn at '
                    f"{CROP_SCALE}x; PSNR of the crop shown</div>{''.join(figs)}</div>")  # fmt: skip
    return f'<div class="crops">{"".join(rows)}</div>' if rows else ""


# ---------------------------------------------------------------------------------------------- page


def reading_note(table: pd.DataFrame) -> str:
    """How to read the intervals, by what the table holds: one seed per cell (no verdict, and why), or several."""
    measured = table[(table["source"] == "measured") & (table["model"] != "identity")]
    seeds = pd.to_numeric(measured.get("seeds"), errors="coerce").max() if not measured.empty else None
    parts = ["<p>Measured rows are this pipeline's scores by each task's published protocol. Rows marked "
             '<span class="badge">published</span> are the papers\' numbers on the real datasets with full '
             "schedules: they compare with the paper profile only, never with the demo's tiny models.</p>"]
    if seeds is not None and pd.notna(seeds) and seeds > 1:
        parts.append(f'<p class="note">Each cell ran up to {int(seeds)} training seeds. The intervals are 95% '
                     "two-level bootstrap intervals: the seeds are resampled, then the evaluation images within each "
                     "resampled seed, so they cover training noise as well as the choice of images. <b>better</b> / "
                     "<b>worse</b>: the interval excludes 0; <b>not distinguishable</b>: it holds 0. A cell trained "
                     f"once gets none (&ldquo;{html.escape(ONE_SEED)}&rdquo;). With few seeds the interval is coarse "
                     "and on the narrow side (resampling 3 seeds sees at most 3 distinct values): more seeds make the "
                     "verdicts firmer.</p>")  # fmt: skip
    else:
        parts.append('<p class="note">Each cell was trained once (one seed). Its interval is a 95% paired bootstrap '
                     "interval over the evaluation images: it covers which images were chosen, not training noise, "
                     "and another seed can move a cell by as much as the gaps between cells. So no cell is called "
                     "better or worse here. To get verdicts, train every cell with several seeds "
                     "(<code>seeds: [0, 1, 2]</code> in params.yaml): the intervals then resample seeds, then images "
                     "within each seed.</p>")  # fmt: skip
    parts.append('<p>In each ranking the best value of a column is marked <span style="color:#2a7a2a">&#9733;'
                 "</span>.</p>")
    return "\n".join(parts)


# Each task's subsections, in page order: (anchor suffix, heading); the contents list them all.
SECTIONS = (("ranking", "Ranking"), ("scratch", "Segmentation checkpoint against scratch"),
            ("grid", "PSNR (dB) / SSIM by model and cell"),
            ("figures", "Compared with the floor, the best baseline and the published numbers"),
            ("curves", "Training curves"), ("crops", "Crops"))  # fmt: skip


def contents(tasks: list[str]) -> str:
    items = ['<li><a href="#reading">How to read this page</a></li>']
    for task in tasks:
        t = html.escape(task)
        sub = "".join(f'<li><a href="#{t}-{key}">{html.escape(title)}</a></li>' for key, title in SECTIONS)
        items.append(f'<li><a href="#{t}">{t}</a><ol>{sub}</ol></li>')
    items.append('<li><a href="#all-rows">All rows</a></li>')
    return f'<nav class="toc" id="contents"><h2>Contents</h2><ol>{"".join(items)}</ol></nav>'


def _comparison(table: pd.DataFrame, task: str) -> str:
    fig = comparison_figure(table, task)
    if fig is None:
        return ""
    return (f'<figure class="plot">{_img(png(fig), f"{task} comparison")}<figcaption>{task}: (a) gain over the '
            "identity floor and (b) difference to the best baseline, dots with 95% interval bars and their values, "
            "cells ranked as in the table; (c) the published numbers, on their own axis: real data and full "
            "schedules.</figcaption></figure>")  # fmt: skip


def _curves(runs: Path, task: str) -> str:
    return "".join(f'<figure class="plot">{_img(data, f"{task} {what}")}<figcaption>{task}: {what}, one panel per '
                   "model on one y-range; smoothed, raw values faint</figcaption></figure>"
                   for what, data in curve_figures(runs, task))  # fmt: skip


def task_section(table: pd.DataFrame, task: str, runs: Path, evals: Path) -> list[str]:
    """The task's heading, then each of SECTIONS with its anchor (an empty one says so)."""
    bodies = {"ranking": ranking_table(table, task), "scratch": scratch_table(table, task),
              "grid": score_table(table, task),
              "figures": _comparison(table, task), "curves": _curves(runs, task),
              "crops": crops_section(table, evals, task)}  # fmt: skip
    t = html.escape(task)
    parts = [f'<h2 id="{t}">{t}</h2>']
    for key, title in SECTIONS:
        parts += [f'<h3 id="{t}-{key}">{html.escape(title)}</h3>', bodies[key] or '<p class="sub">nothing to show</p>']
    return parts


def build_report(table_path: Path, out: Path, *, runs: Path = Path("runs"), evals: Path = Path("results/eval"),
                 meta: dict | None = None, now: dt.datetime | None = None,
                 tasks: list[str] | None = None) -> Path:  # fmt: skip
    """Write the report for results/table.csv; `meta`: profile, git_revision, params_hash (shown on top);
    `tasks`: their order (default: the table's, which aggregate writes in params order)."""
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
    for col in ("cell", "baseline", "pretrain", "vs_identity_verdict", "vs_baseline_verdict"):
        if col not in table.columns:
            table[col] = None  # a table from before these columns: shown without them
    order = [t for t in (tasks or []) if t in set(table["task"])]
    order += [t for t in dict.fromkeys(table["task"]) if t not in order]
    meta = dict(meta or {})
    when = (now or dt.datetime.now(dt.UTC)).strftime("%Y-%m-%d %H:%M UTC")
    facts = " · ".join(f"{k.replace('_', ' ')} <code>{html.escape(str(meta[k]))}</code>"
                       for k in ("profile", "git_revision", "params_hash") if k in meta)  # fmt: skip
    parts = ["<h1>restorebench report</h1>", f'<p class="meta" id="meta">{facts} · built {when}</p>',
             contents(order), '<h2 id="reading">How to read this page</h2>', reading_note(table)]
    for task in order:
        parts += task_section(table, task, runs, evals)
    parts += ['<h2 id="all-rows">All rows</h2>', full_table(table)]
    page = ("<!doctype html><html lang='en'><head><meta charset='utf-8'><title>restorebench report</title>"
            f"<style>{CSS}</style></head><body>" + "\n".join(parts) + "</body></html>\n")  # fmt: skip
    io.write_text(out, page)
    return out
