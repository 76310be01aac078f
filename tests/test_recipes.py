"""The paper profile's recipes against the official configs, field by field, and every strategy's LR curve
against the closed form of the published schedule."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from restorebench.config import ConfigError, load_config
from restorebench.models import build_model
from restorebench.train.finetune import loop_config
from restorebench.train.loop import make_optimizer
from restorebench.train.strategies import optimizer_groups

MMSEG_SWIN = "open-mmlab/mmsegmentation configs/swin/upernet_swin_tiny_patch4_window7_512x512_160k_ade20k_pretrain_224x224_1K.py"
MMSEG_160K = "open-mmlab/mmsegmentation configs/_base_/schedules/schedule_160k.py"
M2F_BASE = "facebookresearch/Mask2Former configs/ade20k/semantic-segmentation/Base-ADE20K-SemanticSegmentation.yaml"
M2F_TRAIN = "facebookresearch/Mask2Former train_net.py"
D2_DEEPLAB = "detectron2 projects/DeepLab/deeplab/config.py"
VITAD = "czczup/ViT-Adapter segmentation/configs/ade20k/mask2former_beitv2_adapter_large_896_80k_ade20k_ss.py"
VITAD_LD = "czczup/ViT-Adapter segmentation/mmcv_custom/layer_decay_optimizer_constructor.py"
NAF_SIDD = "megvii-research/NAFNet options/train/SIDD/NAFNet-width32.yml"
NAF_GOPRO = "megvii-research/NAFNet options/train/GoPro/NAFNet-width32.yml"
NAF_MODEL = "megvii-research/NAFNet basicsr/models/image_restoration_model.py"
RST_DN = "swz30/Restormer Denoising/Options/RealDenoising_Restormer.yml"
RST_DB = "swz30/Restormer Motion_Deblurring/Options/Deblurring_Restormer.yml"
RST_MODEL = "swz30/Restormer basicsr/models/image_restoration_model.py"

# (model, task or None for both, field) -> (official value, the file it comes from)
OFFICIAL = {
    ("swin_upernet", None, "optimizer"): ("adamw", MMSEG_SWIN),
    ("swin_upernet", None, "lr"): (6e-5, MMSEG_SWIN),
    ("swin_upernet", None, "betas"): ([0.9, 0.999], MMSEG_SWIN),
    ("swin_upernet", None, "weight_decay"): (0.01, MMSEG_SWIN),
    ("swin_upernet", None, "schedule"): ("poly", MMSEG_SWIN),
    ("swin_upernet", None, "power"): (1.0, MMSEG_SWIN),
    ("swin_upernet", None, "min_lr"): (0.0, MMSEG_SWIN),
    ("swin_upernet", None, "warmup"): (1500, MMSEG_SWIN),
    ("swin_upernet", None, "warmup_ratio"): (1e-6, MMSEG_SWIN),
    ("swin_upernet", None, "steps"): (160000, MMSEG_160K),
    ("swin_upernet", None, "batch"): (16, MMSEG_SWIN),  # samples_per_gpu=2 x 8 GPUs
    ("swin_upernet", None, "patch"): (512, MMSEG_SWIN),
    ("swin_upernet", None, "grad_clip"): (0.0, MMSEG_160K),
    ("swin_upernet", None, "backbone_lr_mult"): (1.0, MMSEG_SWIN),
    ("swin_mask2former", None, "optimizer"): ("adamw", M2F_BASE),
    ("swin_mask2former", None, "lr"): (1e-4, M2F_BASE),
    ("swin_mask2former", None, "betas"): ([0.9, 0.999], M2F_TRAIN),  # torch defaults
    ("swin_mask2former", None, "weight_decay"): (0.05, M2F_BASE),
    ("swin_mask2former", None, "backbone_lr_mult"): (0.1, M2F_BASE),
    ("swin_mask2former", None, "schedule"): ("poly", M2F_BASE),
    ("swin_mask2former", None, "power"): (0.9, D2_DEEPLAB),
    ("swin_mask2former", None, "min_lr"): (0.0, D2_DEEPLAB),
    ("swin_mask2former", None, "warmup"): (0, M2F_BASE),
    ("swin_mask2former", None, "steps"): (160000, M2F_BASE),
    ("swin_mask2former", None, "batch"): (16, M2F_BASE),
    ("swin_mask2former", None, "patch"): (512, M2F_BASE),
    ("swin_mask2former", None, "grad_clip"): (0.01, M2F_BASE),
    ("vit_adapter", None, "optimizer"): ("adamw", VITAD),
    ("vit_adapter", None, "lr"): (2e-5, VITAD),
    ("vit_adapter", None, "betas"): ([0.9, 0.999], VITAD),
    ("vit_adapter", None, "weight_decay"): (0.05, VITAD),
    ("vit_adapter", None, "no_decay"): (["1d"], VITAD_LD),
    ("vit_adapter", None, "layer_decay"): (0.9, VITAD),
    ("vit_adapter", None, "schedule"): ("poly", VITAD),
    ("vit_adapter", None, "power"): (1.0, VITAD),
    ("vit_adapter", None, "min_lr"): (0.0, VITAD),
    ("vit_adapter", None, "warmup"): (1500, VITAD),
    ("vit_adapter", None, "warmup_ratio"): (1e-6, VITAD),
    ("vit_adapter", None, "steps"): (80000, VITAD),
    ("vit_adapter", None, "batch"): (16, VITAD),
    ("nafnet", None, "optimizer"): ("adamw", NAF_SIDD),
    ("nafnet", None, "lr"): (1e-3, NAF_SIDD),
    ("nafnet", None, "betas"): ([0.9, 0.9], NAF_SIDD),
    ("nafnet", "denoise", "weight_decay"): (0.0, NAF_SIDD),  # weight_decay: 0.
    ("nafnet", "deblur", "weight_decay"): (1e-3, NAF_GOPRO),  # weight_decay: !!float 1e-3 (at 47ca917b)
    ("nafnet", None, "schedule"): ("cosine", NAF_SIDD),
    ("nafnet", None, "min_lr"): (1e-7, NAF_SIDD),
    ("nafnet", None, "warmup"): (0, NAF_SIDD),
    ("nafnet", None, "steps"): (200000, NAF_SIDD),
    ("nafnet", None, "batch"): (32, NAF_SIDD),  # batch_size_per_gpu 4 x num_gpu 8
    ("nafnet", None, "patch"): (256, NAF_SIDD),
    ("nafnet", None, "loss"): ("psnr", NAF_SIDD),
    ("nafnet", None, "grad_clip"): (0.01, NAF_MODEL),
    ("nafnet", None, "identity_start"): (False, NAF_SIDD),  # pretrain_network_g: ~ (the official init)
    ("nafnet", "denoise", "flip"): (False, NAF_SIDD),
    ("nafnet", "denoise", "rotate"): (False, NAF_SIDD),
    ("nafnet", "deblur", "flip"): (True, NAF_GOPRO),
    ("nafnet", "deblur", "rotate"): (True, NAF_GOPRO),
    ("nafnet", "deblur", "lr"): (1e-3, NAF_GOPRO),
    ("nafnet", "deblur", "min_lr"): (1e-7, NAF_GOPRO),
    ("nafnet", "deblur", "steps"): (200000, NAF_GOPRO),
    ("nafnet", "deblur", "betas"): ([0.9, 0.9], NAF_GOPRO),
    ("nafnet", "deblur", "batch"): (32, NAF_GOPRO),  # batch_size_per_gpu 4 x num_gpu 8
    ("nafnet", "deblur", "patch"): (256, NAF_GOPRO),
    ("nafnet", "deblur", "loss"): ("psnr", NAF_GOPRO),
    ("restormer", None, "optimizer"): ("adamw", RST_DN),
    ("restormer", None, "lr"): (3e-4, RST_DN),
    ("restormer", None, "betas"): ([0.9, 0.999], RST_DN),
    ("restormer", None, "weight_decay"): (1e-4, RST_DN),
    ("restormer", None, "no_decay"): ([], RST_MODEL),
    ("restormer", None, "schedule"): ("constant_then_cosine", RST_DN),
    ("restormer", None, "constant"): (92000, RST_DN),
    ("restormer", None, "min_lr"): (1e-6, RST_DN),
    ("restormer", None, "warmup"): (0, RST_DN),
    ("restormer", None, "loss"): ("l1", RST_DN),
    ("restormer", None, "grad_clip"): (0.01, RST_MODEL),
    ("restormer", None, "flip"): (True, RST_DN),
    ("restormer", None, "rotate"): (True, RST_DN),
    ("restormer", None, "identity_start"): (False, RST_DN),
    ("restormer", "denoise", "mixup"): (1.2, RST_DN),
    ("restormer", "deblur", "mixup"): (0.0, RST_DB),
}
# Values that deviate on purpose, each with its line in FIDELITY.md: (model, task, field) -> (ours, official, file)
DEVIATIONS = {
    ("vit_adapter", None, "patch"): (512, 896, VITAD),  # the prepare stage's sub-images are 512x512
}
# gt_sizes, iters, mini_batch_sizes (per GPU) x num_gpu 8, in both Restormer configs
RESTORMER_STAGES = [(92000, 128, 64), (64000, 160, 40), (48000, 192, 32), (36000, 256, 16), (36000, 320, 8),
                    (24000, 384, 8)]


@pytest.fixture(scope="module")
def paper(project_root):
    return load_config(project_root / "params.yaml", ["profile=paper"])


@pytest.mark.parametrize("key", list(OFFICIAL), ids=lambda k: f"{k[0]}-{k[1] or 'both'}-{k[2]}")
def test_paper_recipe_holds_the_official_value(paper, key):
    model, task, name = key
    value, source = OFFICIAL[key]
    for t in [task] if task else ["denoise", "deblur"]:
        got = getattr(paper.train.recipe(model, t), name)
        ok = got == pytest.approx(value) if isinstance(value, float) else got == value
        assert ok, f"{model}/{t}.{name} = {got!r}, {source} has {value!r}"


def test_every_deviation_is_listed_in_fidelity(paper, project_root):
    text = (project_root / "FIDELITY.md").read_text()
    for (model, task, name), (ours, official, source) in DEVIATIONS.items():
        for t in [task] if task else ["denoise", "deblur"]:
            assert getattr(paper.train.recipe(model, t), name) == ours != official
        assert f"`{model}` `{name}`" in text and source.split()[-1] in text, (model, name)
    assert "official-weights check: not yet run" in text


@pytest.mark.parametrize("task", ["denoise", "deblur"])
def test_restormer_trains_progressively_as_its_configs(paper, task):
    stages = paper.train.stages("restormer", task)
    assert [(s.iters, s.patch, s.batch) for s in stages] == RESTORMER_STAGES, (RST_DN, RST_DB)
    assert sum(s.iters for s in stages) == 300000  # total_iter: 300000
    assert loop_config(paper, "restormer", "full", task=task).steps == 300000
    assert paper.train.crop("restormer", task) == 128


def test_swin_weight_decay_exemptions_follow_mmseg(paper):
    """mmseg's custom_keys (norm / absolute_pos_embed / relative_position_bias_table: no decay; biases decay)."""
    torch.manual_seed(0)
    model = build_model("swin_upernet", variant="demo")
    cfg = loop_config(paper, "swin_upernet", "full", task="denoise")
    optimizer, _ = make_optimizer(model, cfg)
    decay = {n: g["weight_decay"] for g in optimizer.param_groups for n in g["names"]}
    table = [n for n in decay if "relative_position_bias_table" in n]
    norms = [n for n in decay if "norm" in n]
    biases = [n for n in decay if n.endswith(".bias") and "norm" not in n]
    assert table and norms and biases
    assert all(decay[n] == 0.0 for n in table + norms)
    assert all(decay[n] == pytest.approx(0.01) for n in biases)


