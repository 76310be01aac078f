"""DVC remote and experiment queue, end to end in a throwaway git + DVC copy of the project.

The real dvc.yaml runs up to `evaluate_identity.denoise` (fetch and validate the sample SIDD, score its noisy
blocks): `dvc push` to a local-folder remote, cache and outputs deleted, `dvc pull` brings back the same bytes.
Then a two-value `seed` sweep goes through `dvc exp run --queue` and `dvc exp show --json` lists one experiment
per value with its parameter and its metric. About a minute and a half on two cores."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers.project import copy_project, git_commit, git_init, run, tool_env

TARGET = "evaluate_identity.denoise"  # fetch.sidd -> validate.sidd -> this: seconds each on the sample
CACHED_OUTS = ("data/raw/sidd", "data/manifests/sidd.parquet")
METRIC = "metrics/finetune/denoise/identity/none.json"
SEEDS = (1, 2)


def _digests(repo: Path) -> dict[str, str]:
    """sha256 of every file under the cached outputs, by path relative to the repo."""
    files = []
    for out in CACHED_OUTS:
        path = repo / out
        files += sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return {str(p.relative_to(repo)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def _experiments(show: list[dict]) -> list[dict]:
    """The experiments under the baseline commit in `dvc exp show --json`, each its newest rev's record."""
    (baseline,) = [rev for rev in show if rev["rev"] != "workspace"]
    return [exp["revs"][0] for exp in baseline["experiments"] or []]


@pytest.mark.slow
def test_push_pull_and_queued_sweep(project_root, tmp_path):
    repo = copy_project(project_root, tmp_path / "repo")
    remote = tmp_path / "remote"
    git_init(repo)
    run(["dvc", "remote", "add", "-d", "store", str(remote)], repo)
    run(["dvc", "repro", TARGET], repo)
    baseline_psnr = json.loads((repo / METRIC).read_text())["psnr"]
    git_commit(repo, "baseline")

    # push, lose the cache and the outputs, pull: the same bytes come back and the pipeline is up to date
    run(["dvc", "push", "--with-deps", TARGET], repo)
    assert any(p.is_file() for p in remote.rglob("*")), "nothing reached the remote"
    before = _digests(repo)
    assert len(before) > 5 and "data/manifests/sidd.parquet" in before
    shutil.rmtree(repo / ".dvc" / "cache")
    for out in CACHED_OUTS:
        path = repo / out
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    run(["dvc", "pull", "--with-deps", TARGET], repo)
    assert _digests(repo) == before
    assert "up to date" in run(["dvc", "status", "--with-deps", TARGET], repo)

    # a sweep: one queued experiment per value, run by a queue worker, listed with params and metrics
    try:
        queued = run(
            ["dvc", "exp", "run", "--queue", "-S", f"seed={','.join(map(str, SEEDS))}", TARGET], repo
        )
        assert queued.count("Queued experiment") == len(SEEDS), queued
        run(["dvc", "exp", "run", "--run-all"], repo)  # starts a worker, returns when the queue is empty
    finally:  # no worker outlives the test, whatever happened
        subprocess.run(["dvc", "queue", "stop", "--kill"], cwd=repo, env=tool_env(), capture_output=True)
    status = run(["dvc", "queue", "status"], repo)
    assert status.count("Success") == len(SEEDS), status

    experiments = _experiments(json.loads(run(["dvc", "exp", "show", "--json"], repo)))
    by_seed = {exp["data"]["params"]["params.yaml"]["data"]["seed"]: exp for exp in experiments}
    assert sorted(by_seed) == list(SEEDS) and len(experiments) == len(SEEDS)
    psnr = {}
    for seed, exp in by_seed.items():
        metric = exp["data"]["metrics"][METRIC]["data"]
        assert sorted(metric) == ["gain", "psnr", "ssim_basicsr", "ssim_matlab3d"]  # the metric file holds scores only
        psnr[seed] = metric["psnr"]
        assert 20 < psnr[seed] < 45, psnr
    # each seed draws its own sample noise, so each experiment scored different data
    assert len({baseline_psnr, *psnr.values()}) == len(SEEDS) + 1, psnr
    provenance = json.loads((repo / "results/eval/denoise/identity/none/provenance.json").read_text())
    assert provenance["model"] == "identity" and provenance["images"] == 16  # the sample's 4 x 4 SIDD blocks
    # the workspace is untouched: still the baseline
    assert json.loads((repo / METRIC).read_text())["psnr"] == baseline_psnr
