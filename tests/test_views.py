"""DVC's own views of a results tree: `dvc plots show` draws one chart per family (per task val/psnr and loss,
pretraining, the table's cells) in headless Chromium with no network, `dvc metrics show` is one row per cell
within 120 columns, and `restorebench.views.compare` orders `dvc metrics diff` by task, model and cell.

A throwaway git + DVC repo holds the project's params.yaml (the demo grid), a hand-written dvc.yaml made of
restorebench.views' sections only, the project's .dvc/config and .dvc/plots, and the files the stages would
write, from the real writers (evaluate.write_results, aggregate) and dvclive-style curves."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
import yaml
from PIL import Image

from restorebench import pipeline, views
from restorebench.aggregate import build_table, write_outputs
from tests.helpers.project import copy_project, git_commit, git_init, run, set_params
from tests.helpers.results import write_cell, write_curves
from tests.test_report import _chromium, _headless

# after `load` and a moment for Vega to draw: per chart div, what it drew, as JSON in <pre id="__check">
PROBE = """<script>
(function(){var errs=[];var oe=console.error;console.error=function(){errs.push(Array.from(arguments).join(' '));
oe.apply(console,arguments)};window.addEventListener('error',function(e){errs.push('error: '+(e.message||
(e.target&&(e.target.src||e.target.href))||'?'))},true);window.addEventListener('load',function(){setTimeout(
function(){var charts={};document.querySelectorAll('body > div[id]').forEach(function(d){var svg=d.querySelector(
'svg.marks');charts[d.id]=!svg?null:{lines:Array.from(svg.querySelectorAll('g.mark-line.role-mark path')).filter(function(p){
return (p.getAttribute('d')||'').length>10}).length,symbols:svg.querySelectorAll('g.mark-symbol.role-mark path').length,
legend:Array.from(svg.querySelectorAll('g.role-legend-label text')).map(function(t){return t.textContent}),
title:Array.from(svg.querySelectorAll('g.role-title-text text')).map(function(t){return t.textContent})}});
var pre=document.createElement('pre');pre.id='__check';pre.textContent=JSON.stringify({errors:errs,charts:charts,
external:Array.from(document.querySelectorAll('[src],[href]')).map(function(e){return e.getAttribute('src')||
e.getAttribute('href')}).filter(function(u){return !/^data:|^#/.test(u)})});document.body.appendChild(pre)},3000)})})();
</script>"""
IMAGES = 6


@pytest.fixture(scope="module")
def project(project_root, tmp_path_factory):
    """The repo, committed on main, and its Pipeline: every table cell evaluated, every run's curves."""
    repo = copy_project(project_root, tmp_path_factory.mktemp("views") / "repo",
                        files=("params.yaml", ".dvc/config", ".dvc/plots", ".dvcignore", ".gitignore"))  # fmt: skip
    pipe = pipeline.load(repo / "params.yaml")
    body = {"params": ["params.yaml"], "metrics": views.dvc_metrics(pipe), "plots": views.dvc_plots(pipe)}
    (repo / "dvc.yaml").write_text(yaml.safe_dump(body, sort_keys=False))
    _write_results(repo, pipe)
    (repo / ".dvc/.gitignore").write_text("/config.local\n/tmp\n/cache\n")
    git_init(repo)
    return repo, pipe


def _write_results(repo, pipe, shift: dict | None = None) -> None:
    rng = np.random.default_rng(0)
    floors = {t: 25 + rng.normal(0, 1, IMAGES) for t in pipe.cfg.tasks}
    for n, c in enumerate(pipe.table_cells()):
        gain = 0.0 if c.model == "identity" else 0.5 + 0.05 * n + (shift or {}).get((c.task, c.model, c.name), 0.0)
        write_cell(repo, c.task, c.model, c.name, floors[c.task] + gain, strategy=c.strategy, pretrain=c.pretrain,
                   input_psnr=floors[c.task])  # fmt: skip
        if c.trained and shift is None:
            write_curves(repo / pipeline.finetune_dir(c.task, c.model, c.name),
                         loss=pipe.cfg.train.recipe(c.model, c.task).loss)  # fmt: skip
    for method, task, model in pipe.pretrain_runs() if shift is None else []:
        metrics = repo / pipeline.pretrain_dir(method, task, model) / "dvclive/plots/metrics"
        val = "psnr_mean" if method == "ipt" else "knn_accuracy"
        for name, values in (("train/loss", 2.0 - 0.1 * np.arange(6)), (f"val/{val}", 0.2 + 0.1 * np.arange(6))):
            (metrics / name).parent.mkdir(parents=True, exist_ok=True)
            rows = "".join(f"{5 * (i + 1)}\t{v}\n" for i, v in enumerate(values))
            (metrics / f"{name}.tsv").write_text(f"step\t{name.rpartition('/')[2]}\n{rows}")
    cells = [(c.task, c.model, c.name) for c in pipe.table_cells()]
    table, summary = build_table(repo / "metrics", pipe.cfg.tasks, evals_dir=repo / "results/eval", cells=cells)
    write_outputs(table, summary, repo / "results/table.csv", repo / "metrics/summary.json")


def test_plots_are_one_chart_per_family_over_every_run(project, project_root):
    repo, pipe = project
    plots = {pid: spec for entry in views.dvc_plots(pipe) for pid, spec in entry.items()}
    for task in pipe.cfg.tasks:
        trained = [c for c in pipe.cells() if c.task == task and c.trained]
        val = plots[f"finetune-{task}-val-psnr"]["y"]
        assert val == {f"runs/finetune/{task}/{c.model}/{c.name}/dvclive/plots/metrics/val/psnr.tsv": "psnr"
                       for c in trained}  # fmt: skip
        losses = {pid: spec["y"] for pid, spec in plots.items() if pid.startswith(f"finetune-{task}-loss-")}
        assert sorted(f for files in losses.values() for f in files) == sorted(f.replace("val/psnr", "train/loss")
                                                                             for f in val)  # fmt: skip
        assert set(losses) == {f"finetune-{task}-loss-{pipe.cfg.train.recipe(c.model, task).loss}" for c in trained}
    assert plots["results/table.csv"] | {"title": ""} == {"template": "cells", "title": "", "x": "psnr",
                                                          "x_label": "PSNR (dB)", "y": "model", "y_label": "model"}
    for pid, spec in plots.items():
        assert (project_root / ".dvc/plots" / f"{spec['template']}.json").is_file()
        assert pid == "results/table.csv" or re.fullmatch(r"[a-z][a-z0-9-]*", pid), pid  # an HTML id as is
    # families, not a chart per file: per task the val/psnr chart and one per loss kind, two per pretraining
    # method, the table's
    kinds = {(c.task, pipe.cfg.train.recipe(c.model, c.task).loss) for c in pipe.cells() if c.trained}
    methods = {method for method, _, _ in pipe.pretrain_runs()}
    assert len(plots) == len(pipe.cfg.tasks) + len(kinds) + 2 * len(methods) + 1 == 11
    assert len(plots) < (len(pipe.cells()) + len(pipe.pretrain_runs())) / 2


def test_metrics_are_each_cells_file_by_task_then_params_order(project):
    _, pipe = project
    listed = views.dvc_metrics(pipe)
    # the same files the evaluate stages declare as their metric, none other (summary.json is no metric)
    rules = {"identity": "evaluate_identity", "official": "evaluate_official"}
    declared = {pipeline.outputs(rules.get(c.model, rules.get(c.strategy, "evaluate")), pipe.root, task=c.task,
                                 model=c.model, cell=c.name)["metrics"].path for c in pipe.table_cells()}  # fmt: skip
    assert sorted(listed) == sorted(declared)
    assert "metrics/summary.json" not in listed
    tasks = [p.split("/")[2] for p in listed]
    assert tasks == sorted(tasks, key=pipe.cfg.tasks.index)
    for task in pipe.cfg.tasks:
        assert listed[tasks.index(task)] == f"metrics/finetune/{task}/identity/none.json"  # each task's floor first


@pytest.mark.slow
def test_plots_show_draws_every_chart_offline_in_chromium(project, tmp_path):
    repo, pipe = project
    exe = _chromium()
    run(["dvc", "plots", "show", "-o", str(tmp_path / "out")], repo)
    page = (tmp_path / "out/index.html").read_text()
    assert "cdn.jsdelivr" not in page and not re.search(r"<script[^>]+src=", page)
    assert 'vegaEmbed("#' in page or "vegaEmbed('#" in page
    probed = tmp_path / "out/probed.html"
    probed.write_text(page.replace("<head>", "<head>" + PROBE, 1))
    # a dead proxy: any request leaving the file fails (and the probe records it)
    out = _headless(exe, "--proxy-server=127.0.0.1:9", "--dump-dom", probed.as_uri())
    found = re.search(r'<pre id="__check">(.*?)</pre>', out.stdout, re.S)
    assert found, f"the page did not finish loading:\n{out.stdout[-1000:]}\n{out.stderr[-1000:]}"
    check = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    assert check["errors"] == [] and check["external"] == [], check
    charts = check["charts"]
    plots = {pid: spec for entry in views.dvc_plots(pipe) for pid, spec in entry.items()}
    assert len(charts) == len(plots), sorted(charts)
    for pid, spec in plots.items():
        chart = charts[pid.replace("/", "_").replace(".", "_")]
        assert chart is not None, f"{pid}: nothing drawn"
        if pid == "results/table.csv":  # a dot per measured row (each task's floor and grid)
            assert chart["symbols"] == len(pipe.table_cells()), chart
            assert {c.name for c in pipe.table_cells()} <= set(chart["legend"]), chart  # coloured by cell
            continue
        assert chart["lines"] == len(spec["y"]), (pid, chart)  # one drawn line per run, none empty
        runs = [f.split("/dvclive/")[0] for f in spec["y"]]
        labels = [label for label in chart["legend"] if label != "workspace"]
        assert len(labels) == len(runs) and all(any(r.endswith(lab) for r in runs) for lab in labels), (pid, labels)
    shot = tmp_path / "plots.png"
    _headless(exe, "--proxy-server=127.0.0.1:9", "--window-size=1200,1600", f"--screenshot={shot}", probed.as_uri())
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    assert (pixels[:800] < 128).mean() > 0.005  # curves, axes and text drawn, not a blank page


@pytest.mark.slow
def test_metrics_show_is_a_row_per_cell_within_120_columns(project):
    repo, pipe = project
    shown = run(["dvc", "metrics", "show"], repo).splitlines()
    assert max(len(line) for line in shown) <= 120, max(shown, key=len)
    assert shown[0].split() == ["Path", "gain", "psnr", "ssim_basicsr", "ssim_matlab3d"]
    assert [line.split()[0] for line in shown[1:]] == views.dvc_metrics(pipe)
    first = dict(zip(shown[0].split()[1:], map(float, shown[2].split()[1:]), strict=True))  # a cell after the floor
    data = json.loads((repo / views.dvc_metrics(pipe)[1]).read_text())
    assert first == pytest.approx({k: data[k] for k in first}, abs=1e-4)
    assert float(shown[1].split()[1]) == 0.0  # the floor's gain over itself


@pytest.mark.slow
def test_compare_and_experiments_order_cells_by_task_model_and_cell(project, tmp_path):
    repo, pipe = project
    branch = tmp_path / "branch"
    shutil.copytree(repo, branch)
    run(["git", "checkout", "-q", "-b", "exp"], branch)
    moved = [c for c in pipe.cells() if c.trained][::-7][:4]  # cells of both tasks, in reverse params order
    _write_results(branch, pipe, shift={(c.task, c.model, c.name): 0.25 for c in moved})
    set_params(branch / "params.yaml", **{"profiles.demo.train.models.nafnet.lr": 0.004})
    git_commit(branch, "four cells moved")
    text = views.compare(pipe, "main", "exp", cwd=branch)
    assert run(["restorebench", "compare", "main", "exp"], branch) == text  # the CLI's command prints the same
    lines = text.splitlines()
    assert lines[0].split() == ["task", "model", "cell", "metric", "main", "exp", "change"]
    rows = [line.split() for line in lines[1:]]
    order = [(c.task, c.model, c.name) for c in pipe.table_cells()]
    cells = list(dict.fromkeys(tuple(r[:3]) for r in rows))
    assert sorted(cells, key=lambda c: (pipe.cfg.tasks.index(c[0]), order.index(c))) == cells
    assert set(cells) == {(c.task, c.model, c.name) for c in moved}
    diff = json.loads(run(["dvc", "metrics", "diff", "main", "exp", "--json"], branch))
    for task, model, cell, metric, old, new, change in rows:
        ref = diff[f"metrics/finetune/{task}/{model}/{cell}.json"][metric]
        assert (float(old), float(new), float(change)) == pytest.approx((ref["old"], ref["new"], ref["diff"]), abs=1e-4)
    gains = {tuple(r[:3]): float(r[6]) for r in rows if r[3] == "gain"}
    assert gains == pytest.approx(dict.fromkeys(gains, 0.25), abs=1e-4)
    # the experiments' view: the changed parameter, then the moved cells' PSNR, a narrow column per revision
    shown = json.loads(run(["dvc", "exp", "show", "-a", "--json"], branch))
    table = views.experiments(pipe, shown).splitlines()
    assert run(["restorebench", "experiments", "-a"], branch).splitlines() == table
    assert max(len(line) for line in table) < 200
    head, param, blank, cells_head, *cell_lines = table
    assert head.split() == ["parameter", "workspace", "exp", "main"] and blank == ""
    lr = pipe.cfg.train.recipe("nafnet").lr
    assert param.split() == ["profiles.demo.train.models.nafnet.lr", "0.004", "0.004", str(lr)]
    assert [tuple(line.split()[:3]) for line in cell_lines] == cells
    for line in cell_lines:
        task, model, cell, *values = line.split()
        new = json.loads((branch / f"metrics/finetune/{task}/{model}/{cell}.json").read_text())["psnr"]
        old = json.loads((repo / f"metrics/finetune/{task}/{model}/{cell}.json").read_text())["psnr"]
        assert [float(v) for v in values] == pytest.approx([new, new, old], abs=1e-4)


def _tarball(folder, name: str, js: str):
    import io
    import tarfile

    path = folder / f"{name}.tgz"
    with tarfile.open(path, "w:gz") as tar:
        data = js.encode()
        info = tarfile.TarInfo(f"package/{views._BUILDS[name.rpartition('-')[0]]}")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return path


def test_page_inlines_the_three_builds_in_load_order_and_dvc_fills_it(tmp_path, project_root):
    from dvc_render.html import HTML

    tgz = [_tarball(tmp_path, n, f"window.build{i}=1;\n//# sourceMappingURL=x.map")
           for i, n in enumerate(("vega-embed-6.1.0", "vega-5.2.0", "vega-lite-5.3.0"))]  # given out of order
    page = views.page(tgz)
    assert [m.group(1) for m in re.finditer(r"<script>/\* (\S+ \S+) \*/", page)] == [
        "vega 5.2.0", "vega-lite 5.3.0", "vega-embed 6.1.0"]  # fmt: skip
    assert "sourceMappingURL" not in page
    filled = HTML(page).with_element('<div id="x"></div>').embed()  # as dvc_render fills a template
    assert '<div id="x"></div>' in filled and "{plot_divs}" not in filled and "cdn" not in filled
    bad = _tarball(tmp_path, "vega-5.2.1", "var s='</script>';")
    with pytest.raises(SystemExit, match="end the script"):
        views.page([bad, *tgz[::2]])
    # the shipped page: the three builds named, no placeholder but DVC's, the licence beside it
    shipped = (project_root / views.PAGE).read_text()
    assert re.findall(r"<script>/\* (\S+) \S+ \*/", shipped) == ["vega", "vega-lite", "vega-embed"]
    assert set(re.findall(r"\{(plot_divs|scripts|refresh_tag)\}", shipped)) == {"plot_divs", "refresh_tag"}
    assert "BSD-3-Clause" in (project_root / ".dvc/plots/LICENSE-vega.txt").read_text()
    assert views.DVC_CONFIG.strip().splitlines()[1].strip() in (project_root / ".dvc/config").read_text()

