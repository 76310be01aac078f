"""Swin Transformer + Mask2Former pixel decoder (transformers) turned restorer.

    x (B, 3, H, W) in [0, 1] -> ImageNet-normalise -> reflect-pad to a multiple of 32
    -> SwinBackbone: maps at strides 4, 8, 16, 32
    -> Mask2FormerPixelDecoder: 1x1 projections of strides 8/16/32 -> `encoder_layers` multi-scale
       deformable-attention encoder layers -> FPN step onto stride 4 -> `mask_features`
       (B, mask_feature_size, H/4, W/4)
    -> RestorationHead -> residual; output x + residual, cropped back to H, W.

Only Mask2Former's pixel-level module is used (backbone + pixel decoder). The masked-attention transformer
decoder (object queries) and the class / mask prediction heads are dropped: they produce per-query masks
and labels, which have no path to an image. Loading a facebook/mask2former-swin-*-ade-semantic snapshot
therefore fills `backbone.*` (from `model.pixel_level_module.encoder.*`) and `decoder.*` (from
`model.pixel_level_module.decoder.*`); the query-decoder tensors are reported as unused.

transformers' multi-scale deformable attention for this decoder is pure PyTorch (F.grid_sample in
`multi_scale_deformable_attention`); no custom CUDA op is involved, on CPU or GPU.

Variants (facebook/mask2former-swin-{tiny,small,large}-ade-semantic configs and Mask2Former's
maskformer2_swin_*_bs16_160k configs: feature_size = mask_feature_size = 256, 6 encoder layers, encoder
FFN 1024, 8 heads, common stride 4, drop_path_rate 0.3):
    demo    Swin embed 16, depths 1,1,1,1, window 4; decoder width 32, 1 encoder layer
    swin-t  embed 96, depths 2,2,6,2, heads 3,6,12,24, window 7
    swin-s  embed 96, depths 2,2,18,2, heads 3,6,12,24, window 7
    swin-l  embed 192, depths 2,2,18,2, heads 6,12,24,48, window 12
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor
from transformers import Mask2FormerConfig, SwinConfig
from transformers.models.mask2former.modeling_mask2former import (
    Mask2FormerPixelDecoder,
    Mask2FormerPixelDecoderEncoderMultiscaleDeformableAttention,
)

from restorebench.models.heads import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Normalize,
    RestorationHead,
    SegmentationRestorer,
    swin_layer_id,
)
from restorebench.models.swin_upernet import (
    DEMO_HEAD,
    HEAD_KEYS,
    SWIN_ARCH,
    SWIN_KEY_RULES,
    SWIN_KEYS,
    check_variant_matches,
    make_swin_backbone,
    swin_arch_from_config,
    swin_config,
)
from restorebench.models.weights import adapt_keys, load_checked, read_pretrained

VARIANTS: tuple[str, ...] = ("demo", "swin-t", "swin-s", "swin-l")

PIXEL_DECODER_KEYS = ("feature_size", "mask_feature_size", "encoder_layers", "encoder_feedforward_dim",
                      "num_attention_heads")
PIXEL_DECODER_DEFAULT: dict[str, int] = dict(
    feature_size=256, mask_feature_size=256, encoder_layers=6, encoder_feedforward_dim=1024, num_attention_heads=8
)
PIXEL_DECODER_DEMO: dict[str, int] = dict(
    feature_size=32, mask_feature_size=32, encoder_layers=1, encoder_feedforward_dim=64, num_attention_heads=2
)

# Hub Mask2Former checkpoints -> this module: pixel-level module only, then the Swin renames.
M2F_KEY_RULES: list[tuple[str, str]] = [
    (r"^model\.pixel_level_module\.encoder\.", "backbone."),
    (r"^model\.pixel_level_module\.decoder\.", "decoder."),
    *SWIN_KEY_RULES,
]


def deformable_init_(
    sampling_offsets: nn.Linear, attention_weights: nn.Linear, n_heads: int, n_levels: int, n_points: int
) -> None:
    """Deformable DETR init: offsets start on a ring of head directions (point i at distance i + 1), uniform
    attention (zero weights). Shared by the Mask2Former pixel decoder and the ViT-Adapter's attention."""
    with torch.no_grad():
        nn.init.zeros_(sampling_offsets.weight)
        thetas = torch.arange(n_heads, dtype=torch.float32) * (2.0 * math.pi / n_heads)
        grid = torch.stack([thetas.cos(), thetas.sin()], -1)
        grid = (grid / grid.abs().max(-1, keepdim=True)[0]).view(n_heads, 1, 1, 2)
        grid = grid.repeat(1, n_levels, n_points, 1)
        for i in range(n_points):
            grid[:, :, i, :] *= i + 1
        sampling_offsets.bias.copy_(grid.view(-1))
        nn.init.zeros_(attention_weights.weight)
        nn.init.zeros_(attention_weights.bias)