def test_mask2former_weight_decay_exemptions_follow_its_build_optimizer(paper):
    """Mask2Former's train_net.py build_optimizer with mask2former/config.py: norm modules (WEIGHT_DECAY_NORM 0)
    and nn.Embedding modules (WEIGHT_DECAY_EMBED 0: the queries, the level embeddings) decay-free, by type;
    the linear layers (biases included) decay at 0.05."""
    torch.manual_seed(0)
    model = build_model("swin_mask2former", variant="demo")
    optimizer, _ = make_optimizer(model, loop_config(paper, "swin_mask2former", "full", task="denoise"))
    decay = {n: g["weight_decay"] for g in optimizer.param_groups for n in g["names"]}
    embeddings = {f"{n}.weight" for n, m in model.named_modules() if isinstance(m, torch.nn.Embedding)}
    assert {n.rsplit(".", 2)[-2] for n in embeddings} >= {"queries_embedder", "queries_features", "level_embed"}
    norms = {f"{n}.{p}" for n, m in model.named_modules() if isinstance(m, torch.nn.LayerNorm | torch.nn.GroupNorm)
             for p, _ in m.named_parameters(recurse=False)}  # fmt: skip
    assert embeddings and norms and all(decay[n] == 0.0 for n in embeddings | norms)
    linear = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and "relative_position" not in n]
    assert linear and all(decay[f"{n}.weight"] == pytest.approx(0.05) for n in linear)
    assert all(decay[f"{n}.bias"] == pytest.approx(0.05) for n in linear if f"{n}.bias" in decay)


