"""The three segmentation-derived restorers (swin_upernet, swin_mask2former, vit_adapter), tiny variants on CPU.

What a user would check: any H, W in and out; an untrained model is the identity; every parameter learns;
a saved model reloads bit-exactly; hub-layout checkpoints (saved here by transformers / timm, no network)
fill every backbone tensor (Mask2Former: every tensor but the class predictor; ViT-Adapter's released
segmentation checkpoint: its published key set, mapped by one table); a bad checkpoint fails with the
tensor's name.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from restorebench.models import swin_mask2former, swin_upernet, vit_adapter
from restorebench.models.weights import WeightsError
from tests.helpers.vit_adapter_checkpoint import Arch, parameter_count, published_shapes, synthetic_checkpoint

MODULES = {"swin_upernet": swin_upernet, "swin_mask2former": swin_mask2former, "vit_adapter": vit_adapter}


@pytest.fixture(params=sorted(MODULES))
def name(request: pytest.FixtureRequest) -> str:
    return request.param


def demo(name: str, **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    return MODULES[name].build(variant="demo", **kw)


def perturb_head(model: torch.nn.Module) -> None:
    """Give the zero-initialised last conv some weight so the output depends on everything."""
    with torch.no_grad():
        model.head.out.weight.normal_(std=0.05)
        model.head.out.bias.normal_(std=0.05)


def test_variants_listed(name: str) -> None:
    assert "demo" in MODULES[name].VARIANTS
    with pytest.raises(ValueError, match="unknown variant"):
        MODULES[name].build(variant="nope")
    with pytest.raises(TypeError, match="unknown keyword"):
        MODULES[name].build(variant="demo", not_an_option=1)


def test_odd_size_and_identity_at_init(name: str) -> None:
    model = demo(name)
    x = torch.rand(2, 3, 37, 53)
    for mode in (True, False):
        model.train(mode)
        with torch.no_grad():
            y = model(x)
        assert y.shape == x.shape
        assert torch.equal(y, x), f"untrained {name} should return its input exactly (train={mode})"


def test_every_parameter_gets_a_gradient(name: str) -> None:
    model = demo(name)
    perturb_head(model)
    model.train()
    # 40x72 pads to 64x96: a token grid other than the ViT's pretraining grid (resampled position bias)
    x = torch.rand(2, 3, 40, 72)
    loss = (model(x) - x.flip(-1)).abs().mean()
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"parameters without gradient: {missing[:10]}"
    zero = [n for n, p in model.named_parameters() if p.grad is not None and not p.grad.abs().sum() > 0]
    # zero by design at init (Deformable-DETR init): a deformable-attention query reaches the output only
    # through the zero-initialised offset / attention-weight projections, so what shapes only the query
    # (query norms, the pixel decoder's level embedding) starts with no gradient; and the ViT-Adapter
    # injectors sit behind gamma = 0. One optimiser step later all of these move.
    allowed = (".query_norm.", "decoder.level_embed", ".injector.attn.", ".injector.feat_norm.")
    unexpected = [n for n in zero if not any(a in n for a in allowed)]
    assert not unexpected, f"parameters with an all-zero gradient: {unexpected[:10]}"


def test_parameter_groups_cover_every_parameter_once(name: str) -> None:
    model = demo(name)
    groups = model.parameter_groups()
    assert set(groups) == {"backbone", "decoder", "head"}
    ids = [id(p) for g in groups.values() for _, p in g]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    assert all(n.startswith("backbone.") for n, _ in groups["backbone"])
    assert all(n.startswith("head.") for n, _ in groups["head"])
    if name != "swin_upernet":  # the transformer decoder (and the ViT-Adapter's adapter) are "decoder"
        assert any(n.startswith("query_decoder.transformer_module.decoder.layers.") for n, _ in groups["decoder"])
    layer_ids = model.layer_ids()
    # ViT-Adapter's layer decay also numbers the decoder's query/level/mask/class embeddings (at layer 0)
    decoder_ids = {"query_embed": "queries_embedder", "query_feat": "queries_features",
                   "level_embed": "transformer_module.level_embed", "mask_embed": "mask_embedder",
                   "cls_embed": "class_predictor"} if name == "vit_adapter" else {}  # fmt: skip
    extra = {n for n, _ in groups["decoder"] if any(ours in n for ours in decoder_ids.values())}
    assert set(layer_ids) == {n for n, _ in groups["backbone"]} | extra
    assert all(layer_ids[n] == 0 for n in extra) and (len(extra) == 11 if extra else name != "vit_adapter")
    # ids run 0 .. num_layers - 1; ViT-Adapter's top layer (depth + 1, scale 1: the adapter and the rest of the
    # decoder, [vitad-ld] num_layers = depth + 2) holds no parameter of its ViT
    top = {model.num_layers - 1} if name == "vit_adapter" else set()
    assert set(layer_ids.values()) | top == set(range(model.num_layers))


def test_layer_ids_follow_depth() -> None:
    model = swin_upernet.build(variant="demo", depths=[1, 2, 1, 1])
    ids = model.layer_ids()
    assert ids["backbone.swin.embeddings.patch_embeddings.projection.weight"] == 0
    blocks = {k: v for k, v in ids.items() if ".blocks." in k and k.endswith("layernorm_before.weight")}
    assert sorted(blocks.values()) == [1, 2, 3, 4, 5]
    vit = vit_adapter.build(variant="demo")
    vids = vit.layer_ids()
    assert vids["backbone.cls_token"] == 0 and vids["backbone.blocks.1.attn.qkv.weight"] == 2


def test_safetensors_round_trip(name: str, tmp_path: Path) -> None:
    model = demo(name)
    perturb_head(model)
    model.train()
    with torch.no_grad():  # one training-mode pass so BatchNorm running stats differ from their init
        model(torch.rand(2, 3, 64, 64))
    model.eval()
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    torch.manual_seed(123)  # a different random init, all of it overwritten by the file
    loaded = MODULES[name].build(variant="demo", pretrained=str(path)).eval()
    x = torch.rand(1, 3, 37, 53)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


# ------------------------------------------------------------------- hub-layout checkpoints (no network)


@pytest.fixture(scope="module")
def upernet_snapshot(tmp_path_factory: pytest.TempPathFactory):
    from transformers import UperNetConfig, UperNetForSemanticSegmentation

    torch.manual_seed(1)
    cfg = UperNetConfig(
        backbone_config=swin_upernet.swin_config(swin_upernet.SWIN_ARCH["demo"]),
        hidden_size=32,
        auxiliary_channels=8,
        num_labels=5,
    )
    hf = UperNetForSemanticSegmentation(cfg).eval()
    folder = tmp_path_factory.mktemp("upernet")
    hf.save_pretrained(folder)
    return folder, hf


@pytest.fixture(scope="module")
def mask2former_snapshot(tmp_path_factory: pytest.TempPathFactory):
    from transformers import Mask2FormerConfig, Mask2FormerForUniversalSegmentation

    torch.manual_seed(2)
    cfg = Mask2FormerConfig(
        backbone_config=swin_upernet.swin_config(swin_upernet.SWIN_ARCH["demo"]),
        **swin_mask2former.PIXEL_DECODER_DEMO,
        hidden_dim=32,
        decoder_layers=2,
        num_queries=4,
        dim_feedforward=32,
        num_labels=3,
    )
    hf = Mask2FormerForUniversalSegmentation(cfg).eval()
    with torch.no_grad():  # perturbed: no two tensors (e.g. LayerNorm gains at 1) share their values
        for p in hf.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    folder = tmp_path_factory.mktemp("mask2former")
    hf.save_pretrained(folder)
    return folder, hf


@pytest.fixture(scope="module")
def beit_snapshot(tmp_path_factory: pytest.TempPathFactory):
    """A timm hub snapshot: model.safetensors (timm keys, with classifier) + config.json."""
    import timm

    torch.manual_seed(3)
    args = dict(embed_dim=32, depth=2, num_heads=2, img_size=64)
    vit = timm.create_model("beitv2_base_patch16_224", pretrained=False, num_classes=10, **args).eval()
    folder = tmp_path_factory.mktemp("beit")
    save_file({k: v.contiguous() for k, v in vit.state_dict().items()}, str(folder / "model.safetensors"))
    config = {
        "architecture": "beitv2_base_patch16_224",
        "num_classes": 10,
        "model_args": args,
        "pretrained_cfg": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
    }
    (folder / "config.json").write_text(json.dumps(config))
    return folder, vit


def test_upernet_snapshot_fills_backbone_and_decoder(upernet_snapshot) -> None:
    folder, hf = upernet_snapshot
    model = swin_upernet.build(pretrained=str(folder)).eval()
    ref = hf.state_dict()
    own = model.state_dict()
    checked = [k for k in own if k.startswith(("backbone.", "decode_head."))]
    assert len(checked) > 100
    for k in checked:  # same in-memory names as transformers' own model
        assert torch.equal(own[k], ref[k]), k
    x = model.normalize(torch.rand(1, 3, 64, 96))
    pre_classifier = copy.deepcopy(hf.decode_head)
    pre_classifier.classifier = torch.nn.Identity()
    with torch.no_grad():
        ours = model.decode(x)
        expected = pre_classifier(list(hf.backbone(x).feature_maps))
    assert ours.shape == (1, 32, 16, 24)
    assert torch.allclose(ours, expected, atol=1e-6)


def _found_by_value(checkpoint: dict[str, torch.Tensor], model: torch.nn.Module) -> set[str]:
    """Checkpoint keys whose tensor (floating point) equals some tensor of the model's state dict."""
    own: dict[tuple, list[torch.Tensor]] = {}
    for t in model.state_dict().values():
        own.setdefault(tuple(t.shape), []).append(t)
    return {k for k, v in checkpoint.items() if v.is_floating_point()
            and any(torch.equal(v, t) for t in own.get(tuple(v.shape), []))}


