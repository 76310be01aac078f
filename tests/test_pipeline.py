"""End to end: a throwaway git + DVC repo of the project runs the demo pipeline on two branches that differ
in one parameter; `dvc metrics diff` shows numeric deltas per cell and `dvc params diff` the parameter.
The grid is cut to one model, one strategy and DCPT for it (IPT off) to keep it to a couple of minutes on two
cores."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

BIN = Path(sys.executable).parent
COPY = ["Snakefile", "dvc.yaml", "params.yaml", "workflow", "src", ".dvc/config", ".dvcignore", ".gitignore"]


def _run(cmd: list[str], cwd: Path) -> str:
    # one torch thread in every job of both orchestrators (Snakemake passes --threads 1 itself): torch's CPU
    # kernels sum in an order that depends on the thread count (measured: DCPT weights differ by ~3e-4
    # between 1 and 2 threads; the same count twice is bit-identical), and the two tables must be equal
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1",
           "OMP_NUM_THREADS": "1"}
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert out.returncode == 0, f"{' '.join(cmd)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout


def _set_params(path: Path, **changes) -> None:
    import yaml

    params = yaml.safe_load(path.read_text())
    for dotted, value in changes.items():
        node = params
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node[key]
        node[leaf] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def _copy_cut_project(project_root: Path, repo: Path) -> None:
    """The project, its grid cut to nafnet/full plus DCPT for nafnet (IPT off), 20 training steps."""
    repo.mkdir()
    for item in COPY:
        src = project_root / item
        dst = repo / item
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(src, dst)
    _set_params(repo / "params.yaml", models=["nafnet"], strategies=["full"],
                pretrain_models={"ipt": [], "dcpt": ["nafnet"]}, **{"profiles.demo.train.steps": 20})


TABLES: dict[str, pd.DataFrame] = {}  # the DVC run's table, for the Snakemake test to compare with


@pytest.mark.slow
def test_dvc_pipeline_on_two_branches(project_root, tmp_path):
    repo = tmp_path / "repo"
    _copy_cut_project(project_root, repo)
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
    _run(["git", "init", "-q", "-b", "main"], repo)
    _run([*git, "add", "-A"], repo)
    _run([*git, "commit", "-qm", "project"], repo)  # dvclive needs a repo with a commit
    _run(["dvc", "repro"], repo)
    table = pd.read_csv(repo / "results" / "table.csv")
    TABLES["dvc"] = table
    measured = table[table["source"] == "measured"]
    cells = set(zip(measured["task"], measured["model"], measured["strategy"], measured["pretrain"], strict=True))
    assert cells == {(t, m, s, p) for t in ("denoise", "deblur")
                     for m, s, p in [("identity", "none", "none"), ("nafnet", "full", "none"), ("nafnet", "full", "dcpt")]}
    assert (repo / "metrics/pretrain/dcpt/denoise/nafnet.json").exists()  # DCPT ran through DVC too
    assert not (repo / "runs/pretrain/ipt").exists()  # IPT turned off: no stage ran it
    assert set(table["source"]) == {"measured", "published"}
    assert (repo / "results" / "report.html").stat().st_size > 10_000
    # the identity floor equals the PSNR of the sample's noisy SIDD blocks, computed directly from the .mat
    from scipy.io import loadmat

    raw = repo / "data/raw/sidd"
    noisy = loadmat(raw / "ValidationNoisyBlocksSrgb.mat")["ValidationNoisyBlocksSrgb"].astype(np.float64) / 255
    gt = loadmat(raw / "ValidationGtBlocksSrgb.mat")["ValidationGtBlocksSrgb"].astype(np.float64) / 255
    mse = ((noisy - gt) ** 2).reshape(-1, *noisy.shape[2:]).mean(axis=(1, 2, 3))
    direct = float(np.mean(10 * np.log10(1.0 / mse)))
    floor = measured.query("task == 'denoise' and model == 'identity'")["psnr"].item()
    assert floor == pytest.approx(direct, abs=1e-5)
    _run([*git, "add", "-A"], repo)
    _run([*git, "commit", "-qm", "demo"], repo)

    _run(["git", "checkout", "-q", "-b", "more-steps"], repo)
    _set_params(repo / "params.yaml", **{"profiles.demo.train.steps": 30})
    _run(["dvc", "repro"], repo)
    _run([*git, "commit", "-qam", "more steps"], repo)

    params = json.loads(_run(["dvc", "params", "diff", "main", "--json"], repo))
    changed = params["params.yaml"]
    assert changed["profiles.demo.train.steps"] == {"old": 20, "new": 30, "diff": 10}
    metrics = json.loads(_run(["dvc", "metrics", "diff", "main", "--json"], repo))
    cell = metrics["metrics/finetune/denoise/nafnet/full.json"]["psnr"]
    assert isinstance(cell["diff"], float) and cell["diff"] != 0.0
    assert cell["new"] == pytest.approx(cell["old"] + cell["diff"])
    gain = metrics["metrics/summary.json"]["denoise.nafnet.full.psnr_vs_identity"]
    assert gain["diff"] == pytest.approx(cell["diff"], abs=2e-4)  # the floor did not move
    assert "metrics/finetune/denoise/identity/none.json" not in metrics  # unchanged cells show no delta
    # the finetuned cell describes itself and the report was built
    assert json.loads((repo / "runs/finetune/denoise/nafnet/full/config.json").read_text())["model"] == "nafnet"
    assert "PSNR" in (repo / "runs/finetune/denoise/nafnet/full/README.md").read_text()


@pytest.mark.slow
def test_snakemake_gives_the_same_table_then_has_nothing_to_do(project_root, tmp_path):
    """The same cut grid through Snakemake: the same cells and scores as DVC's run, and a second plan is
    empty (a finished cell is not trained again) until a parameter of the cells changes."""
    repo = tmp_path / "repo"
    _copy_cut_project(project_root, repo)
    snakemake = [str(BIN / "snakemake"), "--cores", "2", "results/table.csv"]
    _run(snakemake, repo)
    table = pd.read_csv(repo / "results" / "table.csv")
    if "dvc" in TABLES:  # run after the DVC test (this file's order): same cells, same numbers
        key = ["source", "task", "model", "strategy", "pretrain"]
        ours = table.set_index(key).sort_index()
        theirs = TABLES["dvc"].set_index(key).sort_index()
        assert list(ours.index) == list(theirs.index)
        for col in ("psnr", "ssim_matlab3d", "ssim_basicsr"):  # bit-identical: same seeds, same threads
            np.testing.assert_array_equal(ours[col].to_numpy(float), theirs[col].to_numpy(float), err_msg=col)
    again = _run([str(BIN / "snakemake"), "-n", "results/table.csv"], repo)
    assert "Nothing to be done" in again, again[-2000:]
    _set_params(repo / "params.yaml", **{"profiles.demo.train.steps": 30})
    plan = _run([str(BIN / "snakemake"), "-n", "results/table.csv"], repo)
    assert "finetune" in plan and "fetch" not in plan.split("Job stats:")[-1], plan[-2000:]