def test_task_overrides_are_checked(project_root):
    with pytest.raises(ConfigError, match=r"train.models.nafnet.tasks.denoise.flipp: unknown key"):
        load_config(project_root / "params.yaml", ["profiles.paper.train.models.nafnet.tasks.denoise.flipp=true"])
    with pytest.raises(ConfigError, match=r"tasks.denoise.flip/rotate"):
        load_config(project_root / "params.yaml", ["profiles.paper.train.models.nafnet.tasks.denoise.rotate=true"])


# ------------------------------------------------------------------------------------ LR curves


def warm(t: int, warmup: int, ratio: float) -> float:
    return 1 - (1 - t / warmup) * (1 - ratio) if t < warmup else 1.0


def published_lr(model: str, t: int) -> float:
    """The LR of the recipe's base group at iteration t, from the official schedule's closed form."""
    if model == "swin_upernet":  # mmcv poly, power 1, min 0, linear warmup 1500 from 1e-6 x
        return 6e-5 * (1 - t / 160000) ** 1.0 * warm(t, 1500, 1e-6)
    if model == "swin_mask2former":  # detectron2 WarmupPolyLR, power 0.9, no warmup
        return 1e-4 * (1 - t / 160000) ** 0.9
    if model == "vit_adapter":
        return 2e-5 * (1 - t / 80000) * warm(t, 1500, 1e-6)
    if model == "nafnet":  # torch CosineAnnealingLR(T_max=200000, eta_min=1e-7)
        return 1e-7 + (1e-3 - 1e-7) * (1 + math.cos(math.pi * t / 200000)) / 2
    if model == "restormer":  # CosineAnnealingRestartCyclicLR periods [92000, 208000], eta_mins [3e-4, 1e-6]
        return 3e-4 if t < 92000 else 1e-6 + (3e-4 - 1e-6) * (1 + math.cos(math.pi * (t - 92000) / 208000)) / 2
    raise KeyError(model)