def test_mask2former_snapshot_is_used_whole(mask2former_snapshot) -> None:
    """Backbone, pixel decoder and transformer decoder load (>= 95% of the elements, found by value); the
    forward runs them as transformers does and paints the image from the last layer's queries."""
    folder, hf = mask2former_snapshot
    model = swin_mask2former.build(pretrained=str(folder), variant="demo").eval()
    saved = {k: v for k, v in load_file(str(folder / "model.safetensors")).items() if v.is_floating_point()}
    found = _found_by_value(saved, model)
    share = sum(saved[k].numel() for k in found) / sum(v.numel() for v in saved.values())
    assert share >= 0.95, share
    decoder_keys = [k for k in saved if k.startswith("model.transformer_module.")]
    assert len(decoder_keys) > 30 and set(decoder_keys) <= found
    # left out: the 151-way class predictor, the loss's class weights, and the inner SwinModel's final
    # layernorm, which SwinBackbone's own forward never applies (it normalises each stage instead)
    assert {k for k in saved if k not in found} == {
        "class_predictor.weight", "class_predictor.bias", "criterion.empty_weight",
        "model.pixel_level_module.encoder.swin.layernorm.weight", "model.pixel_level_module.encoder.swin.layernorm.bias",
    }
    x = model.normalize(torch.rand(1, 3, 64, 64))
    with torch.no_grad():
        ref = hf.model(x, output_hidden_states=True)
        pixel = model.decoder(model.features(x), return_dict=True)
        assert torch.allclose(pixel.mask_features, ref.pixel_decoder_last_hidden_state, atol=1e-5)
        ours = model.query_decoder.transformer_module(list(pixel.multi_scale_features), pixel.mask_features)
        assert torch.allclose(ours.masks_queries_logits[-1], ref.masks_queries_logits[-1], atol=1e-5)
        image = model.query_decoder(pixel.multi_scale_features, pixel.mask_features)
        weights = model.query_decoder.class_predictor(ref.transformer_decoder_intermediate_states[-1].transpose(0, 1))
        expected = torch.einsum("bqc,bqhw->bchw", weights, ref.masks_queries_logits[-1].sigmoid())
    assert image.shape == (1, 3, 16, 16)
    assert torch.allclose(image, expected, atol=1e-5)
    assert model.checkpoint_parameters() == [n for n, _ in model.named_parameters()
                                             if not n.startswith(("head.", "query_decoder.class_predictor."))]


