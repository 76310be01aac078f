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
    cells = pipe.table_cells()
    return [metrics_json(c.task, c.model, c.name) for t in pipe.cfg.tasks for c in cells if c.task == t]


# ---------------------------------------------------------------------------------------------- compare

DIFF_HEADER = ("task", "model", "cell", "metric")


def diff_rows(pipe: Pipeline, diff: dict[str, dict[str, dict]]) -> list[tuple]:
    """`dvc metrics diff --json`'s {path: {metric: {old, new, diff}}} as rows (task, model, cell, metric, old,
    new, change) in dvc_metrics' order (task, then the floor and the grid in params order), metrics by name;
    a file outside the current grid (a cell only the other revision has) follows, by path. DVC prints the
    files in set order, a different one each run (dvc/utils/diff.py, 3.67)."""
    place = {path: n for n, path in enumerate(dvc_metrics(pipe))}
    rows = []
    for path in sorted(diff, key=lambda p: (place.get(p, len(place)), p)):
        parts = Path(path).with_suffix("").parts
        who = tuple(parts[-3:]) if len(parts) >= 3 and path.startswith("metrics/finetune/") else (path, "", "")
        for metric, change in sorted(diff[path].items()):
            rows.append((*who, metric, change.get("old"), change.get("new"), change.get("diff")))
    return rows


def format_rows(rows: list[tuple], a_rev: str, b_rev: str) -> str:
    """Rows of diff_rows as an aligned text table (values to 4 decimals; "-" where a revision lacks one)."""

    def text(v: object) -> str:
        return "-" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)

    table = [(*DIFF_HEADER, a_rev, b_rev, "change")] + [tuple(text(v) for v in r) for r in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    lines = ["  ".join(c.rjust(w) if i >= len(DIFF_HEADER) else c.ljust(w)
                       for i, (c, w) in enumerate(zip(r, widths, strict=True))).rstrip() for r in table]  # fmt: skip
    return "\n".join(lines) + "\n"


def compare(pipe: Pipeline, a_rev: str, b_rev: str = "workspace", *, cwd: Path | None = None) -> str:
    """`dvc metrics diff a_rev b_rev` ordered by task, model and cell (diff_rows), as a text table."""
    import json
    import subprocess

    from restorebench.errors import RestorebenchError

    cmd = ["dvc", "metrics", "diff", a_rev, b_rev, "--json"]
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RestorebenchError(" ".join(cmd), (done.stderr.strip().splitlines() or ["failed"])[-1],
                                "check both revisions exist (git branch -a, dvc exp list)")  # fmt: skip
    diff = json.loads(done.stdout or "{}")
    return format_rows(diff_rows(pipe, diff.get("diff", diff)), a_rev, b_rev)


def _flat(node: object, prefix: str = "") -> dict[str, object]:
    if isinstance(node, dict):
        return {k: v for key, value in node.items() for k, v in _flat(value, f"{prefix}{key}.").items()}
    return {prefix.rstrip("."): node}


def experiment_columns(shown: list[dict]) -> list[tuple[str, dict, dict]]:
    """(name, flat params, {metrics path: data}) of every revision in `dvc exp show --json` (its baselines and
    their experiments, in DVC's order); a revision is named by its experiment or branch name, else its sha."""
    out = []

    def add(entry: dict) -> None:
        data = entry.get("data") or {}
        params = {f"{path}:{k}" if path != "params.yaml" else k: v for path, item in (data.get("params") or {}).items()
                  for k, v in _flat(item.get("data") or {}).items()}  # fmt: skip
        metrics = {path: item.get("data") or {} for path, item in (data.get("metrics") or {}).items()}
        rev = str(entry.get("rev", "?"))
        out.append((entry.get("name") or (rev[:7] if re.fullmatch(r"[0-9a-f]{40}", rev) else rev), params, metrics))

    for baseline in shown:
        add(baseline)
        for exp in baseline.get("experiments") or []:
            for rev in exp.get("revs") or []:
                add(rev)
    return out


def experiments(pipe: Pipeline, shown: list[dict], *, metric: str = "psnr", only_changed: bool = True) -> str:
    """`dvc exp show --json` turned on its side: a column per revision, a row per changed parameter, then a
    row per cell (task, model, cell in dvc_metrics' order) with its `metric`. DVC's own table heads each
    metric column with its file's path (45+ characters, never wrapped: dvc/commands/experiments/show.py, 3.67),
    so ten cells' PSNR take 500 columns there; here each revision adds one narrow column. `only_changed`:
    the parameters and cells whose value differs between the revisions shown (as --only-changed)."""
    cols = experiment_columns(shown)
    names = [name for name, _, _ in cols]

    def text(v: object) -> str:
        return "-" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)

    keys = list(dict.fromkeys(k for _, params, _ in cols for k in params))
    param_rows = [(k, ["-" if k not in params else str(params[k]) for _, params, _ in cols]) for k in keys]
    paths = dvc_metrics(pipe)
    parts = [Path(p).with_suffix("").parts[-3:] for p in paths]
    part_w = [max(len(x[i]) for x in parts) for i in range(3)]
    cell_rows = []
    for path, who in zip(paths, parts, strict=True):
        label = "  ".join(x.ljust(w) for x, w in zip(who, part_w, strict=True))
        cell_rows.append((label, [text(metrics.get(path, {}).get(metric)) for _, _, metrics in cols]))
    if only_changed:
        param_rows = [r for r in param_rows if len(set(r[1])) > 1]
        cell_rows = [r for r in cell_rows if len(set(r[1])) > 1]
    label_w = max([len("parameter"), *(len(k) for k, _ in param_rows + cell_rows)])
    widths = [max([len(n), *(len(v[i]) for _, v in param_rows + cell_rows)]) for i, n in enumerate(names)]

    def line(label: str, values: list[str]) -> str:
        cells = (v.rjust(w) for v, w in zip(values, widths, strict=True))
        return f"{label.ljust(label_w)}  " + "  ".join(cells)

    out = [line("parameter", names)] + [line(k, v) for k, v in param_rows]
    head = "  ".join(x.ljust(w) for x, w in zip(("task", "model", f"cell: {metric}"), part_w, strict=True))
    out += ["", line(head, names)] + [line(k, v) for k, v in cell_rows]
    return "\n".join(x.rstrip() for x in out) + "\n"


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


USAGE = """usage: python -m restorebench.views page vega-X.tgz vega-lite-Y.tgz vega-embed-Z.tgz > .dvc/plots/page.html
       python -m restorebench.views compare A [B]   (dvc metrics diff A B, by task, model and cell)
       python -m restorebench.views experiments [DVC EXP SHOW OPTIONS]   (changed params and cells' PSNR)"""

if __name__ == "__main__":
    if sys.argv[1:2] == ["page"]:
        sys.stdout.write(page([Path(p) for p in sys.argv[2:]]))
    elif sys.argv[1:2] == ["compare"] and 3 <= len(sys.argv) <= 4:
        from restorebench.pipeline import load

        sys.stdout.write(compare(load("params.yaml"), *sys.argv[2:]))
    elif sys.argv[1:2] == ["experiments"]:  # extra arguments go to `dvc exp show` (e.g. -a, --rev main)
        import json
        import subprocess

        from restorebench.pipeline import load

        shown = subprocess.run(["dvc", "exp", "show", "--json", *sys.argv[2:]], capture_output=True, text=True)
        if shown.returncode != 0:
            raise SystemExit(shown.stderr.strip() or "error: dvc exp show failed")
        sys.stdout.write(experiments(load("params.yaml"), json.loads(shown.stdout)))
    else:
        raise SystemExit(USAGE)
