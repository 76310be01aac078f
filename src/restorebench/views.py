"""What DVC's own views show: the top-level `plots:` and `metrics:` sections of dvc.yaml, and the offline page
`dvc plots show` fills. Torch-free; the dvc.yaml writer (restorebench.pipeline) calls these.

    plots:   dvc_plots(pipe)      one chart per family: per task val/psnr and training loss with every cell as
                                  a line; pretraining loss and validation; the results table's cells per task
    metrics: dvc_metrics(pipe)    each cell's metrics file, in task, model, cell order: one
                                  `dvc metrics show` row per cell (psnr, ssim_matlab3d, ssim_basicsr, gain)

The charts use the Vega-Lite templates in .dvc/plots/ (DVC's template folder: `template: curves` finds
.dvc/plots/curves.json), and the page the HTML template .dvc/plots/page.html, which .dvc/config names
(`plots.html_template`). That page inlines Vega, Vega-Lite and Vega-Embed (BSD-3-Clause, .dvc/plots/
LICENSE-vega.txt) in place of the CDN scripts DVC's default page loads (dvc_render 1.0.2, html.py / vega.py),
so the charts draw with no network. `python -m restorebench.views page vega-5.33.1.tgz vega-lite-5.23.0.tgz
vega-embed-6.29.0.tgz > .dvc/plots/page.html` rebuilds it from `npm pack` tarballs.
"""

from __future__ import annotations

import re
import sys
import tarfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from restorebench.pipeline import TABLE, finetune_dir, metrics_json, pretrain_dir

if TYPE_CHECKING:
    from restorebench.pipeline import Pipeline

TEMPLATES_DIR = ".dvc/plots"  # DVC's template folder (dvc/repo/plots/__init__.py, templates_dir)
CURVES = "curves"  # .dvc/plots/curves.json: one line per run, coloured by run, dashed by revision
CELLS = "cells"  # .dvc/plots/cells.json: the table's PSNR per model (one dot per cell), a panel per task
PAGE = f"{TEMPLATES_DIR}/page.html"
# .dvc/config's line: DVC reads plots.html_template relative to the .dvc folder (dvc/commands/plots.py)
DVC_CONFIG = "[plots]\n    html_template = plots/page.html\n"


def _curves(run: str, metric: str) -> str:
    """A dvclive table of `run`: metric "val/psnr" -> {run}/dvclive/plots/metrics/val/psnr.tsv (step, value)."""
    return f"{run}/dvclive/plots/metrics/{metric}.tsv"


def _plot(plot_id: str, title: str, files: dict[str, str], y_label: str) -> dict[str, Any]:
    """One top-level plot: every file's field `files[path]` against step, one line each."""
    return {plot_id: {"template": CURVES, "title": title, "x": "step", "x_label": "step", "y": files,
                      "y_label": y_label}}  # fmt: skip


def dvc_plots(pipe: Pipeline) -> list[dict[str, Any]]:
    """dvc.yaml's top-level `plots:` for `pipe`: per task (params order) one chart of every trained cell's
    held-out val/psnr (dB) and one of its training loss per loss kind (the active profile's recipes, fixed
    when dvc.yaml is generated, like the grid); pretraining's loss and validation, one chart each per method;
    and the results table's PSNR per model and cell. Ids are HTML ids (DVC's page uses them as such)."""
    plots: list[dict[str, Any]] = []
    for task in pipe.cfg.tasks:
        cells = [c for c in pipe.cells() if c.task == task and c.trained]
        if not cells:
            continue
        runs = [finetune_dir(task, c.model, c.name) for c in cells]
        plots.append(_plot(f"finetune-{task}-val-psnr", f"{task}: held-out val/psnr per cell",
                           {_curves(r, "val/psnr"): "psnr" for r in runs}, "val/psnr (dB)"))  # fmt: skip
        # one chart per loss kind: NAFNet's PSNR loss (about -30) and L1 (about 0.05) share no axis
        kinds: dict[str, list[str]] = {}
        for c in cells:
            kinds.setdefault(pipe.cfg.train.recipe(c.model, task).loss, []).append(finetune_dir(task, c.model, c.name))
        for kind, kind_runs in kinds.items():
            plots.append(_plot(f"finetune-{task}-loss-{kind}", f"{task}: training loss ({kind}) per cell",
                               {_curves(r, "train/loss"): "loss" for r in kind_runs}, f"{kind} loss"))  # fmt: skip
    pretraining = pipe.pretrain_runs()
    for method, val, label in (("ipt", "val/psnr_mean", "val/psnr, mean over IPT's tasks (dB)"),
                               ("dcpt", "val/knn_accuracy", "val/k-NN accuracy of the degradation class")):  # fmt: skip
        runs = [pretrain_dir(m, t, x) for m, t, x in pretraining if m == method]
        if not runs:
            continue
        plots.append(_plot(f"pretrain-{method}-loss", f"{method} pretraining: loss per run",
                           {_curves(r, "train/loss"): "loss" for r in runs}, "loss"))  # fmt: skip
        plots.append(_plot(f"pretrain-{method}-val", f"{method} pretraining: {val} per run",
                           {_curves(r, val): val.rpartition("/")[2] for r in runs}, label))  # fmt: skip
    plots.append({TABLE: {"template": CELLS, "title": "measured PSNR per model and cell",
                          "x": "psnr", "x_label": "PSNR (dB)", "y": "model", "y_label": "model"}})  # fmt: skip
    return plots


