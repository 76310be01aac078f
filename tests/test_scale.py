"""benchmarks/scale.py: each data stage's peak host memory stays flat as its item count grows (it streams
its items), on tiny inputs in the real layouts; and the figures keep the schema `plan` reads."""

from __future__ import annotations

import pytest

scale = pytest.importorskip("benchmarks.scale")

MIB = 1024**2
TINY = {"sidd": (112, 128), "gopro": (104, 128), "imagenet": (104, 128)}  # >= the demo's 96 crops


@pytest.mark.slow  # every data stage twice, each in a forked child
@pytest.mark.parametrize("dataset", ["sidd", "gopro", "imagenet"])
def test_peak_memory_of_each_stage_is_flat_in_its_item_count(dataset, tmp_path):
    import great_expectations  # noqa: F401 - imported before the forks, as the stages' children would

    growth = {}
    for n in (4, 16):
        root = tmp_path / f"{n}" / dataset
        root.mkdir(parents=True)
        archive = scale.make_inputs(dataset, tmp_path / f"{n}", n, size=TINY[dataset])
        for stage, (ds, _, _) in scale.STAGES.items():
            if ds == dataset:
                r = scale.run_stage_forked(stage, root, archive, profile="demo")
                test_frame = dataset == "gopro" and not stage.startswith("prepare")  # GoPro's one test frame
                assert r["items"] == n + test_frame
                growth.setdefault(stage, []).append(r["peak_rss"] - r["rss_before"])
    for stage, (small, large) in growth.items():
        # 4x the items: the peak above the stage's start grows by at most half (plus 8 MiB of allocator noise)
        assert large <= 1.5 * small + 8 * MIB, (stage, small / MIB, large / MIB)


def test_figures_schema_and_extrapolation():
    results = {"degrade_imagenet": {"items": 4, "cpu_s": 2.0, "wall_s": 3.0, "bytes": 4 * 110_592,
                                    "peak_rss": 2 * 1024**3, "rss_before": 1024**3, "manifest_rows": 4,
                                    "manifest_row_bytes": 1000.0},
               "fetch_imagenet": {"items": 4, "cpu_s": 1.0, "wall_s": 1.0, "bytes": 400, "peak_rss": 1024**3,
                                  "rss_before": 0, "manifest_rows": 4, "manifest_row_bytes": 1000.0}}  # fmt: skip
    figs = scale.figures(results, "here")
    assert figs["degrade_imagenet"] == {"seconds_per_item": 0.5, "bytes_per_item": 110592.0,
                                        "peak_host_gib": 2.0, "unit": "image", "measured": "here"}  # fmt: skip
    # fetch holds the manifest: its peak at the paper's count adds the rows it does not have yet
    assert figs["fetch_imagenet"]["peak_host_gib"] == round(1 + 1000.0 * (1_281_167 - 4) / 1024**3, 3)
    assert "1281167" in scale.table(results, figs)
