"""`dvc metrics diff` between two commits that differ in one cell is that cell's PSNR/SSIM/gain and nothing else.

A throwaway git repo holds the project's params.yaml (grid cut to nafnet x {full, frozen}, no restoration
pretraining) and the dvc.yaml generated from it and metric files written by the real writers (evaluate.write_results, aggregate); the
second commit changes one cell's parameter and that cell's scores."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from restorebench.aggregate import build_table, write_outputs
from tests.helpers.project import copy_project, git_commit, git_init, run
from tests.helpers.results import write_cell

CELLS = [("identity", "none", "none", 0.0), ("nafnet", "full", "full", 2.0), ("nafnet", "frozen", "frozen", 1.0)]


def _write_grid(repo, changed: float = 0.0) -> None:
    rng = np.random.default_rng(0)
    for task in ("denoise", "deblur"):
        floor = 28 + rng.normal(0, 1, 8)
        for model, cell, strategy, gain in CELLS:
            extra = changed if (task, model, cell) == ("denoise", "nafnet", "full") else 0.0
            write_cell(repo, task, model, cell, floor + gain + extra, strategy=strategy, ssim=0.8 + extra / 100,
                       input_psnr=floor)  # fmt: skip
    table, summary = build_table(repo / "metrics", ["denoise", "deblur"], evals_dir=repo / "results/eval")
    write_outputs(table, summary, repo / "results/table.csv", repo / "metrics/summary.json")


def test_metrics_diff_shows_only_the_changed_cells_psnr_and_ssim(project_root, tmp_path):
    repo = copy_project(project_root, tmp_path / "repo", files=("dvc.yaml", "params.yaml", ".dvc/config",
                                                                  ".dvcignore", ".gitignore"))  # fmt: skip
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params.update(models=["nafnet"], strategies=["full", "frozen"], pretrain_models={"ipt": [], "dcpt": []})
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["restorebench", "pipeline", "dvc", "-o", "dvc.yaml"], repo)  # as the README says after a grid edit
    _write_grid(repo)
    git_init(repo)

    run(["git", "checkout", "-q", "-b", "change"], repo)
    params["profiles"]["demo"]["train"]["steps"] += 20  # the parameter; only denoise/nafnet/full moved with it
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _write_grid(repo, changed=0.5)
    git_commit(repo, "one cell changed")

    diff = json.loads(run(["dvc", "metrics", "diff", "main", "change", "--json"], repo))
    # summary.json (a per-task glance, restorebench.aggregate.summarize) is no metric of the views' dvc.yaml
    # (restorebench.views.dvc_metrics); only the cells' files are compared here
    cells = {path: metrics for path, metrics in diff.items() if path.startswith("metrics/finetune/")}
    rows = [(path, key) for path, metrics in cells.items() for key in metrics]
    assert sorted(rows) == [
        ("metrics/finetune/denoise/nafnet/full.json", "gain"),
        ("metrics/finetune/denoise/nafnet/full.json", "psnr"),
        ("metrics/finetune/denoise/nafnet/full.json", "ssim_basicsr"),
        ("metrics/finetune/denoise/nafnet/full.json", "ssim_matlab3d"),
    ], rows
    assert set(diff) - set(cells) <= {"metrics/summary.json"}
    for path, metrics in cells.items():
        for key, change in metrics.items():
            assert isinstance(change["old"], float) and isinstance(change["diff"], float), (path, key, change)
    assert cells["metrics/finetune/denoise/nafnet/full.json"]["psnr"]["diff"] == pytest.approx(0.5)
    assert cells["metrics/finetune/denoise/nafnet/full.json"]["gain"]["diff"] == pytest.approx(0.5)

    # every metric of a cell is a number of what was measured: no strings, timings or hashes
    shown = json.loads(run(["dvc", "metrics", "show", "--json"], repo))
    declared = {path: content["data"] for rev in shown.values() for path, content in rev["data"].items()}
    files = {path: data for path, data in declared.items() if path.startswith("metrics/finetune/")}
    assert len(files) == 2 * len(CELLS) and set(declared) - set(files) <= {"metrics/summary.json"}
    for path, data in files.items():
        assert all(isinstance(v, float) for v in _leaves(data)), (path, data)
        assert not any(k.endswith(("seconds", "_per_s")) for k in _keys(data)), (path, data)


def _leaves(node):
    if isinstance(node, dict):
        for value in node.values():
            yield from _leaves(value)
    else:
        yield node


def _keys(node):
    if isinstance(node, dict):
        for key, value in node.items():
            yield key
            yield from _keys(value)
