"""`restorebench plan` and the step measurements behind it (restorebench.estimate)."""

from __future__ import annotations

import functools
import json
from collections import namedtuple

import pytest
import torch
from typer.testing import CliRunner

from restorebench import costs, pipeline
from restorebench import plan as plan_mod
from restorebench.cli import app
from restorebench.config import profile_overrides, read_params
from restorebench.estimate import measure_step
from restorebench.models import build_model

SMALL_GRID = ["models=[nafnet]", "strategies=[full]", "pretrain_models={ipt: [], dcpt: []}"]


def _reference(model: torch.nn.Module, batch: int, patch: int) -> tuple[int, float]:
    """A real CPU step: the bytes of the distinct storages autograd saves (parameters apart), and torch's
    FlopCounterMode over forward + backward."""
    from torch.utils.flop_counter import FlopCounterMode

    params = {p.data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t):
        s = t.untyped_storage()
        if s.data_ptr() not in params:
            seen[s.data_ptr()] = s.nbytes()
        return t

    x = torch.rand(batch, 3, patch, patch)
    counter = FlopCounterMode(display=False)
    with counter:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = model(x)
            loss = (out.float() - x).abs().mean()
        loss.backward()
    return sum(seen.values()), counter.get_total_flops()


@pytest.mark.parametrize("name", ["nafnet", "swin_upernet"])
def test_the_meta_measurement_holds_against_a_real_step(name):
    """Measured at batch 2 on the meta device, the step's saved tensors and FLOPs predict a real fp32 CPU
    step at batch 4 (a second size: the per-image part scales) within 2%."""
    build = functools.partial(build_model, name, variant="demo")
    cost = measure_step(build, 64, amp=False)
    torch.manual_seed(0)
    saved, flops = _reference(build().train(), 4, 64)
    assert cost.fixed_bytes == 0  # fp32: no weight casts
    assert abs(cost.fixed_bytes + 4 * cost.per_image_bytes - saved) <= 0.02 * saved
    assert abs(4 * cost.flops_per_image - flops) <= 0.02 * flops
    assert cost.params == sum(p.numel() for p in build().parameters())
    # the GPU estimate adds weights, gradients and AdamW's moments (16 B per trained parameter)
    assert cost.gpu_bytes(4) >= 16 * cost.params + 4 * cost.per_image_bytes


def test_mixed_precision_saves_bf16_activations():
    """Under the loop's bf16 autocast (emulated on meta) a convolution network saves about half the bytes
    of fp32, plus the bf16 copies of its weights."""
    build = functools.partial(build_model, "nafnet", variant="demo")
    fp32, bf16 = measure_step(build, 64, amp=False), measure_step(build, 64, amp=True)
    assert 0.4 * fp32.per_image_bytes < bf16.per_image_bytes < 0.8 * fp32.per_image_bytes
    n = sum(p.numel() for p in build().parameters() if p.dim() > 1)  # conv / linear weights
    assert 0.5 * 2 * n <= bf16.fixed_bytes <= 2 * 2 * n + 4096