def test_mask2former_swin_t_size() -> None:
    """Mask2Former Swin-T is 47.4M parameters (Cheng et al. 2022, Table 1; ADE20K 150 classes): ours without
    the head and the 3-way class predictor, plus the published 151-way predictor (256 x 151 + 151)."""
    with torch.device("meta"):
        model = swin_mask2former.build(variant="swin-t")
    n = sum(p.numel() for p in model.parameters())
    n -= sum(p.numel() for p in model.head.parameters())
    n -= sum(p.numel() for p in model.query_decoder.class_predictor.parameters())
    assert abs(n + 256 * 151 + 151 - 47.4e6) / 47.4e6 < 0.01, n


@pytest.mark.parametrize("name", ["swin_mask2former", "vit_adapter"])
def test_aux_loss_paints_every_decoder_layer(name: str) -> None:
    """aux_loss: in training, each intermediate decoder layer also paints a full image (deep supervision)."""
    model = demo(name, aux_loss=True)
    perturb_head(model)
    x = torch.rand(2, 3, 40, 72)
    model.train()
    model(x)
    # decoder_layers 3 in the demo: the learnt queries' prediction, layer 1, and layer 2 (the output)
    assert len(model.aux_outputs) == 2 and all(a.shape == x.shape for a in model.aux_outputs)
    loss = sum((a - x).abs().mean() for a in model.aux_outputs)
    loss.backward()
    assert model.query_decoder.transformer_module.decoder.layers[0].fc2.weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        model(x)
    assert model.aux_outputs == []  # deep supervision is a training-time term only
    assert demo(name).aux_loss is False