# our names of decode_head.{query_embed, query_feat, level_embed, mask_embed, cls_embed}, which ViT-Adapter's
# get_num_layer_for_vit puts at layer 0 ([vitad-ld])
VITAD_LAYER0 = ("queries_embedder", "queries_features", "transformer_module.level_embed", "mask_embedder",
                "class_predictor")  # fmt: skip
STEPS = {"swin_upernet": [0, 1, 750, 1499, 1500, 80000, 159999], "swin_mask2former": [0, 1, 80000, 159999],
         "vit_adapter": [0, 700, 1500, 40000, 79999], "nafnet": [0, 1, 100000, 199999],
         "restormer": [0, 91999, 92000, 196000, 299999]}  # fmt: skip


@pytest.mark.parametrize("model", list(STEPS))
@pytest.mark.parametrize("strategy", ["full", "full_lowlr", "frozen", "llrd"])
def test_strategy_lr_curve_is_the_published_schedule(paper, model, strategy):
    """Each strategy's LR at a few steps, drawn from the optimizer and schedule the loop builds: full is the
    closed form; full_lowlr the same / 10 (warmup start and floor included); frozen the same without the
    backbone; llrd scales the backbone's layers by decay ** (L - 1 - layer) (the recipe's own rate where it
    publishes one: ViT-Adapter's 0.9 in every strategy). Mask2Former's backbone runs at x0.1."""
    torch.manual_seed(0)
    net = build_model(model, variant="demo")
    cfg = loop_config(paper, model, strategy, task="denoise")
    ids, layers = net.layer_ids(), net.num_layers
    backbone = {n for n, _ in net.parameter_groups()["backbone"]}
    for t in STEPS[model]:
        optimizer, _ = make_optimizer(net, cfg, last_step=t - 1)
        names = {n: g["lr"] for g in optimizer.param_groups for n in g["names"]}
        base = published_lr(model, t) * (0.1 if strategy == "full_lowlr" else 1.0)
        if strategy == "frozen":
            assert not backbone & set(names)
        for name, lr in names.items():
            want = base
            decay = 0.9 if (strategy == "llrd" or model == "vit_adapter") else 0.0
            if name in backbone:
                want *= 0.1 if model == "swin_mask2former" else 1.0
                if decay:
                    want *= decay ** (layers - 1 - ids[name])
            elif model == "vit_adapter" and any(k in name for k in VITAD_LAYER0):
                want *= decay ** (layers - 1)  # [vitad-ld] get_num_layer_for_vit: decode_head embeddings at 0
            assert lr == pytest.approx(want, rel=1e-9, abs=1e-18), (model, strategy, t, name)


# ------------------------------------------------------------------------------ layer decay, literal values


def lr_scales(model: torch.nn.Module, strategy: str, **decay: float) -> dict[str, float]:
    """Parameter name -> LR scale of the optimizer groups the strategy builds (base LR 1)."""
    groups = optimizer_groups(model, strategy, lr=1.0, weight_decay=0.0, **decay)
    return {n: g["lr"] for g in groups for n in g["names"]}


