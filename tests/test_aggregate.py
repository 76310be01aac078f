"""aggregate: paired bootstrap intervals on synthetic per-image scores with a known difference, the two-level
(seeds, then images) bootstrap against a direct loop and its analytic spread, the verdict rules (none for one
seed), seeds pooled into mean and spread, and metric files / summary.json that hold only numbers of what was
measured."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from restorebench.aggregate import ONE_SEED, build_table, paired_bootstrap, two_level_bootstrap
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


def test_two_level_bootstrap_matches_a_direct_loop_with_the_same_draws():
    rng = np.random.default_rng(5)
    d = rng.normal(0.2, 0.5, (3, 7)) + rng.normal(0, 0.3, (3, 1))  # 3 seeds x 7 images
    samples = 400
    mean, lo, hi = two_level_bootstrap(d, samples=samples, seed=11)
    # the documented draws (seed indices, then image indices within each drawn seed), averaged by hand
    draw = np.random.default_rng(11)
    runs = draw.integers(0, 3, size=(samples, 3))
    images = draw.integers(0, 7, size=(samples, 3, 7))
    means = []
    for b in range(samples):
        total = 0.0
        for j in range(3):
            for i in range(7):
                total += d[runs[b, j], images[b, j, i]]
        means.append(total / 21)
    assert mean == pytest.approx(float(d.mean()), abs=1e-12)
    assert (lo, hi) == pytest.approx(tuple(np.quantile(means, [0.025, 0.975])), abs=1e-12)


def test_two_level_interval_has_the_analytic_spread_and_covers_seed_noise():
    rng = np.random.default_rng(6)
    k, n = 4, 300
    offsets = np.array([-0.3, 0.1, 0.25, -0.05])  # training noise: each seed moves the whole cell
    d = 0.1 + offsets[:, None] + rng.normal(0, 0.4, (k, n))
    _, lo, hi = two_level_bootstrap(d, samples=20000)
    rows = d.mean(axis=1)
    # var of the two-level mean: (between-seed variance + mean within-seed variance / n) / k, population forms
    sd = math.sqrt((rows.var() + d.var(axis=1).mean() / n) / k)
    assert (hi - lo) == pytest.approx(2 * 1.96 * sd, rel=0.06)
    _, lo1, hi1 = paired_bootstrap(d.mean(axis=0), np.zeros(n))  # images only, seeds averaged first
    assert (hi - lo) > 4 * (hi1 - lo1)  # the image-level interval hides the seeds' spread
    assert all(math.isnan(v) for v in two_level_bootstrap(np.full((2, 3), np.inf)))


def _seeded(root, task, model, cell, scores_by_seed, **kw):
    for seed, scores in enumerate(scores_by_seed):
        write_cell(root, task, model, f"{cell}-seed{seed}", scores, seed=seed, **kw)


def test_one_seed_shows_the_image_interval_without_a_verdict(tmp_path):
    rng = np.random.default_rng(7)
    floor = rng.normal(28, 1.5, 40)
    write_cell(tmp_path, "denoise", "identity", "none", floor, strategy="none")
    write_cell(tmp_path, "denoise", "nafnet", "full", floor + 3.0 + rng.normal(0, 0.1, 40), strategy="full")
    write_cell(tmp_path, "denoise", "restormer", "full", floor + 1.0 + rng.normal(0, 0.1, 40), strategy="full")
    write_cell(tmp_path, "denoise", "restormer", "official", floor + 2.5 + rng.normal(0, 0.1, 40), strategy="official")
    table, _ = build_table(tmp_path / "metrics", ["denoise"], evals_dir=tmp_path / "results/eval")
    rows = table[table["source"] == "measured"].set_index(["model", "cell"])
    naf, rst = rows.loc[("nafnet", "full")], rows.loc[("restormer", "full")]
    assert 2.9 < naf.vs_identity_lo < naf.vs_identity_hi < 3.1  # the interval is there ...
    assert rst.vs_baseline_hi < 0
    assert naf.vs_identity_verdict == rst.vs_identity_verdict == rst.vs_baseline_verdict == ONE_SEED  # ... no verdict
    assert naf.vs_baseline_verdict == "baseline"
    # a released checkpoint against the floor: neither side was trained, the images are all the noise there is
    official = rows.loc[("restormer", "official")]
    assert official.vs_identity_verdict == "better" and official.vs_baseline_verdict == ONE_SEED


def test_several_seeds_give_two_level_intervals_and_verdicts(tmp_path):
    rng = np.random.default_rng(8)
    n = 60
    floor = rng.normal(28, 1.5, n)
    write_cell(tmp_path, "deblur", "identity", "none", floor, strategy="none")
    naf = [floor + 2.0 + rng.normal(0, 0.05, n) for _ in range(3)]
    _seeded(tmp_path, "deblur", "nafnet", "full", naf, strategy="full")
    _seeded(tmp_path, "deblur", "restormer", "full", [s - 1.0 + rng.normal(0, 0.05, n) for s in naf], strategy="full")
    # +0.05 dB on average, but each seed moves the cell by tenths of a dB: training noise, not a gain
    swin = [s + 0.05 + shift + rng.normal(0, 0.05, n) for s, shift in zip(naf, (-0.25, 0.3, 0.1), strict=True)]
    _seeded(tmp_path, "deblur", "swin_upernet", "full", swin, strategy="full")
    table, _ = build_table(tmp_path / "metrics", ["deblur"], evals_dir=tmp_path / "results/eval")
    rows = table[table["source"] == "measured"].set_index("model")
    assert rows.loc["nafnet"].seeds == 3
    assert rows.loc["nafnet"].vs_identity_verdict == "better" and rows.loc["nafnet"].vs_baseline_verdict == "baseline"
    assert rows.loc["restormer"].vs_baseline_verdict == "worse"
    swin_row = rows.loc["swin_upernet"]
    assert swin_row.vs_baseline_verdict == "not distinguishable"
    assert swin_row.vs_baseline_lo < 0 < swin_row.vs_baseline_hi
    # the reference: seed s of swin minus seed s of nafnet, seeds then images resampled
    d = np.stack([a - b for a, b in zip(swin, naf, strict=True)])
    assert (swin_row.vs_baseline, swin_row.vs_baseline_lo, swin_row.vs_baseline_hi) == pytest.approx(
        two_level_bootstrap(d), abs=2e-5)  # per_image.csv keeps 6 decimals
    # averaging the seeds first and resampling images only would have called it better
    assert paired_bootstrap(np.mean(swin, axis=0), np.mean(naf, axis=0))[1] > 0


def test_the_table_lists_tasks_in_params_order(tmp_path):
    write_grid(tmp_path, images=4, with_curves=False)
    for tasks in (["denoise", "deblur"], ["deblur", "denoise"]):
        table, _ = build_table(tmp_path / "metrics", tasks, evals_dir=tmp_path / "results/eval")
        for source in ("measured", "published"):
            order = list(dict.fromkeys(table[table["source"] == source]["task"]))
            assert order == tasks, (source, order)


def test_a_checkpoint_cell_is_compared_with_its_scratch_control(tmp_path):
    """vs_scratch: the checkpoint cell minus its scratch control (same model and strategy), paired over the
    images; only checkpoint cells with a measured control get one, and one seed gives no verdict."""
    rng = np.random.default_rng(11)
    floor = rng.normal(27, 1.0, 30)
    write_cell(tmp_path, "denoise", "identity", "none", floor, strategy="none")
    ckpt = floor + 2.0 + rng.normal(0, 0.2, 30)
    scratch = floor + 1.6 + rng.normal(0, 0.2, 30)
    write_cell(tmp_path, "denoise", "swin_upernet", "full", ckpt, strategy="full")
    write_cell(tmp_path, "denoise", "swin_upernet", "scratch-full", scratch, strategy="full", pretrain="scratch")
    write_cell(tmp_path, "denoise", "swin_upernet", "frozen", ckpt - 0.5, strategy="frozen")
    write_cell(tmp_path, "denoise", "nafnet", "full", floor + 2.5, strategy="full")
    table, _ = build_table(tmp_path / "metrics", ["denoise"], evals_dir=tmp_path / "results/eval")
    rows = table[table["source"] == "measured"].set_index(["model", "cell"])
    full = rows.loc[("swin_upernet", "full")]
    assert full.vs_scratch == pytest.approx(float(np.mean(ckpt - scratch)), abs=1e-5)  # per_image.csv precision
    assert full.vs_scratch_lo < full.vs_scratch < full.vs_scratch_hi and full.vs_scratch_verdict == ONE_SEED
    for no_control in (("swin_upernet", "frozen"), ("swin_upernet", "scratch-full"), ("nafnet", "full")):
        assert pd.isna(rows.loc[no_control].vs_scratch), no_control
