"""The report in a real browser: headless Chromium (Debian's `chromium`; .ci/run installs it) renders
results/report.html built by the CLI from a synthetic evaluated grid: no console errors, no broken images, no
request leaves the file; a table of contents whose links resolve; tasks in params order; each task's cells
ranked with the best of each column marked; no two elements drawn over each other; the wide table scrolling
inside its box with a sticky header; one seed shown without verdicts, several seeds with them. The figures are
checked on their matplotlib objects: legends inside the figure, one y-range per figure, no colour repeated in
a panel, the published numbers on a panel of their own."""

from __future__ import annotations

import html as _html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.transforms import Bbox
from PIL import Image
from typer.testing import CliRunner

from restorebench.aggregate import build_table, write_outputs
from restorebench.cli import app
from restorebench.figures import RAW_ALPHA, comparison_figure, panels_figure
from restorebench.report import build_report
from tests.helpers.results import GRID_OVERRIDES, write_cell, write_grid

# Runs first in <head>: records console errors, uncaught errors and failed loads; after `load`, measures the
# layout and writes what it found into <pre id="__check"> for --dump-dom to print: images (and broken ones),
# external references, table-of-contents links without a target, the h2 ids in page order, pairs of
# elements drawn over each other, the full table's box (its header's position after scrolling the box).
PROBE = """<script>
(function(){var errs=[];var oe=console.error;console.error=function(){errs.push(Array.from(arguments).join(' '));
oe.apply(console,arguments)};window.addEventListener('error',function(e){errs.push('error: '+(e.message||
(e.target&&(e.target.src||e.target.href))||'?'))},true);window.addEventListener('load',function(){
var imgs=Array.from(document.images);var broken=imgs.filter(function(i){return !i.complete||i.naturalWidth===0})
.map(function(i){return i.alt});
var toc=Array.from(document.querySelectorAll('nav.toc a')).map(function(a){return a.getAttribute('href')});
var dangling=toc.filter(function(h){return h[0]!=='#'||!document.getElementById(h.slice(1))});
var els=Array.from(document.querySelectorAll('h1,h2,h3,p,nav,figure.plot,div.wide,div.crops,.triplet figure'));
var name=function(e){return e.tagName+(e.id?'#'+e.id:'')+(e.className?'.'+e.className:'')+' '+
(e.textContent||'').slice(0,40)};var overlaps=[];for(var i=0;i<els.length;i++){for(var j=i+1;j<els.length;j++){
var a=els[i],b=els[j];if(a.contains(b)||b.contains(a))continue;var r=a.getBoundingClientRect(),q=b
.getBoundingClientRect();var w=Math.min(r.right,q.right)-Math.max(r.left,q.left),h=Math.min(r.bottom,q.bottom)
-Math.max(r.top,q.top);if(w>1&&h>1)overlaps.push([name(a),name(b)])}}
var box=document.querySelector('table.full').parentElement;var th=box.querySelector('th');
var before=th.getBoundingClientRect().top-box.getBoundingClientRect().top;box.scrollTop=150;box.scrollLeft=100;
var after=th.getBoundingClientRect().top-box.getBoundingClientRect().top;
var pre=document.createElement('pre');pre.id='__check';pre.textContent=JSON.stringify({errors:errs,
images:imgs.length,broken:broken,external:Array.from(document.querySelectorAll('[src],[href]')).map(function(e){
return e.getAttribute('src')||e.getAttribute('href')}).filter(function(u){return !/^data:|^#/.test(u)}),
toc:toc,dangling:dangling,h2:Array.from(document.querySelectorAll('h2[id]')).map(function(h){return h.id}),
overlaps:overlaps,sticky:{position:getComputedStyle(th).position,overflowX:getComputedStyle(box).overflowX,
scrolled:box.scrollTop,scrolledLeft:box.scrollLeft,before:before,after:after,
page_wider_than_window:document.documentElement.scrollWidth>window.innerWidth}});
document.body.appendChild(pre)})})();
</script>"""


def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed; .ci/run installs Debian's `chromium` package")
        pytest.skip("chromium not installed (apt-get install chromium)")
    return exe


def _headless(exe: str, *args: str) -> subprocess.CompletedProcess:
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
           "--no-first-run", "--disable-extensions", "--virtual-time-budget=10000", *args]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def report(tmp_path_factory, project_root) -> Path:
    root = tmp_path_factory.mktemp("report")
    write_grid(root)
    cwd = os.getcwd()
    os.chdir(root)
    try:
        runner = CliRunner()
        for stage in ("aggregate", "report"):
            sets = [arg for item in GRID_OVERRIDES for arg in ("-S", item)]
            result = runner.invoke(app, ["--params", str(project_root / "params.yaml"), *sets, stage])
            assert result.exit_code == 0, result.output
    finally:
        os.chdir(cwd)
    return root / "results" / "report.html"