def dvc_metrics(pipe: Pipeline) -> list[str]:
    """dvc.yaml's top-level `metrics:`: each table cell's metrics file (the identity floor first, then the grid
    in params order, per task), so `dvc metrics show` gives one row per cell: psnr, ssim_matlab3d,
    ssim_basicsr and gain (dB over the degraded input, evaluate.METRIC_KEYS). summary.json is not one: its
    keys would become columns of every row."""
    return [metrics_json(c.task, c.model, c.name) for c in pipe.table_cells()]


def metric_order(pipe: Pipeline) -> dict[str, int]:
    """Metrics file -> its place in task, model, cell order (params order, the floor first): the order to show
    `dvc metrics diff` rows in, which DVC itself sorts by path."""
    return {path: n for n, path in enumerate(dvc_metrics(pipe))}


# ---------------------------------------------------------------------------------------------- the page

PAGE_SHELL = """<!DOCTYPE html>
<!-- GENERATED by `python -m restorebench.views page {sources}`:
     DVC's `dvc plots show` page (.dvc/config: plots.html_template) with {names} inlined, so it draws offline.
     Vega, Vega-Lite and Vega-Embed: BSD-3-Clause, University of Washington Interactive Data Lab
     (.dvc/plots/LICENSE-vega.txt). DVC fills the plot_divs placeholder below; the page has no scripts
     placeholder, so DVC's CDN script tags are never added. -->
<html>
<head>
{refresh}
<meta charset="utf-8">
<title>DVC plots</title>
<style>
body {{ font-family: sans-serif; margin: 16px; }}
body > div {{ margin: 0 0 28px; }}
</style>
{scripts}
</head>
<body>
{plots}
</body>
</html>
"""
_BUILDS = {"vega": "build/vega.min.js", "vega-lite": "build/vega-lite.min.js", "vega-embed": "build/vega-embed.min.js"}


def page(tarballs: list[Path]) -> str:
    """The offline page from `npm pack` tarballs of vega, vega-lite and vega-embed (in that load order): each
    minified build inline, its source map reference dropped (nothing to fetch)."""
    found: dict[str, tuple[str, str]] = {}
    for tgz in tarballs:
        name, _, version = Path(tgz).name.removesuffix(".tgz").rpartition("-")
        if name not in _BUILDS:
            raise SystemExit(f"error: {tgz}: not one of {sorted(_BUILDS)} (an `npm pack` tarball, name-version.tgz)")
        with tarfile.open(tgz) as tar:
            member = tar.extractfile(f"package/{_BUILDS[name]}")
            js = member.read().decode() if member else ""
        js = re.sub(r"\n//# sourceMappingURL=\S+\s*$", "\n", js)
        if "</script" in js.lower() or re.search(r"\{(plot_divs|scripts|refresh_tag)\}", js):
            raise SystemExit(f"error: {tgz}: its build holds text that would end the script or a DVC placeholder")
        found[name] = (version, js)
    missing = [n for n in _BUILDS if n not in found]
    if missing:
        raise SystemExit(f"error: missing tarball(s) for {missing} (npm pack vega@5 vega-lite@5 vega-embed@6)")
    scripts = "\n".join(f"<script>/* {n} {found[n][0]} */\n{found[n][1]}</script>" for n in _BUILDS)
    names = ", ".join(f"{n} {found[n][0]}" for n in _BUILDS)
    sources = " ".join(Path(t).name for t in tarballs)
    return PAGE_SHELL.format(sources=sources, names=names, scripts=scripts, refresh="{refresh_tag}",
                             plots="{plot_divs}")  # fmt: skip


if __name__ == "__main__":  # python -m restorebench.views page TARBALL... > .dvc/plots/page.html
    if len(sys.argv) < 2 or sys.argv[1] != "page":
        raise SystemExit("usage: python -m restorebench.views page vega-X.tgz vega-lite-Y.tgz vega-embed-Z.tgz")
    sys.stdout.write(page([Path(p) for p in sys.argv[2:]]))
