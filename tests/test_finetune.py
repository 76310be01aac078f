"""One grid cell through `restorebench.train.finetune.finetune`: held-out validation images, the val/psnr curve,
and the values it reports against an independent computation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from restorebench.config import load_config
from restorebench.data.datasets import PairedPatchDataset
from restorebench.data.store import holdout_split
from restorebench.data.synth import open_store
from restorebench.metrics import psnr
from restorebench.models import build_model
from restorebench.train import finetune as finetune_module
from restorebench.train.finetune import finetune
from tests.helpers.cells import RANDOM_SEG_INIT
from tests.helpers.stores import SIDD_IMAGES, write_sidd_store


def test_holdout_keeps_whole_images_out(tmp_path):
    store = open_store(write_sidd_store(tmp_path))
    train_idx, held_idx = holdout_split(store, 0.4)
    images = store.index["image"]
    assert sorted({images[i] for i in held_idx}) == SIDD_IMAGES[-2:]  # the last 2 of 5 source images, whole
    assert not {images[i] for i in train_idx} & {images[i] for i in held_idx}
    assert len(train_idx) + len(held_idx) == len(store)
    assert len(holdout_split(store, 0.0)[1]) == 0
    with pytest.raises(ValueError, match=r"profiles.demo.train.holdout: 1.0 must be in \[0, 1\)"):
        holdout_split(store, 1.0, "profiles.demo.train.holdout")


@pytest.fixture()
def cell(project_root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_sidd_store(tmp_path)
    overrides = ["profiles.demo.train.steps=6", "profiles.demo.train.batch=2", "profiles.demo.train.patch=16",
                 "profiles.demo.train.holdout=0.4", "profiles.demo.train.validate_every=3",
                 "profiles.demo.train.checkpoint_every=3", "profiles.demo.train.log_every=3"]
    return load_config(project_root / "params.yaml", overrides)


def test_finetune_validates_on_held_out_images_only(cell, tmp_path, monkeypatch):
    seen = []
    real_items = finetune_module.Items

    class Recording(real_items):  # records the store items every training batch reads
        def __getitem__(self, key):
            if self.dataset.augment:
                seen.append(int(self.index[key[1]]))
            return super().__getitem__(key)

    monkeypatch.setattr(finetune_module, "Items", Recording)
    run = Path("runs/finetune/denoise/nafnet/full")
    summary = finetune(cell, "denoise", "nafnet", "full", run, progress=False)

    store = open_store(tmp_path / "data/store/sidd/train")
    images = store.index["image"]
    assert summary["holdout_images"] == 2
    # what the model card states: the data it trained on (3 of the 5 images, 2 sub-images each), the peak LR
    assert (summary["dataset"], summary["train_images"], summary["train_subimages"]) == ("sidd", 3, 6)
    assert summary["lr"] == cell.train.recipe("nafnet", "denoise").lr and summary["lr_schedule"] == "cosine"
    assert 0.0 <= summary["data_wait"] < 1.0  # the share of wall time spent waiting for the loader
    assert seen and {images[i] for i in seen} <= set(SIDD_IMAGES[:3])  # no held-out image was ever trained on
    history = json.loads((run / "history.json").read_text())
    assert [row["step"] for row in history if "val/psnr" in row] == [3, 6]
    curve = (run / "dvclive/plots/metrics/val/psnr.tsv").read_text().split()
    assert curve[:2] == ["step", "psnr"] and curve[2::2] == ["3", "6"]

    # independently: the saved weights on the held-out crops, PSNR by the NumPy reference in float64
    net = build_model("nafnet", variant="demo")
    net.load_state_dict(load_file(str(run / "model.safetensors")))
    net.eval()
    data = PairedPatchDataset(store, 16, augment=False, seed=cell.seed)
    _, held_idx = holdout_split(store, 0.4)
    scores = []
    with torch.no_grad():
        for i in held_idx:
            lq, gt = data[(0, int(i))]
            out = net(lq[None]).clamp(0, 1)[0]
            scores.append(psnr(out.permute(1, 2, 0).double().numpy(), gt.permute(1, 2, 0).double().numpy(),
                               data_range=1.0))
    assert summary["val_psnr"] == pytest.approx(float(np.mean(scores)), abs=1e-4)
    assert history[-1]["val/psnr"] == summary["val_psnr"]


def test_no_holdout_trains_on_every_image_and_logs_no_validation(cell, project_root):
    cfg = load_config(project_root / "params.yaml",
                      ["profiles.demo.train.steps=3", "profiles.demo.train.batch=2", "profiles.demo.train.patch=16",
                       "profiles.demo.train.holdout=0"])
    run = Path("runs/finetune/denoise/nafnet/full")
    summary = finetune(cfg, "denoise", "nafnet", "full", run, progress=False)
    assert summary["holdout_images"] == 0 and summary["val_psnr"] is None
    assert not (run / "dvclive/plots/metrics/val").exists()


def test_aux_loss_recipe_adds_each_decoder_layers_loss(cell, tmp_path):
    """train.models.M.aux_loss: the model keeps its intermediate decoder layers' images in training and the
    pixel objective adds their losses to the final one (Mask2Former's deep supervision)."""
    import torch.nn.functional as F

    from restorebench.errors import RestorebenchError
    from restorebench.train.cells import cell_kwargs, cell_model
    from restorebench.train.loop import pixel_objective

    cfg = load_config(Path(__file__).resolve().parents[1] / "params.yaml",
                      ["profiles.demo.train.models.swin_mask2former.aux_loss=true", *RANDOM_SEG_INIT])  # fmt: skip
    assert cell_kwargs(cfg, "swin_mask2former", "denoise")["aux_loss"] is True
    torch.manual_seed(0)
    model = cell_model(cfg, "swin_mask2former", "denoise").train()
    with torch.no_grad():
        model.head.out.weight.normal_(std=0.05)  # the zero-initialised last conv: outputs differ per layer
    lq, gt = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    out = model(lq)
    expected = F.l1_loss(out, gt) + sum(F.l1_loss(a, gt) for a in model.aux_outputs)
    assert len(model.aux_outputs) == 2  # the demo's 3 decoder layers: 2 intermediate images
    objective = pixel_objective("l1", aux_outputs=lambda: model.aux_outputs)
    loss, scalars = objective(model, (lq, gt), torch.device("cpu"))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert scalars["aux_loss"].item() == pytest.approx((expected - F.l1_loss(out, gt)).item(), rel=1e-5)
    plain, none = pixel_objective("l1")(model, (lq, gt), torch.device("cpu"))
    assert none == {} and plain.item() == pytest.approx(F.l1_loss(out, gt).item(), rel=1e-6)

    # a whole cell trains with it: config.json records the keyword, the history logs the term
    cfg = load_config(Path(__file__).resolve().parents[1] / "params.yaml",
                      ["profiles.demo.train.steps=2", "profiles.demo.train.batch=2", "profiles.demo.train.patch=16",
                       "profiles.demo.train.log_every=1", "profiles.demo.train.models.swin_mask2former.aux_loss=true",
                       *RANDOM_SEG_INIT])  # fmt: skip
    run = Path("runs/finetune/denoise/swin_mask2former/full")
    finetune(cfg, "denoise", "swin_mask2former", "full", run, progress=False)
    assert json.loads((run / "config.json").read_text())["kwargs"]["aux_loss"] is True
    history = json.loads((run / "history.json").read_text())
    assert all(row["aux_loss"] > 0 for row in history if "loss" in row)

    bad = load_config(Path(__file__).resolve().parents[1] / "params.yaml",
                      ["profiles.demo.train.models.nafnet.aux_loss=true"])  # fmt: skip
    with pytest.raises(RestorebenchError, match=r"profiles\.demo\.train\.models\.nafnet\.aux_loss.*swin_mask2former"):
        cell_kwargs(bad, "nafnet", "denoise")