@pytest.mark.parametrize("name", ["swin_mask2former", "vit_adapter"])
def test_decoder_features_hook_maps(name: str) -> None:
    """DCPT's hook points: the pixel decoder and the query decoder (its output: the painted 1/4 image)."""
    model = demo(name)
    hooks = model.decoder_features()
    assert hooks and all(isinstance(m, torch.nn.Module) for _, m in hooks)
    seen = []
    handles = [m.register_forward_hook(lambda _m, _i, o: seen.append(o)) for _, m in hooks]
    with torch.no_grad():
        model(torch.rand(1, 3, 64, 64))
    for h in handles:
        h.remove()
    assert len(seen) == len(hooks)
    assert [n for n, _ in hooks] == ["decoder", "query_decoder"]
    assert seen[-1].shape == (1, 3, 16, 16)


def test_beit_snapshot_fills_the_vit_only(beit_snapshot) -> None:
    folder, vit = beit_snapshot
    model = vit_adapter.build(pretrained=str(folder), variant="demo").eval()
    ref = load_file(str(folder / "model.safetensors"))
    own = model.state_dict()
    backbone = [k for k in own if k.startswith("backbone.")]
    assert len(backbone) > 20
    for k in backbone:
        assert torch.equal(own[k], ref[k[len("backbone.") :]]), k
    # at the pretraining grid the (replaced) relative position bias equals timm's own
    attn, ref_attn = model.backbone.blocks[0].attn, vit.blocks[0].attn
    vit_adapter.set_token_grid(model.backbone, (4, 4))
    assert torch.equal(attn._get_rel_pos_bias(), ref_attn._get_rel_pos_bias())
    vit_adapter.set_token_grid(model.backbone, (4, 6))
    assert attn._get_rel_pos_bias().shape == (1, 2, 25, 25)


