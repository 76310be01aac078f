"""The report in a real browser: headless Chromium (Debian's `chromium`; .ci/run installs it) renders
results/report.html built by the CLI from a synthetic evaluated grid; no console errors, no broken images, no
request leaves the file, and the tables, figures, crops and provenance are on the page."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from restorebench.cli import app
from tests.helpers.results import GRID_OVERRIDES, write_grid

# Runs first in <head>: records console errors, uncaught errors and failed loads; after `load`, writes what it
# found (and the image states) into <pre id="__check"> for --dump-dom to print.
PROBE = """<script>
(function(){var errs=[];var oe=console.error;console.error=function(){errs.push(Array.from(arguments).join(' '));
oe.apply(console,arguments)};window.addEventListener('error',function(e){errs.push('error: '+(e.message||
(e.target&&(e.target.src||e.target.href))||'?'))},true);window.addEventListener('load',function(){
var imgs=Array.from(document.images);var broken=imgs.filter(function(i){return !i.complete||i.naturalWidth===0})
.map(function(i){return i.alt});var pre=document.createElement('pre');pre.id='__check';pre.textContent=
JSON.stringify({errors:errs,images:imgs.length,broken:broken,external:Array.from(document.querySelectorAll(
'[src],[href]')).map(function(e){return e.getAttribute('src')||e.getAttribute('href')}).filter(function(u){
return !/^data:|^#/.test(u)})});document.body.appendChild(pre)})})();
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


def test_report_renders_in_chromium_without_errors(report, tmp_path):
    exe = _chromium()
    probed = tmp_path / "probed.html"
    probed.write_text(report.read_text().replace("<head>", "<head>" + PROBE, 1))
    out = _headless(exe, "--dump-dom", probed.as_uri())
    assert out.returncode == 0, out.stderr[-2000:]
    found = re.search(r'<pre id="__check">(.*?)</pre>', out.stdout, re.S)
    assert found, f"the page did not finish loading:\n{out.stdout[-1000:]}\n{out.stderr[-1000:]}"
    check = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    assert check["errors"] == [], check["errors"]
    assert check["broken"] == [], check["broken"]
    assert check["external"] == [], "the page must be self-contained"
    dom = out.stdout
    for task in ("denoise", "deblur"):
        assert f'<h2 id="{task}">' in dom
    assert dom.count('<table class="scores">') == 2 and dom.count('<table class="significance">') == 2
    assert dom.count('class="badge">published') >= 10  # every published row marked
    assert dom.count('<figure class="plot">') == 6  # per task: cells vs published, val/psnr, loss per kind
    assert check["images"] == 6 + 2 * 6 * 3  # figures + (input, output, ground truth) per cell and task
    for label in ("input", "output", "ground truth"):
        assert f"<figcaption>{label}</figcaption>" in dom
    assert re.search(r"profile <code>demo</code> · git revision <code>[^<]+</code> · params hash <code>[0-9a-f]{64}", dom)
    assert re.search(r"built \d{4}-\d\d-\d\d \d\d:\d\d UTC", dom)
    assert "nafnet/full" in dom and "baseline" in dom and "better" in dom


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


def test_val_psnr_legend_names_each_cell_and_losses_split_by_kind(tmp_path):
    from restorebench.report import curve_figures

    write_grid(tmp_path)
    calls = []
    import restorebench.report as rep

    real = rep._panels
    rep._panels = lambda groups, title, ylabel: calls.append(groups) or real(groups, title, ylabel)
    try:
        val, loss = curve_figures(tmp_path / "runs", "denoise")
    finally:
        rep._panels = real
    assert val and loss
    val_groups, loss_groups = calls
    labels = sorted(label for curves in val_groups.values() for label, _ in curves)
    assert labels == ["nafnet/frozen", "nafnet/full", "swin_upernet/dcpt-full", "swin_upernet/frozen",
                      "swin_upernet/full"]  # fmt: skip
    assert sorted(loss_groups) == ["l1", "psnr"]  # NAFNet's PSNR loss on its own axis
    assert sorted(label for label, _ in loss_groups["psnr"]) == ["nafnet/frozen", "nafnet/full"]


@pytest.mark.parametrize("curves", [3, 21])
def test_curve_legends_stay_off_the_title_and_the_curves(curves):
    """A panel of many cells (the demo's deblur l1 panel holds 21) puts its legend below the axis; no legend
    overlaps the figure title, its axis or another panel, and every legend lies inside the figure."""
    import matplotlib.pyplot as plt
    from matplotlib.transforms import Bbox

    from restorebench.report import panels_figure

    frame = pd.DataFrame({"step": np.arange(0, 80, 5), "loss": np.linspace(0.08, 0.03, 16)})
    groups = {"l1": [(f"model{i}/full", frame) for i in range(curves)], "psnr": [("nafnet/full", frame)]}
    fig = panels_figure(groups, "deblur: training loss", "loss")
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    page = fig.bbox
    title = fig._suptitle.get_window_extent(renderer)
    axes = [ax for ax in fig.axes if ax.get_legend() is not None]
    boxes = [ax.get_legend().get_window_extent(renderer) for ax in axes]
    for ax, box in zip(axes, boxes, strict=True):
        assert Bbox.intersection(box, page) is not None and box.x0 >= page.x0 - 1 and box.y0 >= page.y0 - 1
        assert not box.overlaps(title)
        if curves > 8:
            assert box.y1 <= ax.get_window_extent(renderer).y0 + 1  # below its axis
    assert not boxes[0].overlaps(boxes[1])
    plt.close(fig)
