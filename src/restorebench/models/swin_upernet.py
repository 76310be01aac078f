"""Swin Transformer + UperNet decoder (transformers' UperNetForSemanticSegmentation) turned restorer.

    x (B, 3, H, W) in [0, 1] -> ImageNet-normalise -> reflect-pad to a multiple of 32
    -> SwinBackbone: 4 maps at strides 4, 8, 16, 32 (embed_dim * 1, 2, 4, 8 channels, layer-normed)
    -> UperNetHead without its classifier: PPM on stride 32 + FPN, fused to (B, hidden_size, H/4, W/4)
    -> RestorationHead (PixelShuffle x2 + shallow full-resolution branch) -> residual
    -> x + residual, cropped back to H, W.

Module names follow UperNetForSemanticSegmentation (`backbone.*`, `decode_head.*`), so an
openmmlab/upernet-swin-{tiny,small,base} snapshot (config.json + model.safetensors) loads into the backbone
and the decoder; its classifier (`decode_head.classifier`) and `auxiliary_head` are dropped. With a
snapshot, the tensor shapes come from its config.json and the training values (drop path) from mmseg's
config (`snapshot_arch`). transformers' Swin pads each stage to its window
size internally (SwinLayer.maybe_pad); the outer pad to 32 keeps the four strides exact.

Variants (values from the openmmlab/upernet-swin-* configs and mmseg's upernet_swin_*_512x512 configs:
drop_path_rate 0.3, decoder channels 512, pool scales 1, 2, 3, 6):
    demo    embed 16, depths 1,1,1,1, heads 1,1,1,1, window 4, decoder 32 (CPU tests)
    swin-t  embed 96, depths 2,2,6,2, heads 3,6,12,24, window 7
    swin-s  embed 96, depths 2,2,18,2, heads 3,6,12,24, window 7
    swin-b  embed 128, depths 2,2,18,2, heads 4,8,16,32, window 12
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import torch.nn as nn
from torch import Tensor
from transformers import SwinConfig, UperNetConfig
from transformers.models.swin.modeling_swin import SwinBackbone
from transformers.models.upernet.modeling_upernet import UperNetHead

from restorebench.models.heads import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Normalize,
    RestorationHead,
    SegmentationRestorer,
    swin_layer_id,
)
from restorebench.models.weights import adapt_keys, load_checked, read_pretrained

log = logging.getLogger(__name__)

VARIANTS: tuple[str, ...] = ("demo", "swin-t", "swin-s", "swin-b")

SWIN_ARCH: dict[str, dict[str, Any]] = {
    "demo": dict(embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1], window_size=4, drop_path_rate=0.0),
    "swin-t": dict(embed_dim=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24], window_size=7, drop_path_rate=0.3),
    "swin-s": dict(embed_dim=96, depths=[2, 2, 18, 2], num_heads=[3, 6, 12, 24], window_size=7, drop_path_rate=0.3),
    "swin-b": dict(embed_dim=128, depths=[2, 2, 18, 2], num_heads=[4, 8, 16, 32], window_size=12, drop_path_rate=0.3),
    "swin-l": dict(embed_dim=192, depths=[2, 2, 18, 2], num_heads=[6, 12, 24, 48], window_size=12, drop_path_rate=0.3),
}
SWIN_KEYS = ("embed_dim", "depths", "num_heads", "window_size", "drop_path_rate")
# The fields of a snapshot's config.json that fix the tensors' shapes, the only ones taken from it. The training
# values (drop_path_rate) always come from the official training config's row above: transformers'
# upernet/convert_swin_upernet_to_pytorch.py builds the hub's SwinConfig without a drop path, so the
# openmmlab/upernet-swin-* config.json carries SwinConfig's default 0.1, where mmseg trains with 0.3. Every
# other Swin field is SwinConfig's default, which is mmseg's (mlp_ratio 4, qkv_bias, drop_rate 0,
# attn_drop_rate 0, no absolute position embedding, patch 4, LayerNorm eps 1e-5, GELU).
SWIN_SHAPE_KEYS = ("embed_dim", "depths", "num_heads", "window_size")
HEAD_KEYS = ("head_channels", "shallow_channels")
DEMO_HEAD = dict(head_channels=(16, 16), shallow_channels=16)

# Hub checkpoints store HF Swin weights under their legacy names; transformers >= 5 renames the modules
# (transformers/conversion_mapping.py, entries "swin" and "SwinBackbone"). `adapt_keys` applies these only
# where the installed version needs them.
SWIN_KEY_RULES: list[tuple[str, str]] = [
    (r"^backbone\.embeddings\.", "backbone.swin.embeddings."),
    (r"^backbone\.encoder\.", "backbone.swin.encoder."),
    (r"attention\.self\.query\.", "attention.q_proj."),
    (r"attention\.self\.key\.", "attention.k_proj."),
    (r"attention\.self\.value\.", "attention.v_proj."),
    (r"attention\.self\.relative_position_bias_table$", "attention.relative_position_bias.relative_position_bias_table"),
    (r"attention\.output\.dense\.", "attention.o_proj."),
    (r"blocks\.(\d+)\.intermediate\.dense\.", r"blocks.\1.mlp.fc1."),
    (r"blocks\.(\d+)\.output\.dense\.", r"blocks.\1.mlp.fc2."),
]


def swin_config(arch: dict[str, Any]) -> SwinConfig:
    """A SwinConfig for a backbone returning all four stages (strides 4..32)."""
    return SwinConfig(
        embed_dim=arch["embed_dim"],
        depths=list(arch["depths"]),
        num_heads=list(arch["num_heads"]),
        window_size=arch["window_size"],
        drop_path_rate=arch["drop_path_rate"],
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )


def make_swin_backbone(config: SwinConfig) -> SwinBackbone:
    """HF SwinBackbone without the unused final layernorm of its inner SwinModel (it would get no gradient)."""
    backbone = SwinBackbone(config)
    inner = getattr(backbone, "swin", backbone)  # transformers >= 5 nests SwinModel as `.swin`
    if isinstance(getattr(inner, "layernorm", None), nn.LayerNorm):
        inner.layernorm = nn.Identity()
    return backbone


def swin_arch_from_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """The tensor-shape fields (SWIN_SHAPE_KEYS) of a backbone_config dict as stored in a snapshot's config.json.

    transformers may omit values equal to SwinConfig's defaults when it writes config.json (use_diff), so
    absent fields take those defaults (embed_dim 96, depths 2,2,6,2, heads 3,6,12,24, window 7).
    """
    defaults = SwinConfig()
    return {k: cfg.get(k, getattr(defaults, k)) for k in SWIN_SHAPE_KEYS}


def snapshot_arch(backbone_config: dict[str, Any], variant: str | None, source: str) -> dict[str, Any]:
    """The Swin architecture a snapshot is built with: its shapes from `backbone_config` (swin_arch_from_config),
    the rest (drop_path_rate) from the SWIN_ARCH row of `variant`, or, without one, of the variant with those
    shapes (swin-t's row when none has them). A given variant must agree with the shapes."""
    shapes = swin_arch_from_config(backbone_config)
    check_variant_matches(variant, shapes, source)
    same = [n for n, a in SWIN_ARCH.items() if all(list(a[k]) == list(shapes[k]) if isinstance(a[k], list)
                                                    else a[k] == shapes[k] for k in SWIN_SHAPE_KEYS)]  # fmt: skip
    row = variant or (same[0] if same else "swin-t")
    return {**SWIN_ARCH[row], **shapes}


def check_variant_matches(variant: str | None, arch: dict[str, Any], source: str) -> None:
    """A variant given together with a snapshot must describe the same Swin architecture."""
    if variant is None:
        return
    want = SWIN_ARCH[variant]
    for k in SWIN_SHAPE_KEYS:
        if k not in arch:
            continue
        got = list(arch[k]) if isinstance(arch[k], list | tuple) else arch[k]
        exp = list(want[k]) if isinstance(want[k], list | tuple) else want[k]
        if got != exp:
            raise ValueError(f"variant {variant!r} has {k}={exp} but {source} says {k}={got}")


class SwinUperNet(SegmentationRestorer):
    """Swin + UperNet restorer. See the module docstring for the data flow; forward (B,3,H,W)->(B,3,H,W)."""

    pad_multiple = 32

    def __init__(
        self,
        swin: SwinConfig,
        *,
        hidden_size: int = 512,
        pool_scales: tuple[int, ...] = (1, 2, 3, 6),
        head_channels: tuple[int, int] = (64, 32),
        shallow_channels: int = 32,
    ) -> None:
        super().__init__()
        self.normalize = Normalize(IMAGENET_MEAN, IMAGENET_STD)
        self.backbone = make_swin_backbone(swin)
        self.depths = list(swin.depths)
        upernet = UperNetConfig(
            backbone_config=copy.deepcopy(swin), hidden_size=hidden_size, pool_scales=list(pool_scales), use_auxiliary_head=False
        )
        self.decode_head = UperNetHead(upernet, in_channels=self.backbone.channels)
        self.decode_head.classifier = nn.Identity()  # keep the fused 1/4 features, not class logits
        self.head = RestorationHead(hidden_size, 3, channels=tuple(head_channels), shallow_channels=shallow_channels)

    def decode(self, x: Tensor) -> Tensor:
        feats = self.backbone(x).feature_maps  # strides 4, 8, 16, 32
        return self.decode_head(list(feats))  # (B, hidden_size, H/4, W/4)

    def backbone_layer_id(self, name: str) -> int:
        return swin_layer_id(name, self.depths)

    @property
    def num_layers(self) -> int:
        """SimMIM's count for Swin (microsoft/SimMIM optimizer.py, build_finetune_optimizer): sum(depths) + 2."""
        return sum(self.depths) + 2

    def decoder_features(self) -> list[tuple[str, nn.Module]]:
        """UperNet's pyramid, coarse to fine: the PSP bottleneck (1/32), then the FPN convs at 1/16, 1/8, 1/4."""
        fpn = [(f"decode_head.fpn_convs.{i}", conv) for i, conv in enumerate(self.decode_head.fpn_convs)]
        return [("decode_head.bottleneck", self.decode_head.bottleneck), *reversed(fpn)]

    def checkpoint_parameters(self) -> list[str]:
        """Parameters an openmmlab/upernet-swin-* snapshot fills: backbone and decode head (the names of
        UperNetForSemanticSegmentation; its classifier and auxiliary head are not built here)."""
        return [n for n, _ in self.named_parameters() if n.startswith(("backbone.", "decode_head."))]


def build(*, variant: str | None = None, pretrained: str | None = None, **kwargs: Any) -> SwinUperNet:
    """Build a Swin-UperNet restorer.

    variant: one of VARIANTS (default "swin-t"; ignored for the architecture when `pretrained` is a
        snapshot with config.json, but must agree with it if given).
    pretrained: hub id (e.g. "openmmlab/upernet-swin-tiny"), snapshot folder, or a .safetensors/.pth file
        (an upernet snapshot's tensors, or a state dict saved from this model).
    kwargs: embed_dim, depths, num_heads, window_size, drop_path_rate (Swin); hidden_size, pool_scales
        (UperNet); head_channels, shallow_channels (RestorationHead). They override the variant/config.
    """
    allowed = set(SWIN_KEYS) | set(HEAD_KEYS) | {"hidden_size", "pool_scales"}
    unknown = set(kwargs) - allowed
    if unknown:
        raise TypeError(f"swin_upernet: unknown keyword(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
    if variant is not None and variant not in VARIANTS:
        raise ValueError(f"swin_upernet: unknown variant {variant!r}; choose from {list(VARIANTS)}")
    ckpt = read_pretrained(pretrained) if pretrained is not None else None
    arch = dict(SWIN_ARCH[variant or "swin-t"])
    hidden_size, pool_scales = (32, (1, 2, 3, 6)) if variant == "demo" else (512, (1, 2, 3, 6))
    head: dict[str, Any] = dict(DEMO_HEAD) if variant == "demo" else {}
    if ckpt is not None and ckpt.config is not None:
        cfg = ckpt.config
        if cfg.get("model_type") != "upernet" or not isinstance(cfg.get("backbone_config"), dict):
            raise ValueError(f"{ckpt.path}: config.json is not an UperNet config (model_type={cfg.get('model_type')})")
        bb = cfg["backbone_config"]
        if bb.get("model_type", "swin") != "swin":
            raise ValueError(f"{ckpt.path}: backbone is {bb.get('model_type')!r}, this model needs a Swin backbone")
        arch = snapshot_arch(bb, variant, str(ckpt.path))
        hidden_size = cfg.get("hidden_size", 512)  # UperNetConfig defaults where config.json omits them
        pool_scales = tuple(cfg.get("pool_scales", (1, 2, 3, 6)))
    arch.update({k: kwargs[k] for k in SWIN_KEYS if k in kwargs})
    head.update({k: kwargs[k] for k in HEAD_KEYS if k in kwargs})
    model = SwinUperNet(
        swin_config(arch),
        hidden_size=kwargs.get("hidden_size", hidden_size),
        pool_scales=tuple(kwargs.get("pool_scales", pool_scales)),
        **head,
    )
    if ckpt is not None:
        sd = adapt_keys(ckpt.state_dict, model.state_dict().keys(), SWIN_KEY_RULES)
        required = ["backbone."]
        if any(k.startswith("decode_head.") for k in sd):  # a full UperNet checkpoint: the decoder must load too
            required.append("decode_head.")
        load_checked(model, sd, required_prefixes=required, source=str(ckpt.path))
    return model