# [vitad-ld] for BEiTv2-L: num_layers = paramwise num_layers 24 + 2 = 26, scale 0.9 ** (26 - layer_id - 1);
# blocks.i at layer i + 1, so blocks.23 -> 0.9 ** 1 and blocks.0 -> 0.9 ** 24; layer 0 (cls_token, pos_embed,
# patch_embed, decode_head.{query_embed, query_feat, level_embed, mask_embed, cls_embed}) -> 0.9 ** 25;
# everything else (the adapter, the rest of the decode head) at layer 25 -> 1.0. Written out, not recomputed.
VITAD_L_BLOCKS = {23: 0.9, 22: 0.81, 12: 0.2824295364810001, 1: 0.08862938119652501, 0: 0.07976644307687256}
VITAD_L_LAYER0 = 0.07178979876918531  # 0.9 ** 25
VITAD_L_LAYER0_NAMES = ("backbone.cls_token", "backbone.pos_embed", "backbone.patch_embed.",
                        "query_decoder.transformer_module.queries_embedder.",  # decode_head.query_embed
                        "query_decoder.transformer_module.queries_features.",  # decode_head.query_feat
                        "query_decoder.transformer_module.level_embed.",  # decode_head.level_embed
                        "query_decoder.transformer_module.decoder.mask_predictor.mask_embedder.",  # mask_embed
                        "query_decoder.class_predictor.")  # decode_head.cls_embed  # fmt: skip


def test_vit_adapter_layer_decay_is_the_official_numbering(paper):
    """beitv2-l, built on the meta device (names only, no memory), under the paper recipe's layer decay."""
    recipe = paper.train.recipe("vit_adapter", "denoise")
    assert recipe.layer_decay == 0.9  # [vitad] layer_decay_rate=0.90
    with torch.device("meta"):
        model = build_model("vit_adapter", variant="beitv2-l")
    scales = lr_scales(model, "full", layer_decay=recipe.layer_decay)
    assert len(scales) == len(list(model.parameters()))
    for i, want in VITAD_L_BLOCKS.items():
        block = [n for n in scales if n.startswith(f"backbone.blocks.{i}.")]
        assert block and all(scales[n] == pytest.approx(want, rel=1e-12) for n in block), i
    layer0 = [n for n in scales if n.startswith(VITAD_L_LAYER0_NAMES)]
    assert {"backbone.cls_token", "backbone.patch_embed.proj.weight",
            "query_decoder.transformer_module.queries_embedder.weight",
            "query_decoder.transformer_module.queries_features.weight",
            "query_decoder.transformer_module.level_embed.weight", "query_decoder.class_predictor.weight",
            "query_decoder.transformer_module.decoder.mask_predictor.mask_embedder.0.0.weight"} <= set(layer0)
    assert all(scales[n] == pytest.approx(VITAD_L_LAYER0, rel=1e-12) for n in layer0)
    rest = [n for n in scales if not n.startswith(("backbone.blocks.", *VITAD_L_LAYER0_NAMES))]
    assert any(n.startswith("adapter.") for n in rest) and any(n.startswith("decoder.") for n in rest)
    assert {n: scales[n] for n in rest if scales[n] != 1.0} == {}
    # 24 blocks at 0.9 ** 1 .. 0.9 ** 24, the layer-0 group, the rest at 1: 26 distinct scales
    assert len({round(s, 15) for s in scales.values()}) == 26


# SimMIM's Swin numbering (microsoft/SimMIM optimizer.py at 0e717460, build_finetune_optimizer /
# get_swin_layer) for Swin-T, depths (2, 2, 6, 2): num_layers = 12 + 2 = 14, scale 0.9 ** (13 - layer_id);
# patch_embed layer 0; layers.s.blocks.b at 1 + sum(depths[:s]) + b; a stage's downsample (reduction, norm)
# at sum(depths[:s + 1]), with that stage's last block; anything else (the per-stage output norms) at 13.
SWIN_T_LLRD = {
    "embeddings.": 0.2541865828329001,  # 0.9 ** 13
    "layers.0.blocks.0.": 0.2824295364810001,  # 0.9 ** 12
    "layers.0.blocks.1.": 0.31381059609000006,  # 0.9 ** 11
    "layers.0.downsample.": 0.31381059609000006,
    "layers.1.blocks.0.": 0.3486784401000001,  # 0.9 ** 10
    "layers.1.blocks.1.": 0.3874204890000001,  # 0.9 ** 9
    "layers.1.downsample.": 0.3874204890000001,
    "layers.2.blocks.0.": 0.4304672100000001,  # 0.9 ** 8
    "layers.2.blocks.1.": 0.4782969000000001,
    "layers.2.blocks.2.": 0.531441,
    "layers.2.blocks.3.": 0.5904900000000001,
    "layers.2.blocks.4.": 0.6561000000000001,
    "layers.2.blocks.5.": 0.7290000000000001,  # 0.9 ** 3
    "layers.2.downsample.": 0.7290000000000001,
    "layers.3.blocks.0.": 0.81,
    "layers.3.blocks.1.": 0.9,
    "hidden_states_norms.": 1.0,
}


