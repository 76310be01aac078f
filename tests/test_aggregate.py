"""aggregate: paired bootstrap intervals on synthetic per-image scores with a known difference, seeds pooled
into mean and spread, and metric files / summary.json that hold only numbers of what was measured."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from restorebench.aggregate import build_table, paired_bootstrap
from tests.helpers.results import write_cell, write_grid


def test_bootstrap_interval_covers_the_known_difference_with_the_analytic_width():
    rng = np.random.default_rng(1)
    n, delta, sigma = 400, 0.3, 0.5
    base = rng.normal(30, 2, n)  # image difficulty: large, shared by both cells, cancels in the pairs
    a = base + delta + rng.normal(0, sigma, n)
    mean, lo, hi = paired_bootstrap(a, base)
    assert lo < delta < hi
    assert mean == pytest.approx(float(np.mean(a - base)))
    se = float(np.std(a - base, ddof=1)) / math.sqrt(n)
    assert (hi - lo) == pytest.approx(2 * 1.96 * se, rel=0.1)  # the percentile interval ~ mean +- 1.96 SE
    assert paired_bootstrap(a, base) == (mean, lo, hi)  # seeded: the same interval every time
    assert paired_bootstrap(a, base, seed=1) != (mean, lo, hi)


def test_bootstrap_coverage_is_near_95_percent():
    rng = np.random.default_rng(2)
    covered = 0
    for _ in range(200):
        b = rng.normal(25, 3, 60)
        a = b + 0.1 + rng.normal(0, 0.4, 60)
        _, lo, hi = paired_bootstrap(a, b, samples=1000)
        covered += lo < 0.1 < hi
    assert 0.88 <= covered / 200 <= 0.99


def test_bootstrap_ignores_exact_matches_and_reports_nothing_without_pairs():
    mean, lo, hi = paired_bootstrap(np.array([np.inf, 31.0, 32.0]), np.array([30.0, 30.0, 30.0]))
    assert mean == pytest.approx(1.5) and lo >= 1.0 and hi <= 2.0
    assert all(math.isnan(v) for v in paired_bootstrap(np.array([np.inf]), np.array([30.0])))


def test_table_shows_intervals_against_the_floor_and_the_best_baseline(tmp_path):
    rng = np.random.default_rng(3)
    floor = rng.normal(28, 1.5, 200)
    write_cell(tmp_path, "denoise", "identity", "none", floor, strategy="none")
    write_cell(tmp_path, "denoise", "nafnet", "full", floor + 2.0 + rng.normal(0, 0.3, 200), strategy="full")
    write_cell(tmp_path, "denoise", "restormer", "full", floor + 1.0 + rng.normal(0, 0.3, 200), strategy="full")
    write_cell(tmp_path, "denoise", "swin_upernet", "llrd", floor + 1.95 + rng.normal(0, 0.3, 200), strategy="llrd")
    table, summary = build_table(tmp_path / "metrics", ["denoise"], evals_dir=tmp_path / "results/eval")
    rows = table[table["source"] == "measured"].set_index("model")
    assert set(rows.loc[["nafnet", "restormer", "swin_upernet"], "baseline"]) == {"nafnet/full"}  # the best one
    swin = rows.loc["swin_upernet"]
    assert swin.vs_identity_lo < 1.95 < swin.vs_identity_hi and swin.vs_identity_lo > 1.8
    assert swin.vs_baseline_lo < -0.05 < swin.vs_baseline_hi  # 0.05 dB: within the interval, not distinguishable
    assert rows.loc["restormer"].vs_baseline_hi < 0  # 1 dB worse: clearly
    assert math.isnan(rows.loc["identity"].vs_identity)
    # summary.json: a glance per task (the floor, how many cells, the best with its gain and interval)
    nafnet = rows.loc["nafnet"]
    assert summary == {"denoise": {
        "floor_psnr": pytest.approx(float(np.mean(floor)), abs=1e-4), "cells": 3,
        "best": {"model": "nafnet", "cell": "full", "psnr": pytest.approx(nafnet.psnr, abs=1e-4),
                 "ssim": pytest.approx(0.8), "gain": pytest.approx(2.0, abs=0.1),
                 "gain_lo": pytest.approx(nafnet.vs_identity_lo, abs=1e-4),
                 "gain_hi": pytest.approx(nafnet.vs_identity_hi, abs=1e-4)}}}  # fmt: skip


def test_repeated_seeds_are_pooled_into_mean_and_spread(tmp_path):
    rng = np.random.default_rng(4)
    floor = rng.normal(28, 1.0, 50)
    write_cell(tmp_path, "deblur", "identity", "none", floor, strategy="none")
    means = []
    for seed, shift in enumerate((1.0, 1.2, 1.4)):
        scores = floor + shift + rng.normal(0, 0.1, 50)
        means.append(scores.mean())
        write_cell(tmp_path, "deblur", "nafnet", f"full-seed{seed}", scores, strategy="full", seed=seed)
    table, summary = build_table(tmp_path / "metrics", ["deblur"], evals_dir=tmp_path / "results/eval")
    (row,) = table[(table["source"] == "measured") & (table["model"] == "nafnet")].itertuples()
    assert (row.cell, row.strategy, row.pretrain, row.seeds) == ("full", "full", "none", 3)
    assert row.psnr == pytest.approx(np.mean(means), abs=1e-5)  # the metric files keep 6 decimals
    assert row.psnr_sd == pytest.approx(np.std(means, ddof=1), abs=1e-5)
    assert row.vs_identity_lo < row.vs_identity < row.vs_identity_hi
    assert summary["deblur"]["cells"] == 1 and summary["deblur"]["best"]["cell"] == "full"  # seeds pooled


def test_cells_argument_takes_exactly_the_listed_cells(tmp_path):
    write_grid(tmp_path, images=6, with_curves=False)
    cells = [("denoise", "identity", "none"), ("denoise", "nafnet", "full")]
    table, _ = build_table(tmp_path / "metrics", ["denoise"], evals_dir=tmp_path / "results/eval", cells=cells)
    measured = table[table["source"] == "measured"]
    assert sorted(zip(measured["model"], measured["cell"], strict=True)) == [("identity", "none"), ("nafnet", "full")]
    with pytest.raises(ValueError, match="missing; run `restorebench evaluate`"):
        build_table(tmp_path / "metrics", ["denoise"], evals_dir=tmp_path / "results/eval",
                    cells=[("denoise", "restormer", "full")])  # fmt: skip


def test_metric_files_hold_only_numbers_and_provenance_sits_beside_per_image(tmp_path):
    write_grid(tmp_path, images=4, with_curves=False)
    for path in (tmp_path / "metrics/finetune").rglob("*.json"):
        data = json.loads(path.read_text())
        assert set(data) == {"psnr", "ssim_matlab3d", "ssim_basicsr", "gain"}, path
        assert all(isinstance(v, float) for v in data.values())
        # the gain over the floor, from the same images' input PSNR (write_grid's floor): 0 for the floor itself
        cell_dir = tmp_path / "results/eval" / path.relative_to(tmp_path / "metrics/finetune").with_suffix("")
        per_image = pd.read_csv(cell_dir / "per_image.csv")
        assert data["gain"] == pytest.approx((per_image["psnr"] - per_image["psnr_input"]).mean(), abs=1e-5)
        if path.parent.name == "identity":
            assert data["gain"] == 0.0
    prov = json.loads((tmp_path / "results/eval/denoise/nafnet/full/provenance.json").read_text())
    assert "timing" not in prov  # timings differ run to run: timing.json, which no orchestrator hashes
    timing = json.loads((tmp_path / "results/eval/denoise/nafnet/full/timing.json").read_text())
    assert {k: timing[k] for k in ("images_per_s", "train_seconds")} == {"images_per_s": 12.5, "train_seconds": 3.5}
    assert timing["seconds_per_image"] == {f"{i:04d}": 0.01 for i in range(4)}
    assert {"checkpoint_sha256", "git_revision", "precision", "images", "strategy"} <= set(prov)