def _probe(exe: str, page: Path, tmp_path: Path) -> tuple[dict, str]:
    """(what PROBE measured, the DOM) of `page` in a 1280 x 500 window (so the full table's box, at most 80% of
    the window's height, scrolls vertically too)."""
    probed = tmp_path / "probed.html"
    probed.write_text(page.read_text().replace("<head>", "<head>" + PROBE, 1))
    out = _headless(exe, "--window-size=1280,500", "--dump-dom", probed.as_uri())
    assert out.returncode == 0, out.stderr[-2000:]
    found = re.search(r'<pre id="__check">(.*?)</pre>', out.stdout, re.S)
    assert found, f"the page did not finish loading:\n{out.stdout[-1000:]}\n{out.stderr[-1000:]}"
    return json.loads(_html.unescape(found.group(1))), out.stdout


def _ranking_rows(page: str, task: str) -> list[dict]:
    """The ranking table of `task` as [{psnr, name, best: [column classes marked best]}], in page order."""
    section = page[page.index(f'<h2 id="{task}">') :]
    table = section[section.index('<table class="ranking">') : section.index("</table>")]
    rows = []
    for tr in re.findall(r'<tr data-psnr="[^"]+">(.*?)</tr>', table, re.S):
        rows.append({"psnr": float(re.search(r'<td class="psnr[^"]*">([\d.]+)', tr).group(1)),
                     "name": re.search(r'<td class="name">([^<]+)</td>', tr).group(1),
                     "best": re.findall(r'<td class="(\w+) best">', tr)})  # fmt: skip
    return rows


def test_report_renders_in_chromium_without_errors_or_overlaps(report, tmp_path):
    check, dom = _probe(_chromium(), report, tmp_path)
    assert check["errors"] == [], check["errors"]
    assert check["broken"] == [], check["broken"]
    assert check["external"] == [], "the page must be self-contained"
    # a table of contents whose every link lands on the page; tasks in params order (denoise, then deblur)
    assert check["dangling"] == [] and "#denoise-ranking" in check["toc"] and "#deblur-crops" in check["toc"]
    assert check["h2"] == ["reading", "denoise", "deblur", "all-rows"]
    assert check["overlaps"] == [], check["overlaps"][:5]
    # the wide table scrolls inside its box, the page does not; its header stays at the box's top
    sticky = check["sticky"]
    assert sticky["position"] == "sticky" and sticky["overflowX"] == "auto"
    assert sticky["scrolled"] > 0 and sticky["scrolledLeft"] > 0, "the full table's box does not scroll both ways"
    assert abs(sticky["after"] - sticky["before"]) <= 1, "the header scrolled away with the rows"
    assert not sticky["page_wider_than_window"]
    assert dom.count('<table class="ranking">') == 2 and dom.count('<table class="scores">') == 2
    assert dom.count('class="badge">published') >= 10  # every published row marked
    # per task: the comparison figure, val/psnr, one loss figure per loss kind (NAFNet's psnr, the others' l1)
    assert dom.count('<figure class="plot">') == 2 * 4
    # a few crops per task: 2 images x (input, best = best baseline, best of the other models, lowest, ground
    # truth), each output labelled with its PSNR
    assert check["images"] == 2 * 4 + 2 * 2 * 5
    captions = re.findall(r"<figcaption>([^<]*) \(([^)]+)\)<br>[\d.]+ dB</figcaption>", dom)
    assert captions[:3] == [("nafnet/full", "best"), ("swin_upernet/dcpt-full", "best of the other models"),
                            ("swin_upernet/frozen", "lowest")] and len(captions) == 2 * 2 * 3  # fmt: skip
    assert len(re.findall(r"<figcaption>input<br>[\d.]+ dB</figcaption>", dom)) == 4
    assert re.search(r"profile <code>demo</code> · git revision <code>[^<]+</code> · params hash <code>[0-9a-f]{64}", dom)
    assert re.search(r"built \d{4}-\d\d-\d\d \d\d:\d\d UTC", dom)