@pytest.mark.parametrize("model_name", ["swin_upernet", "swin_mask2former"])
def test_swin_llrd_is_simmims_numbering(paper, model_name):
    """swin-t on the meta device under the llrd strategy at the grid's rate (train.llrd_decay 0.9); Mask2Former's
    backbone multiplier 0.1 ([m2f-base]) multiplies on top; decoder and head at 1."""
    assert paper.train.llrd_decay == 0.9
    recipe = paper.train.recipe(model_name, "denoise")
    with torch.device("meta"):
        model = build_model(model_name, variant="swin-t")
    scales = lr_scales(model, "llrd", llrd_decay=paper.train.llrd_decay, backbone_lr_mult=recipe.backbone_lr_mult)
    mult = {"swin_upernet": 1.0, "swin_mask2former": 0.1}[model_name]
    backbone = [n for n in scales if n.startswith("backbone.")]
    for name in backbone:
        keys = [k for k in SWIN_T_LLRD if f".{k}" in f".{name.split('.', 1)[1]}"]
        assert len(keys) == 1, name
        assert scales[name] == pytest.approx(SWIN_T_LLRD[keys[0]] * mult, rel=1e-12), name
    for key in SWIN_T_LLRD:
        assert any(f".{key}" in n for n in backbone), key
    assert all(scales[n] == 1.0 for n in scales if not n.startswith("backbone."))


# ------------------------------------------------------- architecture values against the official configs

MMSEG_SWIN_BASE = "open-mmlab/mmsegmentation configs/_base_/models/upernet_swin.py"
M2F_SWIN_T = "facebookresearch/Mask2Former configs/ade20k/semantic-segmentation/swin/maskformer2_swin_tiny_bs16_160k.yaml"
M2F_R50 = "facebookresearch/Mask2Former configs/ade20k/semantic-segmentation/maskformer2_R50_bs16_160k.yaml"
M2F_CONFIG = "facebookresearch/Mask2Former mask2former/config.py"
M2F_MSDEFORM = "facebookresearch/Mask2Former mask2former/modeling/pixel_decoder/msdeformattn.py"
VITAD_M2F = "czczup/ViT-Adapter segmentation/configs/_base_/models/mask2former_beit.py"


def drop_path(module: torch.nn.Module) -> float:
    """The deepest block's stochastic-depth rate: the configured drop_path_rate (rates rise linearly to it)."""
    return max(float(m.drop_prob) for m in module.modules() if hasattr(m, "drop_prob"))


def swin_fields(net: torch.nn.Module) -> dict:
    c = net.backbone.config
    return {"drop_path": drop_path(net.backbone), "drop_rate": c.hidden_dropout_prob,
            "attn_drop_rate": c.attention_probs_dropout_prob, "mlp_ratio": c.mlp_ratio, "qkv_bias": c.qkv_bias,
            "absolute_pos_embed": c.use_absolute_embeddings, "patch_size": c.patch_size,
            "layer_norm_eps": c.layer_norm_eps, "act": c.hidden_act, "embed_dim": c.embed_dim,
            "depths": list(c.depths), "num_heads": list(c.num_heads), "window_size": c.window_size}  # fmt: skip


def m2f_fields(net: torch.nn.Module) -> dict:
    tm, pixel = net.query_decoder.transformer_module, net.decoder
    layer, enc = tm.decoder.layers[0], pixel.encoder.layers[0]
    return {"hidden_dim": layer.fc1.in_features, "num_queries": tm.queries_features.num_embeddings,
            "dec_layers": len(tm.decoder.layers) + 1, "dim_feedforward": layer.fc1.out_features,
            "nheads": layer.cross_attn.num_heads, "dropout": layer.cross_attn.dropout,
            "ffn_dropout": layer.dropout, "enc_layers": len(pixel.encoder.layers),
            "enc_feedforward": enc.fc1.out_features, "enc_heads": enc.self_attn.n_heads, "enc_dropout": enc.dropout,
            "convs_dim": enc.fc1.in_features, "mask_dim": pixel.mask_projection.out_channels,
            "pre_norm": layer.pre_norm}  # fmt: skip


def upernet_arch(net: torch.nn.Module) -> dict:
    return {**swin_fields(net), "channels": net.decode_head.channels, "pool_scales": list(net.decode_head.pool_scales)}