def init_pixel_decoder_(decoder: Mask2FormerPixelDecoder) -> None:
    """Initialise a standalone Mask2FormerPixelDecoder as Mask2Former does.

    transformers initialises it only through Mask2FormerPreTrainedModel._init_weights (its `level_embed` is
    allocated uninitialised), so a decoder built on its own needs this. Follows that method and the original
    (facebookresearch/Mask2Former, msdeformattn.py): level embeddings N(0, 1); deformable attention with zero
    offset weights, offset biases on a ring of directions (point i at distance i + 1), zero attention
    weights (uniform attention), Xavier value/output projections; convs c2_xavier_fill (kaiming_uniform,
    a=1, zero bias); linears Xavier; norms at identity.
    """
    with torch.no_grad():
        for m in decoder.modules():
            if isinstance(m, Mask2FormerPixelDecoderEncoderMultiscaleDeformableAttention):
                deformable_init_(m.sampling_offsets, m.attention_weights, m.n_heads, m.n_levels, m.n_points)
                nn.init.xavier_uniform_(m.value_proj.weight)
                nn.init.zeros_(m.value_proj.bias)
                nn.init.xavier_uniform_(m.output_proj.weight)
                nn.init.zeros_(m.output_proj.bias)
        deform = {id(p) for m in decoder.modules()
                  if isinstance(m, Mask2FormerPixelDecoderEncoderMultiscaleDeformableAttention)
                  for p in m.parameters()}
        for m in decoder.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_uniform_(m.weight, a=1)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear) and id(m.weight) not in deform:
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm | nn.GroupNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.normal_(decoder.level_embed)


def make_pixel_decoder(feature_channels: Sequence[int], **cfg: int) -> Mask2FormerPixelDecoder:
    """A Mask2Former pixel decoder over 4 maps at strides 4, 8, 16, 32 with `feature_channels` channels.

    cfg: PIXEL_DECODER_KEYS (feature_size, mask_feature_size, encoder_layers, encoder_feedforward_dim,
    num_attention_heads). feature_size must be a multiple of 32 (GroupNorm(32, .)).
    forward(list of 4 maps).mask_features: (B, mask_feature_size, H/4, W/4).
    """
    config = Mask2FormerConfig(
        backbone_config=SwinConfig(out_features=["stage1", "stage2", "stage3", "stage4"]),  # unused here
        feature_strides=[4, 8, 16, 32],
        common_stride=4,
        **{**PIXEL_DECODER_DEFAULT, **cfg},
    )
    decoder = Mask2FormerPixelDecoder(config, feature_channels=list(feature_channels))
    init_pixel_decoder_(decoder)
    return decoder


