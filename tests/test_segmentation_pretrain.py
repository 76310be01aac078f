"""The demo's segmentation pretraining writes checkpoints the paper profile's loaders read.

Each tiny segmentation model is trained as a segmenter on the seeded synthetic set, its checkpoint written in
the published format (hub snapshot for the Swin models, mmcv/mmseg .pth for ViT-Adapter), then a finetuning
cell is built from it through `init_model` (the path `profiles.P.pretrained.M` takes) and its backbone must
hold exactly the segmentation-trained tensors.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from restorebench.config import ConfigError, load_config
from restorebench.errors import RestorebenchError
from restorebench.pretrain import segmentation as seg
from restorebench.train.finetune import init_model
from tests.helpers.vit_adapter_checkpoint import Arch, published_shapes

STEPS = 4  # the layout and loading checks; the learning check runs the demo's own steps (slow)


def _run(project_root: Path, tmp_path: Path, model: str, steps: int | None = STEPS) -> tuple[object, dict, Path]:
    over = [f"profiles.demo.pretrain.segmentation.steps={steps}"] if steps else []
    cfg = load_config(project_root / "params.yaml", over)
    out = tmp_path / "runs" / "segmentation" / model
    torch.set_num_threads(1)
    summary = seg.segmentation_stage(cfg, model, out)
    return cfg, summary, out


def test_synthetic_set_is_seeded_and_labelled():
    a_img, a_lab = seg.synthetic_batch(0, "train", 3, 2, 64, 4)
    b_img, b_lab = seg.synthetic_batch(0, "train", 3, 2, 64, 4)
    c_img, _ = seg.synthetic_batch(1, "train", 3, 2, 64, 4)
    assert a_img.shape == (2, 3, 64, 64) and a_lab.shape == (2, 64, 64) and a_lab.dtype == torch.int64
    assert torch.equal(a_img, b_img) and torch.equal(a_lab, b_lab)
    assert not torch.equal(a_img, c_img)
    assert 0.0 <= float(a_img.min()) and float(a_img.max()) <= 1.0
    labels, _ = seg.synthetic_batch(0, "train", 0, 16, 64, 4)[1], None
    assert set(torch.unique(labels).tolist()) == {0, 1, 2, 3}


def test_mask_targets_and_semantic_map_follow_mask2former():
    labels = torch.tensor([[[0, 2], [2, 2]]])
    masks, classes = seg.mask_targets(labels)
    assert classes[0].tolist() == [0, 2]
    assert masks[0].tolist() == [[[1, 0], [0, 0]], [[0, 1], [1, 1]]]
    # one query of class 1 covering the left column, one of class 0 the right: argmax follows the masks
    class_logits = torch.tensor([[[0.0, 9.0, 0.0], [9.0, 0.0, 0.0]]])
    mask_logits = torch.tensor([[[[9.0, -9.0]] * 2, [[-9.0, 9.0]] * 2]])
    assert seg.semantic_map(class_logits, mask_logits, (2, 2)).tolist() == [[[1, 0], [1, 0]]]


@pytest.mark.slow
@pytest.mark.parametrize("model", ["swin_upernet", "swin_mask2former", "vit_adapter"])
def test_the_demo_training_segments_held_out_images(project_root: Path, tmp_path: Path, model: str):
    _, summary, out = _run(project_root, tmp_path, model, steps=None)
    held = summary["held_out"]
    assert held["pixel_accuracy"] > held["chance_accuracy"] + 0.03, held  # beats painting the commonest class
    assert held["miou"] > 1.5 * held["chance_miou"], held
    assert summary["last_loss"] < summary["first_loss"]
    assert json.loads((out / "segmentation.json").read_text())["held_out"] == held


@pytest.mark.parametrize("model", ["swin_upernet", "swin_mask2former", "vit_adapter"])
def test_checkpoint_loads_through_the_pretrained_entry(project_root: Path, tmp_path: Path, model: str):
    cfg, summary, out = _run(project_root, tmp_path, model)
    assert summary["steps"] == STEPS and set(summary["held_out"]) == {"pixel_accuracy", "miou", "chance_accuracy",
                                                                      "chance_miou"}
    ckpt = out if model != "vit_adapter" else out / seg.CHECKPOINT_FILE
    assert summary["checkpoint"] == str(seg.checkpoint_path(model))
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no staging folder left behind

    # the published layout, checked against sources independent of the loaders
    if model == "vit_adapter":
        from restorebench.models.safe_unpickle import load_pickled
        from restorebench.models.weights import read_state_dict

        state = read_state_dict(ckpt)  # weights-only unpickling: mmcv's meta with a numpy score passes
        blob = load_pickled(ckpt)  # weights only, with the release's numpy scalars allowed
        assert set(blob) == {"meta", "state_dict", "optimizer"}
        assert blob["meta"]["CLASSES"][0] == "background" and blob["meta"]["iter"] == STEPS
        demo = Arch(embed=32, depth=2, heads=2, img_size=64, conv_inplane=16, deform_heads=2,
                    interactions=[[0, 0], [1, 1]], feat=32, pixel_ffn=64, pixel_layers=1, pixel_heads=2, queries=8,
                    decoder_layers=2, decoder_ffn=64, num_classes=cfg.pretrain.segmentation.classes)  # fmt: skip
        assert {k: tuple(v.shape) for k, v in state.items()} == published_shapes(demo)
    else:
        from transformers import AutoModelForSemanticSegmentation, Mask2FormerForUniversalSegmentation

        config = json.loads((ckpt / "config.json").read_text())
        assert config["model_type"] == {"swin_upernet": "upernet", "swin_mask2former": "mask2former"}[model]
        assert (ckpt / "model.safetensors").is_file()
        loader = Mask2FormerForUniversalSegmentation if model == "swin_mask2former" else AutoModelForSemanticSegmentation
        hub = loader.from_pretrained(ckpt)  # transformers reads it as it reads the hub's
        state = hub.state_dict()

    # finetuning starts from it through the paper profile's path: profiles.P.pretrained.M -> init_model
    cwd = os.getcwd()
    os.chdir(tmp_path)  # the entry is relative, as params.yaml will write it
    try:
        cfg = load_config(project_root / "params.yaml", [f"profiles.demo.pretrained.{model}={seg.checkpoint_path(model)}"])
        torch.manual_seed(cfg.seed)
        net, init = init_model(cfg, model, "denoise")
    finally:
        os.chdir(cwd)
    assert init == str(seg.checkpoint_path(model))
    restored = net.state_dict()
    filled = net.checkpoint_parameters()
    assert [n for n in filled if n.startswith("backbone.")], filled[:3]
    if model == "vit_adapter":
        filled = [n for n in filled if n.startswith("backbone.")]
    for name in filled:
        assert torch.equal(restored[name], state[_published_name(model, name)]), name
    if model == "vit_adapter":  # the renamed and packed tensors of the published layout
        assert torch.equal(restored["adapter.norms.3.running_var"], state["backbone.norm4.running_var"])
        q = restored["query_decoder.transformer_module.decoder.layers.1.self_attn.q_proj.weight"]
        packed = state["decode_head.transformer_decoder.layers.1.attentions.1.attn.in_proj_weight"]
        assert torch.equal(q, packed[: q.shape[0]])


def _published_name(model: str, name: str) -> str:
    """A restorer tensor's name in the checkpoint: transformers' UperNet names are the restorer's; the
    Mask2Former model nests its parts (Mask2FormerModel: pixel_level_module.encoder / decoder,
    transformer_module); timm's Beit and ViT-Adapter's BEiT share names, so only the ViT (backbone.*) is
    compared by name for vit_adapter (the other parts by the spot checks above)."""
    if model == "swin_mask2former":
        for ours, theirs in (("backbone.", "model.pixel_level_module.encoder."),
                             ("decoder.", "model.pixel_level_module.decoder."),
                             ("query_decoder.transformer_module.", "model.transformer_module.")):
            if name.startswith(ours):
                return theirs + name[len(ours):]
    return name


def test_bad_inputs_fail_with_the_key(project_root: Path, tmp_path: Path):
    cfg = load_config(project_root / "params.yaml")
    with pytest.raises(RestorebenchError, match=r"--model: 'nafnet' has no segmentation head"):
        seg.segmentation_stage(cfg, "nafnet", tmp_path / "x")
    cfg = load_config(project_root / "params.yaml", ["profiles.demo.pretrain.segmentation.size=80"])
    with pytest.raises(RestorebenchError, match=r"pretrain\.segmentation\.size: 80 is not a multiple of 32"):
        seg.segmentation_stage(cfg, "swin_upernet", tmp_path / "x")
    with pytest.raises(ConfigError, match=r"pretrain\.segmentation\.classes"):
        load_config(project_root / "params.yaml", ["profiles.demo.pretrain.segmentation.classes=1"])
    assert not (tmp_path / "x").exists()


def test_cli_writes_the_folder_the_pretrained_entry_names(project_root: Path, tmp_path: Path, monkeypatch):
    from typer.testing import CliRunner

    from restorebench.cli import app

    monkeypatch.chdir(tmp_path)
    params = str(project_root / "params.yaml")
    runner = CliRunner()
    bad = runner.invoke(app, ["--params", params, "segpretrain", "--model", "nafnet"])
    assert bad.exit_code == 1 and "error: --model: 'nafnet' is not allowed" in bad.output
    sets = ["-S", "profiles.demo.pretrain.segmentation.steps=2", "-S", "profiles.demo.pretrain.segmentation.held_out=2"]
    ok = runner.invoke(app, ["--params", params, *sets, "--threads", "1", "segpretrain", "--model", "swin_upernet"])
    assert ok.exit_code == 0, ok.output
    assert "segpretrain swin_upernet: 2 steps" in ok.output and "-> runs/segmentation/swin_upernet" in ok.output
    assert sorted(p.name for p in (tmp_path / "runs/segmentation/swin_upernet").iterdir()) == [
        "config.json", "model.safetensors", "segmentation.json"]