def vit_adapter_arch(net: torch.nn.Module) -> dict:
    from restorebench.models.vit_adapter import ADAPTER_ARCH, VIT_ARCH

    vit, block, inj = net.backbone, net.backbone.blocks[0], net.adapter.interactions[0].injector.attn
    return {**m2f_fields(net), "vit_drop_path": drop_path(vit), "adapter_drop_path": drop_path(net.adapter),
            "embed_dim": vit.embed_dim, "depth": len(vit.blocks), "num_heads": block.attn.num_heads,
            "rel_pos_grid": list(block.attn.window_size), "abs_pos_emb": vit.pos_embed is not None,
            "qkv_bias": block.attn.q_bias is not None, "mlp_hidden": block.mlp.fc1.out_features,
            # layer-scale init: parameters on the meta device hold no value, so the table build() passes
            "vit_init_values": VIT_ARCH["beitv2-l"]["init_values"],
            "adapter_init_values": ADAPTER_ARCH["beitv2-l"]["init_values"],
            "conv_inplane": net.adapter.spm.stem[0].out_channels, "deform_num_heads": inj.n_heads,
            "n_points": inj.n_points}  # fmt: skip


# (model, field) -> (official value, file); every architecture value the model takes from a hub config or a
# library default, checked on the built model
ARCH_OFFICIAL = {
    "swin_upernet": (upernet_arch, {
        "drop_path": (0.3, MMSEG_SWIN), "drop_rate": (0.0, MMSEG_SWIN_BASE), "attn_drop_rate": (0.0, MMSEG_SWIN_BASE),
        "mlp_ratio": (4.0, MMSEG_SWIN_BASE), "qkv_bias": (True, MMSEG_SWIN_BASE),
        "absolute_pos_embed": (False, MMSEG_SWIN), "patch_size": (4, MMSEG_SWIN_BASE),
        "layer_norm_eps": (1e-5, MMSEG_SWIN_BASE),  # LN, torch's default eps
        "act": ("gelu", MMSEG_SWIN_BASE), "embed_dim": (96, MMSEG_SWIN), "depths": ([2, 2, 6, 2], MMSEG_SWIN),
        "num_heads": ([3, 6, 12, 24], MMSEG_SWIN), "window_size": (7, MMSEG_SWIN),
        "channels": (512, MMSEG_SWIN_BASE), "pool_scales": ([1, 2, 3, 6], MMSEG_SWIN_BASE)}),
    "swin_mask2former": (lambda net: {**swin_fields(net), **m2f_fields(net)}, {
        "drop_path": (0.3, M2F_SWIN_T), "drop_rate": (0.0, M2F_CONFIG), "attn_drop_rate": (0.0, M2F_CONFIG),
        "mlp_ratio": (4.0, M2F_CONFIG), "qkv_bias": (True, M2F_CONFIG), "absolute_pos_embed": (False, M2F_SWIN_T),
        "patch_size": (4, M2F_CONFIG), "layer_norm_eps": (1e-5, M2F_CONFIG), "act": ("gelu", M2F_CONFIG),
        "embed_dim": (96, M2F_SWIN_T), "depths": ([2, 2, 6, 2], M2F_SWIN_T), "num_heads": ([3, 6, 12, 24], M2F_SWIN_T),
        "window_size": (7, M2F_SWIN_T), "hidden_dim": (256, M2F_R50), "num_queries": (100, M2F_R50),
        "dec_layers": (10, M2F_R50), "dim_feedforward": (2048, M2F_R50), "nheads": (8, M2F_R50),
        "dropout": (0.0, M2F_R50), "ffn_dropout": (0.0, M2F_R50), "enc_layers": (6, M2F_R50),
        "enc_feedforward": (1024, M2F_MSDEFORM), "enc_heads": (8, M2F_R50), "enc_dropout": (0.0, M2F_R50),
        "convs_dim": (256, M2F_R50), "mask_dim": (256, M2F_R50), "pre_norm": (False, M2F_R50)}),
    "vit_adapter": (vit_adapter_arch, {
        "vit_drop_path": (0.3, VITAD), "adapter_drop_path": (0.3, VITAD), "embed_dim": (1024, VITAD),
        "depth": (24, VITAD), "num_heads": (16, VITAD), "rel_pos_grid": ([56, 56], VITAD),  # img_size 896 / 16
        "abs_pos_emb": (False, VITAD), "qkv_bias": (True, VITAD), "mlp_hidden": (4096, VITAD),
        "vit_init_values": (1e-6, VITAD), "adapter_init_values": (1e-6, VITAD), "conv_inplane": (64, VITAD),
        "deform_num_heads": (16, VITAD), "n_points": (4, VITAD), "hidden_dim": (1024, VITAD),
        "num_queries": (200, VITAD), "dec_layers": (10, VITAD), "dim_feedforward": (4096, VITAD),
        "nheads": (32, VITAD), "dropout": (0.0, VITAD), "ffn_dropout": (0.0, VITAD), "enc_layers": (6, VITAD),
        "enc_feedforward": (4096, VITAD), "enc_heads": (32, VITAD), "enc_dropout": (0.0, VITAD),
        "convs_dim": (1024, VITAD), "mask_dim": (1024, VITAD), "pre_norm": (False, VITAD_M2F)}),
}  # fmt: skip
PAPER_VARIANT = {"swin_upernet": "swin-t", "swin_mask2former": "swin-t", "vit_adapter": "beitv2-l"}