class SwinMask2Former(SegmentationRestorer):
    """Swin + Mask2Former pixel decoder restorer; forward (B,3,H,W) in [0,1] -> (B,3,H,W)."""

    pad_multiple = 32

    def __init__(
        self,
        swin: SwinConfig,
        *,
        head_channels: tuple[int, int] = (64, 32),
        shallow_channels: int = 32,
        **decoder_cfg: int,
    ) -> None:
        super().__init__()
        self.normalize = Normalize(IMAGENET_MEAN, IMAGENET_STD)
        self.backbone = make_swin_backbone(swin)
        self.depths = list(swin.depths)
        self.decoder = make_pixel_decoder(self.backbone.channels, **decoder_cfg)
        mask_dim = self.decoder.mask_projection.out_channels
        self.head = RestorationHead(mask_dim, 3, channels=tuple(head_channels), shallow_channels=shallow_channels)

    def decode(self, x: Tensor) -> Tensor:
        feats = list(self.backbone(x).feature_maps)
        return self.decoder(feats, return_dict=True).mask_features

    def backbone_layer_id(self, name: str) -> int:
        return swin_layer_id(name, self.depths)


def build(*, variant: str | None = None, pretrained: str | None = None, **kwargs: Any) -> SwinMask2Former:
    """Build a Swin-Mask2Former (pixel-level) restorer.

    variant: one of VARIANTS (default "swin-t"); with a snapshot, config.json gives the architecture and a
        given variant must agree with it.
    pretrained: hub id (e.g. "facebook/mask2former-swin-tiny-ade-semantic"), snapshot folder, or a
        .safetensors/.pth file (a Mask2Former checkpoint or a state dict saved from this model).
    kwargs: embed_dim, depths, num_heads, window_size, drop_path_rate (Swin); feature_size,
        mask_feature_size, encoder_layers, encoder_feedforward_dim, num_attention_heads (pixel decoder);
        head_channels, shallow_channels (RestorationHead).
    """
    allowed = set(SWIN_KEYS) | set(HEAD_KEYS) | set(PIXEL_DECODER_KEYS)
    unknown = set(kwargs) - allowed
    if unknown:
        raise TypeError(f"swin_mask2former: unknown keyword(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
    if variant is not None and variant not in VARIANTS:
        raise ValueError(f"swin_mask2former: unknown variant {variant!r}; choose from {list(VARIANTS)}")
    ckpt = read_pretrained(pretrained) if pretrained is not None else None
    arch = dict(SWIN_ARCH[variant or "swin-t"])
    dec = dict(PIXEL_DECODER_DEMO if variant == "demo" else PIXEL_DECODER_DEFAULT)
    head: dict[str, Any] = dict(DEMO_HEAD) if variant == "demo" else {}
    if ckpt is not None and ckpt.config is not None:
        cfg = ckpt.config
        if cfg.get("model_type") != "mask2former" or not isinstance(cfg.get("backbone_config"), dict):
            raise ValueError(f"{ckpt.path}: config.json is not a Mask2Former config (model_type={cfg.get('model_type')})")
        bb = cfg["backbone_config"]
        if bb.get("model_type", "swin") != "swin":
            raise ValueError(f"{ckpt.path}: backbone is {bb.get('model_type')!r}, this model needs a Swin backbone")
        snap_arch = swin_arch_from_config(bb)
        check_variant_matches(variant, snap_arch, str(ckpt.path))
        arch.update(snap_arch)
        # absent fields take Mask2FormerConfig's defaults (= PIXEL_DECODER_DEFAULT), as transformers would
        dec = {**PIXEL_DECODER_DEFAULT, **{k: cfg[k] for k in PIXEL_DECODER_KEYS if k in cfg}}
    arch.update({k: kwargs[k] for k in SWIN_KEYS if k in kwargs})
    dec.update({k: kwargs[k] for k in PIXEL_DECODER_KEYS if k in kwargs})
    head.update({k: kwargs[k] for k in HEAD_KEYS if k in kwargs})
    model = SwinMask2Former(swin_config(arch), **head, **dec)
    if ckpt is not None:
        sd = adapt_keys(ckpt.state_dict, model.state_dict().keys(), M2F_KEY_RULES)
        required = ["backbone."]
        if any(k.startswith("decoder.") for k in sd):  # a full Mask2Former checkpoint: pixel decoder too
            required.append("decoder.")
        load_checked(model, sd, required_prefixes=required, source=str(ckpt.path))
    return model