def test_ranking_lists_cells_best_first_and_marks_each_columns_best(report):
    page = report.read_text()
    table = pd.read_csv(report.parent / "table.csv")
    for task in ("denoise", "deblur"):
        rows = _ranking_rows(page, task)
        measured = table[(table["task"] == task) & (table["source"] == "measured") & (table["model"] != "identity")]
        assert len(rows) == len(measured) == 6
        assert [r["psnr"] for r in rows] == sorted((r["psnr"] for r in rows), reverse=True)
        top = measured.loc[measured["psnr"].idxmax()]
        assert rows[0]["name"] == f"{top.model}/{top.cell}" == "nafnet/full"  # the fixture's +3 dB cell
        assert "psnr" in rows[0]["best"] and "vs_identity" in rows[0]["best"]
        assert sum(r["best"].count("psnr") for r in rows) == 1  # one mark per column


def test_each_checkpoint_cell_is_set_beside_its_scratch_control(report):
    """The study's question per task: swin_upernet/full (from its checkpoint) against scratch-full."""
    page = report.read_text()
    table = pd.read_csv(report.parent / "table.csv")
    for task in ("denoise", "deblur"):
        section = page[page.index(f'<h3 id="{task}-scratch">') :]
        body = section[: section.index("</table>")]
        (row,) = re.findall(r"<tr><td>swin_upernet</td><td>full</td>(.*?)</tr>", body)
        ckpt, scratch = table.query(f"task == '{task}' and model == 'swin_upernet' and cell in ['full', 'scratch-full']"
                                    ).set_index("cell")["psnr"][["full", "scratch-full"]]  # fmt: skip
        cells = re.findall(r"<td>(.*?)</td>", row)
        assert float(cells[0]) == pytest.approx(ckpt, abs=5e-3) and float(cells[1]) == pytest.approx(scratch, abs=5e-3)
        assert f"{ckpt - scratch:+.3f} dB" in cells[2] and "no verdict: one seed" in cells[3]


def test_one_seed_gives_intervals_but_no_verdict_and_says_why(report):
    page = report.read_text()
    for task in ("denoise", "deblur"):
        section = page[page.index(f'<h2 id="{task}">') :]
        ranking = section[: section.index("</table>")]
        assert "<th>verdict</th>" not in ranking
        assert not re.search(r">(better|worse|not distinguishable)<", ranking)
        assert re.search(r'<span class="pos|neg|">\+[\d.]+ dB</span> <span class="sub">\[\+[\d.]+, \+[\d.]+\]', ranking)
    note = re.search(r'<p class="note">(.*?)</p>', page, re.S).group(1)
    assert "trained once (one seed)" in note and "not training noise" in note and "seeds: [0, 1, 2]" in note


def test_several_seeds_give_two_level_verdicts_on_the_page(tmp_path):
    rng = np.random.default_rng(9)
    floor = rng.normal(28, 1.0, 16)
    write_cell(tmp_path, "denoise", "identity", "none", floor, strategy="none")
    for seed in range(3):
        naf = floor + 2.0 + rng.normal(0, 0.05, 16)
        write_cell(tmp_path, "denoise", "nafnet", f"full-seed{seed}", naf, strategy="full", seed=seed)
        write_cell(tmp_path, "denoise", "restormer", f"full-seed{seed}", naf - 1.0, strategy="full", seed=seed)
    table, summary = build_table(tmp_path / "metrics", ["denoise"], evals_dir=tmp_path / "results/eval")
    write_outputs(table, summary, tmp_path / "table.csv", tmp_path / "summary.json")
    page = build_report(tmp_path / "table.csv", tmp_path / "report.html", runs=tmp_path / "runs",
                        evals=tmp_path / "results/eval").read_text()  # fmt: skip
    ranking = page[page.index('<table class="ranking">') :]
    ranking = ranking[: ranking.index("</table>")]
    assert ranking.count("<th>verdict</th>") == 2
    assert re.search(r'restormer/full</td>.*<td>better</td>.*<td>worse</td>', ranking)
    assert "two-level bootstrap" in page and "one seed" not in ranking


def test_report_screenshot_is_drawn(report, tmp_path):
    exe = _chromium()
    shot = tmp_path / "report.png"
    out = _headless(exe, "--window-size=1280,2400", f"--screenshot={shot}", report.as_uri())
    assert out.returncode == 0 and shot.exists(), out.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    assert pixels.shape == (2400, 1280) and pixels.std() > 10  # not a blank page


def test_report_tables_print_integers_as_integers(report):
    page = report.read_text()
    assert "<td>12</td>" in page and "<td>1234</td>" in page  # images, params
    assert not re.search(r"<td>[1-9]\d*\.0000</td>", page)  # no "12.0000" counts


