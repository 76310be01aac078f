"""The published protocols: GoPro images whole with tiling only as a memory fallback (recorded), the
published rows matching the variants trained, progressive training stages and mixup, IPT's additive rain."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from restorebench.aggregate import published_rows
from restorebench.config import load_config
from restorebench.degrade.rain import rain_streaks
from restorebench.evaluate import EvalItem, evaluate
from restorebench.infer import ProtocolRestorer, restore
from restorebench.train import finetune as finetune_module
from restorebench.train.finetune import mixup_batch, training_data
from tests.helpers.stores import write_sidd_store


class NeedsLittleMemory(nn.Module):
    """A local conv model that 'runs out of memory' on inputs wider than `limit` pixels."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.limit, self.widths = limit, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.widths.append(x.shape[-1])
        if x.shape[-1] > self.limit:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return x + 0.1 * self.conv(x)


def test_whole_images_by_default_and_tiles_only_on_out_of_memory():
    torch.manual_seed(0)
    x = torch.rand(1, 3, 40, 72)
    roomy = NeedsLittleMemory(limit=10_000)
    whole = ProtocolRestorer(roomy, device="cpu", fallback_tile=32, overlap=8)
    out = whole(x)
    assert roomy.widths == [72] and whole.record()["used"] is False  # one pass, the whole image
    torch.testing.assert_close(out, restore(roomy, x))

    tight = NeedsLittleMemory(limit=40)
    tight.load_state_dict(roomy.state_dict())
    fallback = ProtocolRestorer(tight, device="cpu", fallback_tile=32, overlap=8)
    tiled = fallback(x)
    assert tight.widths[0] == 72 and max(tight.widths[1:]) <= 32  # tried whole, then tiles
    record = fallback.record()
    assert record == {"used": True, "forced": False, "tiled_images": 1, "images": 1, "tile": 32, "overlap": 8}
    # a local model with receptive field 3 <= overlap: the tiled result equals the whole one
    torch.testing.assert_close(tiled, out, rtol=1e-5, atol=1e-5)

    class Broken(nn.Module):
        def forward(self, x):
            raise RuntimeError("shape mismatch")

    other = ProtocolRestorer(Broken(), device="cpu")  # any other error is raised, not hidden behind tiles
    with pytest.raises(RuntimeError, match="shape mismatch"):
        other(x)
    assert other.record()["used"] is False


def test_metrics_say_whether_tiling_was_used():
    rng = np.random.default_rng(0)
    items = [EvalItem(f"{i}", rng.integers(0, 255, (24, 40, 3), dtype=np.uint8),
                      rng.integers(0, 255, (24, 40, 3), dtype=np.uint8)) for i in range(2)]  # fmt: skip
    restorer = ProtocolRestorer(NeedsLittleMemory(limit=30), device="cpu", fallback_tile=16, overlap=4)
    _, summary = evaluate(restorer, "deblur", iter(items))
    assert summary["tiling"]["used"] and summary["tiling"]["tiled_images"] == 2
    _, plain = evaluate(lambda x: x, "deblur", iter(items))
    assert plain["tiling"]["used"] is False


def test_paper_evaluation_runs_whole_images(project_root):
    paper = load_config(project_root / "params.yaml", ["profile=paper"])
    assert paper.evaluate.tile is None and paper.evaluate.fallback_tile == 512


@pytest.mark.parametrize("width", ["32", "64"])
def test_published_rows_match_the_variants_trained(width):
    variants = {"nafnet": {"denoise": f"sidd-width{width}", "deblur": f"gopro-width{width}"},
                "restormer": {"denoise": "denoise", "deblur": "deblur"}}
    rows = published_rows(["denoise", "deblur"], variants)
    models = {r["model"] for r in rows}
    assert f"NAFNet width{width}" in models
    assert f"NAFNet width{'64' if width == '32' else '32'}" not in models
    assert {"Restormer", "Uformer-B", "MPRNet"} <= models
    assert all(r["reference"] for r in rows)  # each published row names its source
    naf = {r["task"]: (r["psnr"], r["ssim_matlab3d"]) for r in rows if r["model"].startswith("NAFNet")}
    assert naf == ({"denoise": (39.97, 0.960), "deblur": (32.87, 0.961)} if width == "32"
                   else {"denoise": (40.30, 0.961), "deblur": (33.71, 0.967)})  # fmt: skip


def test_published_rows_stay_as_references_for_unpublished_variants():
    demo = {m: {"denoise": "demo", "deblur": "demo"} for m in ("nafnet", "restormer")}
    assert len(published_rows(["denoise", "deblur"], demo)) == 10  # the demo's tiny variants: all, as references