# (fixture, checkpoint key to corrupt, checkpoint key to delete, module names the errors must contain)
SNAPSHOT_CASES = {
    "swin_upernet": (
        "upernet_snapshot",
        "backbone.embeddings.patch_embeddings.projection.weight",
        "backbone.encoder.layers.0.blocks.0.layernorm_before.weight",
        ("embeddings.patch_embeddings.projection.weight", "layers.0.blocks.0.layernorm_before.weight"),
    ),
    "swin_mask2former": (
        "mask2former_snapshot",
        "model.pixel_level_module.encoder.embeddings.norm.weight",
        "model.pixel_level_module.decoder.mask_projection.weight",
        ("embeddings.norm.weight", "decoder.mask_projection.weight"),
    ),
    "vit_adapter": (
        "beit_snapshot",
        "patch_embed.proj.weight",
        "blocks.1.attn.qkv.weight",
        ("backbone.patch_embed.proj.weight", "backbone.blocks.1.attn.qkv.weight"),
    ),
}


def _rewrite(folder: Path, dest: Path, edit) -> Path:
    dest.mkdir()
    sd = load_file(str(folder / "model.safetensors"))
    edit(sd)
    save_file(sd, str(dest / "model.safetensors"))
    (dest / "config.json").write_text((folder / "config.json").read_text())
    return dest