def _legends_inside(fig) -> None:
    """Every legend lies inside the figure and off its title and every axis but the one it belongs to."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    page = fig.bbox
    title = fig._suptitle.get_window_extent(renderer)
    legends = [(ax, ax.get_legend()) for ax in fig.axes if ax.get_legend() is not None] + [(None, g) for g in fig.legends]
    assert legends
    for owner, legend in legends:
        box = legend.get_window_extent(renderer)
        assert box.x0 >= page.x0 - 1 and box.y0 >= page.y0 - 1 and box.x1 <= page.x1 + 1 and box.y1 <= page.y1 + 1
        assert not box.overlaps(title)
        for ax in fig.axes:
            if ax is not owner and ax.get_visible() and ax.axison:
                assert not Bbox.intersection(box, ax.get_window_extent(renderer)), (legend, ax)


@pytest.mark.parametrize("curves", [3, 21])
def test_curve_panels_share_one_y_range_never_repeat_a_colour_and_keep_legends_inside(curves):
    """A panel of many cells (the demo's deblur l1 panel holds 21) puts its legend below the axis; every line
    has its own colour within its panel, drawn smoothed over its faint raw values; all panels share y."""
    rng = np.random.default_rng(curves)

    def frame(level: float) -> pd.DataFrame:
        return pd.DataFrame({"step": np.arange(60), "loss": level + np.linspace(0.05, 0.0, 60) + rng.normal(0, 0.004, 60)})

    groups = {"swin_upernet": [(f"model{i}/full", frame(0.01 * i)) for i in range(curves)],
              "nafnet": [("nafnet/full", frame(0.0))]}  # fmt: skip
    fig = panels_figure(groups, "deblur: training loss (l1)", "loss")
    _legends_inside(fig)
    axes = [ax for ax in fig.axes if ax.axison]
    assert len(axes) == 2 and len({ax.get_ylim() for ax in axes}) == 1  # one y-range for the figure
    lo, hi = axes[0].get_ylim()
    smoothed_max = max(line.get_ydata().max() for ax in axes for line in ax.get_lines() if line.get_label()[0] != "_")
    assert lo < 0.01 and smoothed_max <= hi  # it holds every smoothed curve of both panels
    labelled = [line for line in axes[0].get_lines() if not line.get_label().startswith("_")]
    raw = [line for line in axes[0].get_lines() if line.get_label().startswith("_")]
    assert len(labelled) == len(raw) == curves
    assert len({line.get_color() for line in labelled}) == curves  # no colour repeats within the panel
    assert all(r.get_alpha() == RAW_ALPHA and r.get_color() == s.get_color() for r, s in zip(raw, labelled, strict=True))
    assert np.std(labelled[0].get_ydata()) < np.std(raw[0].get_ydata())  # smoothed
    if curves > 8:
        box = axes[0].get_legend().get_window_extent(fig.canvas.get_renderer())
        assert box.y1 <= axes[0].get_window_extent(fig.canvas.get_renderer()).y0 + 1  # below its axis
    plt.close(fig)


def test_comparison_figure_puts_published_numbers_on_their_own_labelled_panel(report):
    table = pd.read_csv(report.parent / "table.csv")
    fig = comparison_figure(table, "deblur")
    _legends_inside(fig)
    gain, base, pub = fig.axes
    cells = table[(table["task"] == "deblur") & (table["source"] == "measured") & (table["model"] != "identity")]
    published = table[(table["task"] == "deblur") & (table["source"] == "published")]
    # the cells' panels fit the cells: no published number (~33 dB) on them, the baseline difference zoomed
    assert gain.get_xlim()[1] < 5 and base.get_xlim()[1] - base.get_xlim()[0] < 1.5 * (
        cells["vs_baseline_hi"].max() - cells["vs_baseline_lo"].min()) + 0.5
    assert [t.get_text() for t in gain.get_yticklabels()][0] == "nafnet/full"  # ranked: best on top
    texts = [t.get_text() for t in pub.texts]
    for r in published.itertuples():  # each published number labelled with its value on the third panel
        assert f"{r.psnr:.2f} dB / {r.ssim_matlab3d:.3f}" in texts
        assert pub.get_xlim()[0] < r.psnr < pub.get_xlim()[1]
    assert sorted(t.get_text() for t in pub.get_yticklabels()) == sorted(published["model"])
    plt.close(fig)


def test_crop_labels_are_the_psnr_of_the_crop_shown(report):
    from restorebench.metrics import psnr

    page = report.read_text()
    section = page[page.index('<h2 id="deblur">') :]
    caption = re.search(r"<figcaption>nafnet/full \(best\)<br>([\d.]+) dB</figcaption>", section).group(1)
    strip = np.asarray(Image.open(report.parent / "eval/deblur/nafnet/full/crops/0000.png").convert("RGB"))
    out, gt = strip[:, 48:96], strip[:, 96:]
    assert caption == f"{psnr(out, gt, data_range=255):.2f}"