def _plan_json(tmp_path, monkeypatch, *overrides: str) -> dict:
    monkeypatch.setenv("RESTOREBENCH_CACHE", str(tmp_path / "cache"))
    args = [a for o in overrides for a in ("-S", o)]
    result = CliRunner().invoke(app, [*args, "plan", "--json", "--gpu-memory", "24"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output[result.output.index("{"):])


def test_plan_json_lists_every_stage_and_cell(tmp_path, monkeypatch, project_root):
    monkeypatch.chdir(project_root)
    out = _plan_json(tmp_path, monkeypatch, *SMALL_GRID)
    assert {"stages", "cells", "total"} <= set(out)
    assert all(set(s) >= {"name", "disk_gb", "cpu_hours", "peak_host_gib"} for s in out["stages"])
    cell_keys = {"task", "model", "cell", "params", "batch", "micro_batch", "accumulate", "gpu_memory_gib",
                 "tflops_per_step", "steps", "gpu_hours"}  # fmt: skip
    assert all(set(c) >= cell_keys for c in out["cells"])
    assert set(out["total"]) == {"disk_gb", "cpu_hours", "gpu_hours"}
    pipe = pipeline.load("params.yaml", SMALL_GRID)
    assert [s["name"] for s in out["stages"]] == [s.name for s in pipe.stages()]
    assert [(c["task"], c["model"], c["cell"]) for c in out["cells"]] == [
        (c.task, c.model, c.name) for c in pipe.cells() if c.trained]
    for c in out["cells"]:
        assert c["micro_batch"] * c["accumulate"] == c["batch"] == 4  # the demo's train.batch
        assert c["steps"] == 80 and c["params"] > 0 and c["gpu_memory_gib"] < 24
    # the cached measurements make a second plan identical
    assert _plan_json(tmp_path, monkeypatch, *SMALL_GRID)["cells"] == out["cells"]


def test_plan_warns_when_data_root_is_short_of_disk(tmp_path, monkeypatch, project_root):
    monkeypatch.chdir(project_root)
    Usage = namedtuple("Usage", "total used free")
    monkeypatch.setattr(plan_mod.shutil, "disk_usage", lambda path: Usage(10**12, 10**12, 10**6))
    out = _plan_json(tmp_path, monkeypatch, *SMALL_GRID)
    assert any(w.startswith("data.root (data): 0.0 GB free") for w in out["warnings"]), out["warnings"]


def test_plan_says_when_the_lists_are_not_the_profiles_grid(tmp_path, monkeypatch, project_root):
    """`-S profile=paper` alone plans the paper profile over the committed (demo) lists: the plan says so
    and names the command that plans the paper study; a cut of the demo's lists names the keys it cut."""
    monkeypatch.chdir(project_root)
    out = _plan_json(tmp_path, monkeypatch, "profile=paper", "models=[nafnet]", "pretrain_models={ipt: [], dcpt: []}")
    assert ("this plans the grid lists as set, not profiles.paper.grid (models, strategies, pretrain_models "
            "differ): `restorebench --profile paper plan` plans the profile's whole grid, `restorebench profile "
            "paper` sets it") in out["warnings"]  # fmt: skip
    out = _plan_json(tmp_path, monkeypatch, "models=[nafnet]", "pretrain_models={ipt: [], dcpt: []}")
    assert any("not profiles.demo.grid (models, pretrain_models differ)" in w for w in out["warnings"])


@pytest.mark.slow
def test_every_paper_cell_fits_an_80_gib_gpu_as_it_will_run(project_root, monkeypatch):
    """The paper grid (measured once, then cached): every trained cell is listed, and with the chosen
    micro-batch and checkpointing each fits 80 GiB (92% of it, the plan's budget)."""
    monkeypatch.chdir(project_root)
    pipe = pipeline.load("params.yaml", profile_overrides(read_params("params.yaml"), "paper"))
    result = plan_mod.make_plan(pipe, gpu_memory_gib=80)
    listed = {(c.task, c.model, c.cell) for c in result.cells}
    assert {(c.task, c.model, c.name) for c in pipe.cells() if c.trained} <= listed
    for c in result.cells:
        assert c.fits and c.gpu_memory_gib <= 80 * plan_mod.BUDGET_SHARE, c
        assert c.micro_batch * c.accumulate == c.batch
    vit = [c for c in result.cells if c.model == "vit_adapter" and c.cell == "full"]
    assert vit and all(c.accumulate > 1 for c in vit)  # batch 16 at 512^2 does not fit whole


def test_a_progressive_recipe_interpolates_between_its_crops_exactly():
    """Restormer (convolutions, channel attention): the cost at a middle crop, interpolated in pixels
    between the smallest and largest crops, equals its measurement."""
    build = functools.partial(build_model, "restormer", variant="demo")
    small, large, middle = (measure_step(build, p, amp=True) for p in (32, 96, 64))
    guess = costs.interpolate(small, large, 32, 96, 64)
    assert abs(guess.per_image_bytes - middle.per_image_bytes) <= 0.01 * middle.per_image_bytes
    assert abs(guess.flops_per_image - middle.flops_per_image) <= 0.01 * middle.flops_per_image