def test_wrong_shape_is_named(name: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    fixture, bad_key, _, (named, _) = SNAPSHOT_CASES[name]
    folder, _ = request.getfixturevalue(fixture)

    def edit(sd):
        sd[bad_key] = torch.cat([sd[bad_key], sd[bad_key][:1]], dim=0)

    broken = _rewrite(folder, tmp_path / "broken", edit)
    with pytest.raises(WeightsError, match="wrong shape") as err:
        MODULES[name].build(pretrained=str(broken), variant="demo")
    assert named in str(err.value)


def test_missing_backbone_key_is_named(name: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    fixture, _, gone, (_, named) = SNAPSHOT_CASES[name]
    folder, _ = request.getfixturevalue(fixture)
    broken = _rewrite(folder, tmp_path / "broken", lambda sd: sd.pop(gone))
    with pytest.raises(WeightsError, match="missing") as err:
        MODULES[name].build(pretrained=str(broken), variant="demo")
    assert named in str(err.value)


def test_variant_must_agree_with_snapshot(upernet_snapshot) -> None:
    folder, _ = upernet_snapshot
    with pytest.raises(ValueError, match="embed_dim"):
        swin_upernet.build(pretrained=str(folder), variant="swin-t")


def test_swin_t_backbone_size() -> None:
    """Swin-T without its classifier: 28.29M - 0.77M = 27.5M (Liu et al. 2021, Table 1)."""
    with torch.device("meta"):
        model = swin_upernet.build(variant="swin-t")
    n = sum(p.numel() for _, p in model.parameter_groups()["backbone"])
    assert abs(n - 27.5e6) / 27.5e6 < 0.005, n


# ------------------------------------------------ ViT-Adapter's released segmentation checkpoint (mmseg layout)


# the demo variant's sizes in the published layout (vit_adapter.VIT_ARCH / ADAPTER_ARCH / DECODER_ARCH "demo")
DEMO_ARCH = Arch(embed=32, depth=2, heads=2, img_size=64, conv_inplane=16, deform_heads=2, interactions=[[0, 0], [1, 1]],
                 feat=32, pixel_ffn=64, pixel_layers=1, pixel_heads=2, queries=8, decoder_layers=2, decoder_ffn=64,
                 num_classes=5)


@pytest.fixture(scope="module")
def mmseg_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    """A .pth as mmcv saves it ({"meta": ..., "state_dict": ...}) with the published keys at demo sizes."""
    sd = synthetic_checkpoint(DEMO_ARCH, seed=4)
    path = tmp_path_factory.mktemp("vitadapter") / "mask2former_beitv2_adapter_demo.pth"
    torch.save({"meta": {"mmseg_version": "0.20.2", "iter": 80000}, "state_dict": sd}, path)
    return path, sd


def test_vit_adapter_loads_the_published_layout(mmseg_checkpoint) -> None:
    """Every published tensor but the classifiers and the rebuilt position index lands in the model, by value;
    the transformer decoder's among them (self-attention's packed in_proj split into q, k, v)."""
    path, sd = mmseg_checkpoint
    model = vit_adapter.build(variant="demo", pretrained=str(path)).eval()
    own = model.state_dict()
    found = _found_by_value(sd, model)
    for i in range(DEMO_ARCH.decoder_layers):  # the q / k / v thirds of each self-attention
        packed = sd[f"decode_head.transformer_decoder.layers.{i}.attentions.1.attn.in_proj_weight"]
        sa = f"query_decoder.transformer_module.decoder.layers.{i}.self_attn."
        assert torch.equal(torch.cat([own[sa + f"{x}_proj.weight"] for x in "qkv"]), packed)
        found |= {f"decode_head.transformer_decoder.layers.{i}.attentions.1.attn.in_proj_{w}" for w in ("weight", "bias")}
    floats = {k: v for k, v in sd.items() if v.is_floating_point()}
    share = sum(floats[k].numel() for k in found if k in floats) / sum(v.numel() for v in floats.values())
    assert share >= 0.95, share
    assert {k for k in floats if k not in found} == {
        "decode_head.cls_embed.weight", "decode_head.cls_embed.bias", "decode_head.conv_seg.weight",
        "decode_head.conv_seg.bias"}
    assert all(k in found for k in floats if k.startswith("decode_head.transformer_decoder."))
    assert torch.equal(own["adapter.norms.3.running_var"], sd["backbone.norm4.running_var"])
    assert torch.equal(own["adapter.interactions.1.extra_extractors.1.ffn.dwconv.weight"],
                       sd["backbone.interactions.1.extra_extractors.1.ffn.dwconv.dwconv.weight"])
    x = torch.rand(1, 3, 40, 72)
    with torch.no_grad():
        assert torch.equal(model(x), x)  # the head still starts at zero: a loaded model returns its input
    names = set(model.checkpoint_parameters())
    assert names == {n for n, _ in model.named_parameters() if not n.startswith(("head.", "query_decoder.class_predictor."))}


def test_vit_adapter_unknown_checkpoint_key_is_named(mmseg_checkpoint, tmp_path: Path) -> None:
    path, sd = mmseg_checkpoint
    bad = tmp_path / "bad.pth"
    torch.save({"state_dict": {**sd, "decode_head.extra_layer.weight": torch.zeros(2)}}, bad)
    with pytest.raises(WeightsError, match="decode_head.extra_layer.weight"):
        vit_adapter.build(variant="demo", pretrained=str(bad))
    with pytest.raises(ValueError, match="beitv2-b"):
        vit_adapter.build(variant="beitv2-b", pretrained=str(path))


def test_vit_adapter_full_size_layout_matches_the_table() -> None:
    """On the meta device: the published beitv2-l key set, mapped by MMSEG_KEY_TABLE, is exactly the model's
    tensors (but the head and the 3-way class predictor), shape for shape; 571M parameters as published."""
    shapes = published_shapes(Arch())
    with torch.device("meta"):
        model = vit_adapter.build(variant="beitv2-l")
        mapped, dropped = vit_adapter.convert_mmseg_state({k: torch.empty(s) for k, s in shapes.items()})
    own = model.state_dict()
    assert {k: tuple(v.shape) for k, v in mapped.items()} == {k: tuple(own[k].shape) for k in mapped}
    left = {k for k in own if k not in mapped}
    assert left and all(k.startswith(("head.", "query_decoder.class_predictor.")) for k in left), sorted(left)[:5]
    assert len(dropped) == Arch().depth + 4  # 24 position indexes, cls_embed and conv_seg weight/bias
    # ViT-Adapter's segmentation README (ADE20K, Mask2Former, ViT-Adapter-L, BEiTv2-L+COCO, 896, 80k): 571M
    published = 571e6
    assert abs(parameter_count(shapes) - published) / published < 0.01
    n = sum(p.numel() for p in model.parameters())
    n -= sum(p.numel() for p in model.head.parameters()) + sum(p.numel() for p in model.query_decoder.class_predictor.parameters())
    assert abs(n + 1024 * 151 + 151 + 1024 * 150 + 150 - published) / published < 0.01, n
