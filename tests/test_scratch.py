"""The scratch control: the same architecture from the seeded random init, the profile's checkpoint not loaded."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from restorebench.config import PRETRAIN_METHODS, ConfigError, cell_name, load_config
from restorebench.errors import RestorebenchError
from restorebench.models import build_model
from restorebench.train.finetune import init_model

ALL_SEG = "pretrain_models.scratch=[swin_upernet, swin_mask2former, vit_adapter]"
SEG_CKPTS = [f"profiles.demo.pretrained.{m}=ckpt/{m}" for m in ("swin_upernet", "swin_mask2former", "vit_adapter")]


def test_scratch_is_a_pretrain_method_named_like_the_others():
    assert "scratch" in PRETRAIN_METHODS
    assert cell_name("full", "scratch") == "scratch-full"
    assert cell_name("full", "scratch", 1) == "scratch-full-seed1"


def test_scratch_cells_need_a_checkpoint_in_every_profile(project_root: Path):
    params = project_root / "params.yaml"
    cfg = load_config(params, [ALL_SEG, *SEG_CKPTS])
    assert cfg.pretrain_models["scratch"] == ["swin_upernet", "swin_mask2former", "vit_adapter"]
    # a null entry: the model's plain cells already start from a random init
    with pytest.raises(ConfigError, match=r"pretrain_models\.scratch\[0\]: 'swin_upernet' has no checkpoint in "
                                          r"profiles\.demo\.pretrained.*drop swin_upernet from pretrain_models\.scratch"):
        load_config(params, ["pretrain_models.scratch=[swin_upernet]", "profiles.demo.pretrained.swin_upernet=null"])
    # checked in the paper profile too, while demo is active
    with pytest.raises(ConfigError, match=r"'nafnet' has no checkpoint in profiles\.(demo|paper)\.pretrained"):
        load_config(params, ["pretrain_models.scratch=[nafnet]"])
    with pytest.raises(ConfigError, match=r"pretrain_models\.scratch\[0\]: 'swin_upernet' is not in `models`"):
        load_config(params, ["models=[nafnet]", "pretrain_models.dcpt=[nafnet]", "pretrain_models.scratch=[swin_upernet]"])
    with pytest.raises(ConfigError, match=r"pretrain_models\.scratch\[0\]: 'swin_upernt'.*did you mean 'swin_upernet'"):
        load_config(params, ["pretrain_models.scratch=[swin_upernt]"])
    # left out: no scratch cells (ipt and dcpt stay required)
    assert "scratch" not in load_config(params, ["pretrain_models={ipt: [ipt], dcpt: []}"]).pretrain_models
    with pytest.raises(ConfigError, match=r"pretrain_models\.dcpt: missing"):
        load_config(params, ["pretrain_models={ipt: [], scratch: []}"])


def test_scratch_builds_the_seeded_random_init_not_the_checkpoint(project_root: Path, tmp_path: Path):
    torch.manual_seed(5)
    trained = build_model("swin_upernet", variant="demo")
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(0.25)
    ckpt = tmp_path / "upernet.safetensors"
    # a segmentation checkpoint's tensors: backbone and decoder, no restoration head
    save_file({k: v.contiguous() for k, v in trained.state_dict().items() if not k.startswith("head.")}, str(ckpt))
    cfg = load_config(project_root / "params.yaml", [f"profiles.demo.pretrained.swin_upernet={ckpt}"])

    torch.manual_seed(cfg.seed)
    loaded, init = init_model(cfg, "swin_upernet", "denoise")
    assert init == str(ckpt)
    torch.manual_seed(cfg.seed)
    scratch, scratch_init = init_model(cfg, "swin_upernet", "denoise", scratch=True)
    assert scratch_init == f"scratch: random(seed={cfg.seed}), {ckpt} not loaded"
    torch.manual_seed(cfg.seed)
    seeded = build_model("swin_upernet", variant="demo")

    ours, theirs, fresh = scratch.state_dict(), loaded.state_dict(), seeded.state_dict()
    backbone = [k for k, _ in scratch.named_parameters() if k.startswith(("backbone.", "decode_head."))]
    assert backbone
    for key in backbone:
        assert torch.equal(ours[key], fresh[key]), key  # the seeded random init
        assert torch.equal(theirs[key], trained.state_dict()[key]), key  # the checkpoint cell loads it
        assert not torch.equal(ours[key], theirs[key]), key
    # the new head is drawn from the same seed in both cells: the checkpoint is the only difference
    for key in (k for k in ours if k.startswith("head.")):
        assert torch.equal(ours[key], theirs[key]), key


def test_scratch_refuses_a_model_without_a_checkpoint(project_root: Path):
    cfg = load_config(project_root / "params.yaml")
    with pytest.raises(RestorebenchError, match=r"--pretrain: scratch drops nafnet's checkpoint, but "
                                                r"profiles\.demo\.pretrained\.nafnet is null.*use --pretrain none"):
        init_model(cfg, "nafnet", "denoise", scratch=True)