def test_rain_is_added_to_the_image():
    img = np.full((32, 32, 3), 0.4, np.float32)
    kw = dict(amount=0.01, angle=10.0, length=8.0, intensity=0.5)
    added = rain_streaks(img, np.random.default_rng(0), **kw)
    screen = rain_streaks(img, np.random.default_rng(0), blend="screen", **kw)
    rain = added - img  # I + r: the streak map itself, the same on every channel
    assert rain.max() == pytest.approx(0.5, abs=1e-6) and rain.min() >= 0
    assert np.allclose(screen, 1 - (1 - img) * (1 - rain), atol=1e-6)
    assert np.allclose(rain_streaks(np.full_like(img, 0.9), np.random.default_rng(0), **kw).max(), 1.0)  # clipped


def test_progressive_stages_change_patch_and_batch_at_their_boundaries(project_root, tmp_path, monkeypatch):
    """Restormer's progressive training: each stage's steps come with its patch and global batch; a resumed
    run sees exactly the batches of an uninterrupted one, across stage boundaries."""
    monkeypatch.chdir(tmp_path)
    write_sidd_store(tmp_path, size=24)
    stages = "[{iters: 2, patch: 8, batch: 4}, {iters: 3, patch: 12, batch: 2}, {iters: 1, patch: 16, batch: 2}]"
    cfg = load_config(project_root / "params.yaml", [f"profiles.demo.train.models.restormer.stages={stages}",
                                                     "profiles.demo.train.holdout=0.0"])
    data = training_data(cfg, "denoise", "restormer")
    shapes = [tuple(lq.shape) for lq, _ in data.batches(0)]
    assert shapes == [(4, 3, 8, 8)] * 2 + [(2, 3, 12, 12)] * 3 + [(2, 3, 16, 16)]
    full = list(data.batches(0))
    for start in (2, 3, 5):
        resumed = list(data.batches(start))
        assert len(resumed) == 6 - start
        for (a, b), (c, d) in zip(resumed, full[start:], strict=True):
            assert torch.equal(a, c) and torch.equal(b, d)
    assert finetune_module.loop_config(cfg, "restormer", "full", task="denoise").steps == 6


def test_mixup_is_restormers():
    lq = torch.arange(4, dtype=torch.float32).view(4, 1, 1, 1).expand(4, 3, 2, 2).clone()
    gt = lq + 10
    outcomes = set()
    for seed in range(20):
        rng = np.random.default_rng(seed)
        a, b = mixup_batch(lq, gt, 1.2, rng)
        same = torch.equal(a, lq)
        outcomes.add(same)
        if not same:  # lam * x + (1 - lam) * x[perm], the same lam and perm for lq and gt
            torch.testing.assert_close(b - a, gt - lq)
            assert torch.all(a >= 0) and torch.all(a <= 3)
    assert outcomes == {True, False}  # identity half the time (use_identity), mixup otherwise


@pytest.mark.parametrize("task", ["denoise", "deblur"])
def test_gain_is_the_psnr_over_the_degraded_input_on_the_same_images(task):
    from skimage.metrics import peak_signal_noise_ratio

    rng = np.random.default_rng(5)
    gts = [rng.integers(30, 220, (16, 20, 3), dtype=np.uint8) for _ in range(3)]
    lqs = [np.clip(g + rng.normal(0, 20, g.shape), 0, 255).astype(np.uint8) for g in gts]
    items = [EvalItem(f"{i}", lq, gt) for i, (lq, gt) in enumerate(zip(lqs, gts, strict=True))]
    halfway = {i: torch.from_numpy((lq.astype(np.float64) + gt) / 2 / 255).permute(2, 0, 1)[None].float()
               for i, (lq, gt) in enumerate(zip(lqs, gts, strict=True))}  # fmt: skip
    calls = iter(range(3))
    table, summary = evaluate(lambda x: halfway[next(calls)], task, iter(items))
    inputs = [peak_signal_noise_ratio(g, lq, data_range=255) for lq, g in zip(lqs, gts, strict=True)]
    assert table["psnr_input"].to_numpy() == pytest.approx(inputs, abs=1e-6)
    assert summary["gain"] == pytest.approx(float(np.mean(table["psnr"] - np.array(inputs))), abs=1e-9)
    assert summary["gain"] > 3  # halfway to the target: about 6 dB over the input
    _, floor = evaluate(lambda x: x, task, iter(items))
    assert floor["gain"] == pytest.approx(0.0, abs=1e-6)  # the input itself (through float32 on denoise)
    assert floor["psnr"] == pytest.approx(np.mean(inputs), abs=1e-6)