@pytest.mark.parametrize("model_name", list(ARCH_OFFICIAL))
def test_segmentation_architecture_is_the_official_config(paper, model_name):
    """The paper variant, built on the meta device, field by field against its official training config."""
    assert paper.variants[model_name] == {"denoise": PAPER_VARIANT[model_name], "deblur": PAPER_VARIANT[model_name]}
    with torch.device("meta"):
        net = build_model(model_name, variant=PAPER_VARIANT[model_name])
    read, official = ARCH_OFFICIAL[model_name]
    got = read(net)
    for name, (value, source) in official.items():
        ok = got[name] == pytest.approx(value) if isinstance(value, float) else got[name] == value
        assert ok, f"{model_name}.{name} = {got[name]!r}, {source} has {value!r}"


def test_a_hub_config_sets_shapes_not_the_drop_path(monkeypatch):
    """openmmlab/upernet-swin-tiny's config.json as transformers' upernet/convert_swin_upernet_to_pytorch.py
    writes it (a SwinConfig without drop_path_rate: SwinConfig's default 0.1) still trains at mmseg's 0.3; a timm
    snapshot's model_args drop path (0.1) does not replace ViT-Adapter's 0.3 either. Shapes come from the file."""
    from transformers import SwinConfig, UperNetConfig

    from restorebench.models import swin_upernet, vit_adapter
    from restorebench.models.weights import Pretrained

    swin = SwinConfig(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), window_size=7,
                      out_features=["stage1", "stage2", "stage3", "stage4"])
    hub = json.loads(json.dumps(UperNetConfig(backbone_config=swin, auxiliary_in_channels=384, num_labels=150).to_dict()))
    assert hub["backbone_config"]["drop_path_rate"] == pytest.approx(0.1)
    with torch.device("meta"):
        reference = build_model("swin_upernet", variant="swin-t")
        monkeypatch.setattr(swin_upernet, "read_pretrained",
                            lambda ref: Pretrained(reference.state_dict(), hub, Path(ref)))
        net = build_model("swin_upernet", pretrained="openmmlab/upernet-swin-tiny")
    assert drop_path(net.backbone) == pytest.approx(0.3)  # [mmseg-swin] drop_path_rate=0.3
    assert (net.backbone.config.embed_dim, list(net.backbone.config.depths)) == (96, [2, 2, 6, 2])

    timm_cfg = {"architecture": "beitv2_base_patch16_224", "model_args": {"drop_path_rate": 0.1, "depth": 12}}
    with torch.device("meta"):
        vit = build_model("vit_adapter", variant="beitv2-b").backbone
        monkeypatch.setattr(vit_adapter, "read_pretrained", lambda ref: Pretrained(vit.state_dict(), timm_cfg, Path(ref)))
        net = build_model("vit_adapter", pretrained="timm/beitv2_base_patch16_224.in1k_ft_in22k_in1k")
    assert drop_path(net.backbone) == pytest.approx(0.3) and len(net.backbone.blocks) == 12


def fidelity_section(text: str, model: str) -> str:
    start = text.index(f"(`{model}`)")
    end = text.find("\n## ", start)
    return text[start : end if end > 0 else None]


def test_architecture_deviations_are_listed_in_fidelity(paper, project_root):
    """What the official training runs had and the paper profile leaves out, each with its row: deep supervision
    (Mask2Former and ViT-Adapter's Mask2FormerHead: every decoder layer's loss), UperNet's auxiliary FCN head
    (loss_weight 0.4) and BEiT's relative-position table away from 896 px."""
    text = (project_root / "FIDELITY.md").read_text()
    for model in ("swin_mask2former", "vit_adapter"):
        assert paper.train.recipe(model, "denoise").aux_loss is False  # official: deep supervision on
        assert "| deep supervision |" in fidelity_section(text, model), model
    with torch.device("meta"):
        upernet = build_model("swin_upernet", variant="swin-t")
    assert not any("auxiliary" in n for n, _ in upernet.named_modules())  # [mmseg-swin-model] FCNHead, 0.4
    assert "| auxiliary head |" in fidelity_section(text, "swin_upernet") and "0.4" in fidelity_section(text, "swin_upernet")
    assert paper.train.recipe("vit_adapter", "denoise").patch != 896
    assert "| relative-position table |" in fidelity_section(text, "vit_adapter")
    assert "drop_path_rate: SwinConfig's default 0.1" in text  # the hub value the model no longer takes
