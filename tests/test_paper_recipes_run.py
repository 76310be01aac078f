"""The paper profile runs end to end before a GPU sees it: every grid model's paper variant with its paper recipe
(progressive stages, warmup, poly, layer decay, backbone multiplier, clipping, mixup) for a few steps on tiny
crops, through the `finetune` and `evaluate` commands. The iteration counts, stages, batch and crops are scaled
down by overrides; the code paths are the paper run's. The segmentation models start from a seeded random init
(their checkpoints cannot be downloaded here), and ViT-Adapter runs its paper recipe on the BEiTv2-B variant:
the paper's BEiTv2-L (~570M parameters) does not train in reasonable time on a 2-core CPU."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import restorebench.evaluate as ev
from restorebench.cli import app
from restorebench.config import load_config
from restorebench.train import loop as loop_module
from restorebench.train import strategies
from restorebench.train.finetune import loop_config
from tests.helpers.stores import write_sidd_store

runner = CliRunner()
P = "profiles.paper"
# model -> recipe overrides that shrink the run but keep its schedule's shape and every feature switched on
SHRINK = {
    "swin_upernet": ["steps=3", "warmup=2", "batch=2", "patch=32"],  # warmup + poly 1.0
    "swin_mask2former": ["steps=3", "batch=2", "patch=32"],  # poly 0.9, backbone x0.1, clipping 0.01
    "vit_adapter": ["steps=3", "warmup=2", "batch=2", "patch=32"],  # layer decay 0.9, warmup + poly
    "nafnet": ["steps=3", "batch=2", "patch=32"],  # cosine, clipping 0.01, no flips (SIDD)
    # progressive stages, constant then cosine, clipping, mixup (SIDD)
    "restormer": ["stages=[{iters: 2, patch: 16, batch: 2}, {iters: 2, patch: 32, batch: 1}]", "constant=2"],
}


@pytest.mark.slow
@pytest.mark.parametrize("model", list(SHRINK))
def test_paper_variant_and_recipe_finetune_and_evaluate(project_root, tmp_path, monkeypatch, model):
    monkeypatch.chdir(tmp_path)
    write_sidd_store(tmp_path, size=48)
    sets = ["profile=paper", f"{P}.train.workers=0", f"{P}.train.holdout=0.0", f"{P}.train.checkpoint_every=100",
            f"{P}.train.log_every=1", f"{P}.train.amp=false", f"{P}.train.channels_last=false",
            f"{P}.train.deterministic=true", f"{P}.pretrained.{model}=null", f"{P}.evaluate.crops=0",
            "pretrain_models.scratch=[]"]  # (a scratch control needs the checkpoint this run drops)
    sets += [f"{P}.train.models.{model}.{kv}" for kv in SHRINK[model]]
    if model == "vit_adapter":  # BEiTv2-L is too big for the CPU: the same recipe on BEiTv2-B
        sets += [f"{P}.variants.vit_adapter.denoise=beitv2-b"]
    args = ["--params", str(project_root / "params.yaml"), *(a for kv in sets for a in ("-S", kv))]
    cfg = load_config(project_root / "params.yaml", sets)
    recipe = cfg.train.recipe(model, "denoise")

    clips, groups = [], []
    real_clip, real_groups = torch.nn.utils.clip_grad_norm_, strategies.optimizer_groups
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", lambda p, m, *a, **k: clips.append(m) or real_clip(p, m, *a, **k))
    monkeypatch.setattr(strategies, "optimizer_groups", lambda *a, **k: groups.append(k) or real_groups(*a, **k))
    strategy = "llrd" if model == "nafnet" else "full"
    result = runner.invoke(app, [*args, "finetune", "--task", "denoise", "--model", model, "--strategy", strategy])
    assert result.exit_code == 0, result.output
    train = json.loads((tmp_path / f"runs/finetune/denoise/{model}/{strategy}/train.json").read_text())
    steps = recipe.total_steps(cfg.train.steps)
    assert train["steps"] == steps and train["variant"] == cfg.variant(model, "denoise")
    assert clips == [recipe.grad_clip] * steps if recipe.grad_clip else clips == []
    kw = groups[0]
    assert (kw["layer_decay"], kw["backbone_lr_mult"], list(kw["no_decay"])) == (
        recipe.layer_decay, recipe.backbone_lr_mult, list(recipe.no_decay))
    history = json.loads((tmp_path / f"runs/finetune/denoise/{model}/{strategy}/history.json").read_text())
    loop_cfg = loop_config(cfg, model, strategy, task="denoise")
    for row in history:  # the logged LR (the top group's, after the step) follows the recipe's schedule
        assert row["lr"] == pytest.approx(recipe.lr * loop_module.schedule_factor(loop_cfg, row["step"]))
    assert len(history) == steps

    rng = np.random.default_rng(0)  # one odd-sized image: the model pads to its multiple and crops back
    item = ev.EvalItem("0000_00", *(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8) for _ in range(2)))
    monkeypatch.setattr(ev, "eval_items", lambda task, data_root: iter([item]))
    result = runner.invoke(app, [*args, "evaluate", "--task", "denoise", "--model", model, "--strategy", strategy])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / f"metrics/finetune/denoise/{model}/{strategy}.json").read_text())
    prov = json.loads((tmp_path / f"results/eval/denoise/{model}/{strategy}/provenance.json").read_text())
    assert np.isfinite(metrics["psnr"]) and prov["tiling"]["used"] is False and prov["images"] == 1
