"""BEiTv2 ViT (timm) + ViT-Adapter (written here) + Mask2Former (transformers' modules), turned restorer.

    x (B, 3, H, W) in [0, 1] -> normalise (timm pretrained_cfg mean/std) -> reflect-pad to a multiple of 32
    -> spatial prior module (conv stem): c1 at 1/4 (map), c2, c3, c4 at 1/8, 1/16, 1/32 (token sequences)
    -> ViT patch tokens at 1/16; interaction block i runs ViT blocks interaction_indexes[i] between
         an injector  (ViT tokens query the spatial tokens c2|c3|c4: deformable attention, 3 levels, gamma)
         an extractor (spatial tokens query the ViT tokens: deformable attention, 1 level + ConvFFN)
       (the last block has two extra extractors)
    -> c2 -> ConvTranspose x2 + c1 = 1/4 map; ViT outputs of the 4 interactions resized and added to the
       four scales; BatchNorm each: 4 maps at strides 4, 8, 16, 32, embed_dim channels each
    -> Mask2Former whole, exactly as in swin_mask2former (`Mask2FormerRestorer`): pixel decoder -> 1/4 mask
       features + 3 multi-scale maps -> masked-attention transformer decoder -> 3-channel semantic-inference
       image at 1/4 (sum over queries of channel weights x sigmoid masks) -> RestorationHead over
       concat(mask features, that image) -> residual; output x + residual, cropped back to H, W.
    The tensor paths to the image are those listed in swin_mask2former's docstring, with the adapter's
    four maps in place of Swin's.

The adapter follows ViT-Adapter (Chen et al., ICLR 2023; github.com/czczup/ViT-Adapter,
segmentation/mmseg_custom/models/backbones/adapter_modules.py and beit_adapter.py): SpatialPriorModule with
64 stem channels, InteractionBlockWithCls (the cls token rides along through the ViT blocks), injector
gamma initialised to `init_values`, extra extractors in the last block, ConvFFN ratio 0.25, 4 sampling
points, deform_ratio 0.5. Multi-scale deformable attention is plain PyTorch (F.grid_sample), no custom CUDA
op. BatchNorm stands in for the original SyncBatchNorm (same tensors).

The ViT is timm's Beit (same tensor names as ViT-Adapter's base/beit.py BEiT). Its relative position bias
table keeps the checkpoint's shape (the pretraining grid: 14x14 at 224 px, 56x56 for the 896-px
segmentation model); for any other token grid the table is resampled bicubically on the fly (as BEiT does
when finetuning at a new resolution, here differentiably and per forward), so any H, W works.

Variants and what `pretrained` loads:
    demo      Beit embed 32, depth 2, heads 2, grid 4x4 (64 px); 2 interactions; Mask2Former width 32,
              8 queries (a tiny stand-in for beitv2-l: same module and checkpoint layout)
    beitv2-b  beitv2_base_patch16_224: embed 768, depth 12, heads 12; interactions [[0,2],[3,5],[6,8],[9,11]];
              12 deformable heads; Mask2Former at swin_mask2former's sizes (256 wide, 100 queries).
              ImageNet BEiTv2 init, adapter and decoder untrained: `pretrained` is a timm BEiTv2 checkpoint
              and fills the ViT only (no segmentation checkpoint of this architecture is published).
    beitv2-l  ViT-Adapter's "Mask2Former + BEiTv2-L adapter, ADE20K 896, 80k" (configs/ade20k/
              mask2former_beitv2_adapter_large_896_80k_ade20k_ss.py): BEiT-L/16 at 896 px (embed 1024,
              depth 24, heads 16, layer scale 1e-6), interactions [[0,5],[6,11],[12,17],[18,23]], 16
              deformable heads; pixel decoder 1024 wide, 6 layers, FFN 4096, 32 heads; transformer decoder
              9 layers, 200 queries, FFN 4096, 32 heads. `pretrained` is that release's checkpoint
              (mask2former_beitv2_adapter_large_896_80k_ade20k.pth, mmseg/mmdet layout) mapped by
              MMSEG_KEY_TABLE onto every module but the head and the 3-way class predictor. Published
              size: 571M parameters (ViT-Adapter segmentation README, ADE20K table).
"""

from __future__ import annotations

import math
import re
import types
from collections.abc import Sequence
from typing import Any

import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.models.beit import gen_relative_position_index
from torch import Tensor

from restorebench.models.heads import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Normalize,
    RestorationHead,
)
from restorebench.models.swin_mask2former import (
    PIXEL_DECODER_DEFAULT,
    PIXEL_DECODER_DEMO,
    PIXEL_DECODER_KEYS,
    TRANSFORMER_DEFAULT,
    TRANSFORMER_DEMO,
    TRANSFORMER_KEYS,
    Mask2FormerRestorer,
    QueryDecoder,
    deformable_init_,
    make_pixel_decoder,
    mask2former_config,
)
from restorebench.models.weights import WeightsError, load_checked, read_pretrained

VARIANTS: tuple[str, ...] = ("demo", "beitv2-b", "beitv2-l")
AUX_LOSS = True  # deep supervision: aux_loss=True keeps aux_outputs in training (Mask2FormerRestorer)
# shown by `restorebench models` beside the variant
VARIANT_NOTES: dict[str, str] = {"beitv2-b": "ImageNet BEiTv2 init, adapter and decoder untrained"}
# variants whose architecture is that of a published segmentation checkpoint (MMSEG_KEY_TABLE's layout);
# demo is beitv2-l's tiny stand-in (same layout) for the tests
SEGMENTATION_CHECKPOINT_VARIANTS: tuple[str, ...] = ("demo", "beitv2-l")

VIT_ARCH: dict[str, dict[str, Any]] = {
    "demo": dict(architecture="beitv2_base_patch16_224", img_size=64, embed_dim=32, depth=2, num_heads=2,
                 drop_path_rate=0.0),
    "beitv2-b": dict(architecture="beitv2_base_patch16_224", img_size=224, drop_path_rate=0.3),
    # configs/ade20k/mask2former_beitv2_adapter_large_896_80k_ade20k_ss.py: img_size 896, embed 1024, depth 24,
    # heads 16, mlp 4, qkv bias, relative position bias (no absolute) as timm's beitv2_large has them; drop
    # path 0.3 and layer-scale init init_values=1e-6 from the config (timm's beitv2_large default is 1e-5)
    "beitv2-l": dict(architecture="beitv2_large_patch16_224", img_size=896, drop_path_rate=0.3, init_values=1e-6),
}
ADAPTER_ARCH: dict[str, dict[str, Any]] = {
    "demo": dict(conv_inplane=16, deform_num_heads=2, n_points=4, deform_ratio=0.5, cffn_ratio=0.25,
                 init_values=0.0),
    "beitv2-b": dict(conv_inplane=64, deform_num_heads=12, n_points=4, deform_ratio=0.5, cffn_ratio=0.25,
                     init_values=0.0, interaction_indexes=[[0, 2], [3, 5], [6, 8], [9, 11]]),
    # the same config file: conv_inplane 64, n_points 4, deform_num_heads 16, cffn_ratio 0.25,
    # deform_ratio 0.5, init_values 1e-6
    "beitv2-l": dict(conv_inplane=64, deform_num_heads=16, n_points=4, deform_ratio=0.5, cffn_ratio=0.25,
                     init_values=1e-6, interaction_indexes=[[0, 5], [6, 11], [12, 17], [18, 23]]),
}
# Mask2Former sizes (transformers' Mask2FormerConfig fields). beitv2-l from the config's decode_head:
# feat_channels = out_channels = 1024, pixel decoder 6 layers, FFN 4096, 32 heads; transformer decoder 9
# layers (decoder_layers 10 as transformers counts), 32 heads, FFN 4096, 200 queries
DECODER_ARCH: dict[str, dict[str, int]] = {
    "demo": {**PIXEL_DECODER_DEMO, **TRANSFORMER_DEMO},
    "beitv2-b": {**PIXEL_DECODER_DEFAULT, **TRANSFORMER_DEFAULT},
    "beitv2-l": dict(feature_size=1024, mask_feature_size=1024, encoder_layers=6, encoder_feedforward_dim=4096,
                     num_attention_heads=32, hidden_dim=1024, decoder_layers=10, num_queries=200,
                     dim_feedforward=4096),
}
VIT_KEYS = ("architecture", "img_size", "embed_dim", "depth", "num_heads", "drop_path_rate", "init_values")
# what a timm snapshot's config.json (model_args) may set: the shapes; drop path and layer-scale init stay the
# variant's (a training config's values, not a hub default)
VIT_SHAPE_KEYS = ("img_size", "embed_dim", "depth", "num_heads")
ADAPTER_KEYS = ("conv_inplane", "deform_num_heads", "n_points", "deform_ratio", "cffn_ratio", "init_values",
                "interaction_indexes")
HEAD_KEYS = ("head_channels", "shallow_channels")


# ------------------------------------------------------------------------ multi-scale deformable attention


def ms_deform_attn(
    value: Tensor, shapes: Sequence[tuple[int, int]], locations: Tensor, weights: Tensor
) -> Tensor:
    """Multi-scale deformable attention core (Deformable DETR, Zhu et al. 2021), plain PyTorch.

    value: (B, S, nH, Dh), the levels' tokens concatenated (S = sum h*w over `shapes`).
    locations: (B, Q, nH, L, P, 2) sampling points, (x, y) normalised to [0, 1] per level.
    weights: (B, Q, nH, L, P) attention weights (softmax over L*P).
    Returns (B, Q, nH*Dh).
    """
    b, _, nh, dh = value.shape
    _, q, _, nl, npts, _ = locations.shape
    grids = 2 * locations - 1  # grid_sample wants [-1, 1]
    sampled = []
    for lvl, (v, (h, w)) in enumerate(zip(value.split([h * w for h, w in shapes], dim=1), shapes, strict=True)):
        v = v.permute(0, 2, 3, 1).reshape(b * nh, dh, h, w)
        g = grids[:, :, :, lvl].transpose(1, 2).reshape(b * nh, q, npts, 2)
        sampled.append(F.grid_sample(v, g, mode="bilinear", padding_mode="zeros", align_corners=False))
    out = torch.stack(sampled, dim=-2).flatten(-2)  # (B*nH, Dh, Q, L*P)
    w = weights.transpose(1, 2).reshape(b * nh, 1, q, nl * npts)
    return (out * w).sum(-1).view(b, nh * dh, q).transpose(1, 2)


class MSDeformAttn(nn.Module):
    """Deformable attention of ViT-Adapter's ops/modules/ms_deform_attn.py: value width d_model * ratio.

    forward(query (B, Q, C), reference_points (1 or B, Q, 1, 2) in [0, 1], feat (B, S, C), shapes) -> (B, Q, C)
    """

    def __init__(self, d_model: int, n_levels: int, n_heads: int, n_points: int, ratio: float = 1.0) -> None:
        super().__init__()
        self.n_levels, self.n_heads, self.n_points = n_levels, n_heads, n_points
        self.value_dim = int(d_model * ratio)
        if self.value_dim % n_heads:
            raise ValueError(f"d_model * ratio = {self.value_dim} is not divisible by n_heads = {n_heads}")
        self.sampling_offsets = nn.Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(d_model, self.value_dim)
        self.output_proj = nn.Linear(self.value_dim, d_model)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Deformable DETR init (ring of sampling offsets, uniform attention), Xavier projections."""
        deformable_init_(self.sampling_offsets, self.attention_weights, self.n_heads, self.n_levels, self.n_points)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.zeros_(self.value_proj.bias)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.zeros_(self.output_proj.bias)

    def forward(self, query: Tensor, reference_points: Tensor, feat: Tensor, shapes: Sequence[tuple[int, int]]) -> Tensor:
        b, q, _ = query.shape
        value = self.value_proj(feat).view(b, feat.shape[1], self.n_heads, self.value_dim // self.n_heads)
        offsets = self.sampling_offsets(query).view(b, q, self.n_heads, self.n_levels, self.n_points, 2)
        weights = self.attention_weights(query).view(b, q, self.n_heads, self.n_levels * self.n_points)
        weights = weights.softmax(-1).view(b, q, self.n_heads, self.n_levels, self.n_points)
        normalizer = torch.tensor([[w, h] for h, w in shapes], dtype=query.dtype, device=query.device)
        locations = reference_points[:, :, None, :, None, :] + offsets / normalizer[None, None, None, :, None, :]
        return self.output_proj(ms_deform_attn(value, shapes, locations, weights))


def reference_points(shapes: Sequence[tuple[int, int]], device: torch.device, dtype: torch.dtype) -> Tensor:
    """Pixel-centre points of every level's grid, normalised to [0, 1], concatenated: (1, sum h*w, 1, 2)."""
    refs = []
    for h, w in shapes:
        ys, xs = torch.meshgrid(
            torch.linspace(0.5, h - 0.5, h, device=device, dtype=dtype) / h,
            torch.linspace(0.5, w - 0.5, w, device=device, dtype=dtype) / w,
            indexing="ij",
        )
        refs.append(torch.stack([xs.reshape(-1), ys.reshape(-1)], -1))
    return torch.cat(refs, 0)[None, :, None, :]


# ---------------------------------------------------------------------------------------- adapter parts


class ConvFFN(nn.Module):
    """Linear -> depth-wise 3x3 conv on each level's map -> GELU -> Linear, on (B, S, C) multi-scale tokens."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor, shapes: Sequence[tuple[int, int]]) -> Tensor:
        x = self.fc1(x)
        b, _, c = x.shape
        parts = []
        for t, (h, w) in zip(x.split([h * w for h, w in shapes], dim=1), shapes, strict=True):
            parts.append(self.dwconv(t.transpose(1, 2).reshape(b, c, h, w)).flatten(2).transpose(1, 2))
        return self.fc2(self.act(torch.cat(parts, dim=1)))


class Injector(nn.Module):
    """ViT tokens (query) gather from the spatial prior tokens (3 levels); added with a learnable gamma."""

    def __init__(self, dim: int, heads: int, points: int, ratio: float, init_values: float) -> None:
        super().__init__()
        self.query_norm = nn.LayerNorm(dim, eps=1e-6)
        self.feat_norm = nn.LayerNorm(dim, eps=1e-6)
        self.attn = MSDeformAttn(dim, 3, heads, points, ratio)
        self.gamma = nn.Parameter(init_values * torch.ones(dim))

    def forward(self, x: Tensor, ref: Tensor, c: Tensor, shapes: Sequence[tuple[int, int]]) -> Tensor:
        return x + self.gamma * self.attn(self.query_norm(x), ref, self.feat_norm(c), shapes)


class Extractor(nn.Module):
    """Spatial tokens (query, 3 levels) gather from the ViT tokens (1 level), then a ConvFFN."""

    def __init__(self, dim: int, heads: int, points: int, ratio: float, cffn_ratio: float, drop_path: float) -> None:
        super().__init__()
        self.query_norm = nn.LayerNorm(dim, eps=1e-6)
        self.feat_norm = nn.LayerNorm(dim, eps=1e-6)
        self.attn = MSDeformAttn(dim, 1, heads, points, ratio)
        self.ffn = ConvFFN(dim, int(dim * cffn_ratio))
        self.ffn_norm = nn.LayerNorm(dim, eps=1e-6)
        self.drop_path = timm.layers.DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, c: Tensor, ref: Tensor, x: Tensor, vit_shape: tuple[int, int],
                shapes: Sequence[tuple[int, int]]) -> Tensor:
        c = c + self.attn(self.query_norm(c), ref, self.feat_norm(x), [vit_shape])
        return c + self.drop_path(self.ffn(self.ffn_norm(c), shapes))


class InteractionBlock(nn.Module):
    """injector -> ViT blocks (with the cls token) -> extractor(s). See ViT-Adapter InteractionBlockWithCls."""

    def __init__(self, dim: int, heads: int, points: int, ratio: float, cffn_ratio: float, init_values: float,
                 drop_path: float, extra_extractor: bool) -> None:
        super().__init__()
        self.injector = Injector(dim, heads, points, ratio, init_values)
        self.extractor = Extractor(dim, heads, points, ratio, cffn_ratio, drop_path)
        self.extra_extractors = nn.ModuleList(
            [Extractor(dim, heads, points, ratio, cffn_ratio, drop_path) for _ in range(2 if extra_extractor else 0)]
        )

    def forward(self, x: Tensor, c: Tensor, cls: Tensor, blocks: Sequence[nn.Module], ref_inj: Tensor,
                ref_ext: Tensor, vit_shape: tuple[int, int], shapes: Sequence[tuple[int, int]]
                ) -> tuple[Tensor, Tensor, Tensor]:
        x = self.injector(x, ref_inj, c, shapes)
        x = torch.cat([cls, x], dim=1)
        for blk in blocks:
            x = blk(x)
        cls, x = x[:, :1], x[:, 1:]
        for ext in [self.extractor, *self.extra_extractors]:
            c = ext(c, ref_ext, x, vit_shape, shapes)
        return x, c, cls


def _conv_bn_relu(cin: int, cout: int, stride: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class SpatialPriorModule(nn.Module):
    """ResNet-like conv stem: (B, 3, H, W) -> c1 (B, dim, H/4, W/4) and c2, c3, c4 at 1/8, 1/16, 1/32."""

    def __init__(self, inplanes: int, dim: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            *_conv_bn_relu(3, inplanes, 2), *_conv_bn_relu(inplanes, inplanes, 1),
            *_conv_bn_relu(inplanes, inplanes, 1), nn.MaxPool2d(3, 2, 1),
        )
        self.conv2 = nn.Sequential(*_conv_bn_relu(inplanes, 2 * inplanes, 2))
        self.conv3 = nn.Sequential(*_conv_bn_relu(2 * inplanes, 4 * inplanes, 2))
        self.conv4 = nn.Sequential(*_conv_bn_relu(4 * inplanes, 4 * inplanes, 2))
        self.fc1 = nn.Conv2d(inplanes, dim, 1)
        self.fc2 = nn.Conv2d(2 * inplanes, dim, 1)
        self.fc3 = nn.Conv2d(4 * inplanes, dim, 1)
        self.fc4 = nn.Conv2d(4 * inplanes, dim, 1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        c1 = self.stem(x)
        c2 = self.conv2(c1)
        c3 = self.conv3(c2)
        c4 = self.conv4(c3)
        return self.fc1(c1), self.fc2(c2), self.fc3(c3), self.fc4(c4)


class ViTAdapter(nn.Module):
    """The adapter modules around a ViT (which is passed to forward, not owned, so its parameters stay in
    the model's `backbone` group). forward(vit, x normalised, H, W multiples of 32) -> 4 maps at strides
    4, 8, 16, 32 with `dim` channels.
    """

    def __init__(self, dim: int, interaction_indexes: Sequence[Sequence[int]], *, conv_inplane: int = 64,
                 deform_num_heads: int = 12, n_points: int = 4, deform_ratio: float = 0.5,
                 cffn_ratio: float = 0.25, init_values: float = 0.0, drop_path_rate: float = 0.0) -> None:
        super().__init__()
        self.interaction_indexes = [list(ix) for ix in interaction_indexes]
        self.level_embed = nn.Parameter(torch.zeros(3, dim))
        self.spm = SpatialPriorModule(conv_inplane, dim)
        n = len(self.interaction_indexes)
        self.interactions = nn.ModuleList([
            InteractionBlock(dim, deform_num_heads, n_points, deform_ratio, cffn_ratio, init_values,
                             drop_path_rate, extra_extractor=(i == n - 1))
            for i in range(n)
        ])
        self.up = nn.ConvTranspose2d(dim, dim, 2, 2)
        self.norms = nn.ModuleList([nn.BatchNorm2d(dim) for _ in range(4)])
        self._init_weights()

    def _init_weights(self) -> None:
        """As ViT-Adapter's BEiTAdapter: trunc-normal(0.02) linears, fan-out normal convs, N(0, 1) level
        embedding, then the deformable attentions' own reset (Deformable DETR init)."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                timm.layers.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        for m in self.modules():
            if isinstance(m, MSDeformAttn):
                m.reset_parameters()
        nn.init.normal_(self.level_embed)

    def forward(self, vit: nn.Module, x: Tensor) -> list[Tensor]:
        b, _, hh, ww = x.shape
        shapes = [(hh // 8, ww // 8), (hh // 16, ww // 16), (hh // 32, ww // 32)]
        vit_shape = shapes[1]
        c1, c2, c3, c4 = self.spm(x)
        c = torch.cat([ci.flatten(2).transpose(1, 2) + self.level_embed[i] for i, ci in enumerate((c2, c3, c4))], 1)

        tokens = vit.patch_embed(x)  # (B, N, C) at 1/16
        if vit.pos_embed is not None:
            tokens = tokens + timm.layers.resample_abs_pos_embed(vit.pos_embed, list(vit_shape), num_prefix_tokens=1)[:, 1:]
        cls = vit.cls_token.expand(b, -1, -1)
        if vit.pos_embed is not None:
            cls = cls + vit.pos_embed[:, :1]
        tokens = vit.pos_drop(tokens)
        set_token_grid(vit, vit_shape)

        ref_inj = reference_points([vit_shape], x.device, x.dtype)
        ref_ext = reference_points(shapes, x.device, x.dtype)
        outs = []
        for block, (start, end) in zip(self.interactions, self.interaction_indexes, strict=True):
            tokens, c, cls = block(tokens, c, cls, vit.blocks[start : end + 1], ref_inj, ref_ext, vit_shape, shapes)
            outs.append(tokens.transpose(1, 2).reshape(b, -1, *vit_shape))

        n2, n3 = shapes[0][0] * shapes[0][1], shapes[1][0] * shapes[1][1]
        dim = c.shape[-1]
        c2 = c[:, :n2].transpose(1, 2).reshape(b, dim, *shapes[0])
        c3 = c[:, n2 : n2 + n3].transpose(1, 2).reshape(b, dim, *shapes[1])
        c4 = c[:, n2 + n3 :].transpose(1, 2).reshape(b, dim, *shapes[2])
        c1 = self.up(c2) + c1
        feats = [c1, c2, c3, c4]
        # add the ViT's own features from the 1st..4th interaction (or spread the available ones)
        picks = [outs[min(i * len(outs) // 4, len(outs) - 1)] for i in range(4)] if len(outs) != 4 else outs
        feats = [f + F.interpolate(o, size=f.shape[-2:], mode="bilinear", align_corners=False)
                 for f, o in zip(feats, picks, strict=True)]
        return [norm(f) for norm, f in zip(self.norms, feats, strict=True)]


# ----------------------------------------------------------------------- BEiT relative position bias


def _dynamic_rel_pos_bias(self: nn.Module) -> Tensor:
    """Replacement for timm Beit Attention._get_rel_pos_bias that follows the current token grid.

    The table (num_relative_distance, heads) stays at its checkpoint shape; for another grid its
    (2h-1) x (2w-1) part is resampled bicubically (the 3 cls entries kept), then indexed.
    Returns (1, heads, N + 1, N + 1).
    """
    grid = getattr(self, "_token_grid", None) or tuple(self.window_size)
    table = self.relative_position_bias_table
    if tuple(grid) == tuple(self.window_size):
        index = self.relative_position_index
    else:
        wh, ww = self.window_size
        heads = table.shape[1]
        core = table[:-3].t().reshape(1, heads, 2 * wh - 1, 2 * ww - 1)
        core = F.interpolate(core, size=(2 * grid[0] - 1, 2 * grid[1] - 1), mode="bicubic", align_corners=False)
        table = torch.cat([core.reshape(heads, -1).t(), table[-3:]], dim=0)
        cache = self.__dict__.setdefault("_index_cache", {})
        key = (tuple(grid), table.device)
        if key not in cache:
            cache.clear()
            cache[key] = gen_relative_position_index(tuple(grid), device=table.device)
        index = cache[key]
    n = index.shape[0]
    return table[index.reshape(-1)].view(n, n, -1).permute(2, 0, 1).unsqueeze(0)


def install_dynamic_rel_pos(vit: nn.Module) -> None:
    """Make every block's relative position bias follow the token grid set by `set_token_grid`."""
    if getattr(vit, "rel_pos_bias", None) is not None:
        raise ValueError("shared relative position bias (BEiT v1 style) is not supported; use per-block bias")
    for blk in vit.blocks:
        if getattr(blk.attn, "relative_position_bias_table", None) is not None:
            blk.attn._get_rel_pos_bias = types.MethodType(_dynamic_rel_pos_bias, blk.attn)


def set_token_grid(vit: nn.Module, grid: tuple[int, int]) -> None:
    for blk in vit.blocks:
        blk.attn._token_grid = tuple(grid)


# our names of mmseg's decode_head.{query_embed, query_feat, level_embed, mask_embed, cls_embed} (MMSEG_KEY_TABLE)
DECODER_LAYER0 = ("query_decoder.transformer_module.queries_embedder.", "query_decoder.transformer_module.queries_features.",
                  "query_decoder.transformer_module.level_embed.",
                  "query_decoder.transformer_module.decoder.mask_predictor.mask_embedder.",
                  "query_decoder.class_predictor.")  # fmt: skip


def beit_layer_id(name: str, depth: int) -> int:
    """ViT-Adapter's layer-decay numbering of the ViT (czczup/ViT-Adapter
    segmentation/mmcv_custom/layer_decay_optimizer_constructor.py at 5cf0b2d7, get_num_layer_for_vit):
    cls_token / mask_token / pos_embed / patch_embed 0, blocks.i -> i + 1, anything else (a shared
    rel_pos_bias included) depth + 1, the top of num_layers = depth + 2."""
    if name.startswith(("cls_token", "mask_token", "pos_embed", "patch_embed")):
        return 0
    if name.startswith("blocks."):
        return int(name.split(".")[1]) + 1
    return depth + 1


# ------------------------------------------------------------------------------------------------ model


def make_vit(arch: dict[str, Any]) -> nn.Module:
    """timm Beit without its classifier and final norms (unused: the adapter reads block outputs)."""
    args = {k: v for k, v in arch.items() if k not in ("architecture",)}
    vit = timm.create_model(arch["architecture"], pretrained=False, num_classes=0, **args)
    vit.patch_embed.strict_img_size = False  # any multiple of the patch size
    vit.norm = nn.Identity()
    vit.fc_norm = nn.Identity()
    vit.head = nn.Identity()
    install_dynamic_rel_pos(vit)
    return vit


class BeitAdapterMask2Former(Mask2FormerRestorer):
    """BEiTv2 + ViT-Adapter + Mask2Former (pixel decoder and transformer decoder) restorer;
    forward (B,3,H,W) in [0,1] -> (B,3,H,W). See the module docstring."""

    pad_multiple = 32

    def __init__(self, vit_arch: dict[str, Any], adapter: dict[str, Any], decoder: dict[str, int], *,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 head_channels: tuple[int, int] = (64, 32), shallow_channels: int = 32,
                 aux_loss: bool = False, segmentation_layout: bool = True) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.backbone = make_vit(vit_arch)
        dim, depth = self.backbone.embed_dim, len(self.backbone.blocks)
        self.depth = depth
        adapter = dict(adapter)
        indexes = adapter.pop("interaction_indexes", None) or default_interaction_indexes(depth)
        self.adapter = ViTAdapter(dim, indexes, drop_path_rate=vit_arch.get("drop_path_rate", 0.0), **adapter)
        self.decoder = make_pixel_decoder([dim] * 4, **{k: v for k, v in decoder.items() if k in PIXEL_DECODER_KEYS})
        self.query_decoder = QueryDecoder(mask2former_config(**decoder), 3)
        self.aux_loss = aux_loss
        self.segmentation_layout = segmentation_layout
        self.head = RestorationHead(self.decoder.mask_projection.out_channels + 3, 3, channels=tuple(head_channels),
                                    shallow_channels=shallow_channels)

    def features(self, x: Tensor) -> list[Tensor]:
        return self.adapter(self.backbone, x)

    def backbone_layer_id(self, name: str) -> int:
        return beit_layer_id(name, self.depth)

    def layer_ids(self) -> dict[str, int]:
        """BEiT's numbering of the ViT (beit_layer_id), plus the decoder's embeddings at layer 0, as ViT-Adapter's
        get_num_layer_for_vit puts decode_head.{mask_embed, cls_embed, level_embed, query_embed, query_feat}
        (segmentation/mmcv_custom/layer_decay_optimizer_constructor.py): under layer decay they train at
        the patch embedding's scale. The adapter and the rest of the decoder are at scale 1."""
        ids = super().layer_ids()
        ids.update({n: 0 for n, _ in self.named_parameters() if n.startswith(DECODER_LAYER0)})
        return ids

    @property
    def num_layers(self) -> int:
        """The official count: paramwise_cfg num_layers (the depth, 24 for BEiTv2-L) + 2 (vitad-ld:
        `num_layers = self.paramwise_cfg.get('num_layers') + 2`), so blocks.23 (layer 24) trains at
        rate ** 1 and the layer-0 parameters at rate ** 25; layer depth + 1 (scale 1) is the top."""
        return self.depth + 2

    def checkpoint_parameters(self) -> list[str]:
        """Names of this model's parameters that the published segmentation checkpoint fills (targets of
        MMSEG_KEY_TABLE's loaded rows); none for a variant without one (beitv2-b: ImageNet ViT init only)."""
        if not self.segmentation_layout:
            return []
        targets = [_pattern(ours) for _, ours, _ in MMSEG_KEY_TABLE if ours is not None]
        return [n for n, _ in self.named_parameters() if any(t.fullmatch(n) for t in targets)]


def default_interaction_indexes(depth: int) -> list[list[int]]:
    """Four equal chunks of the ViT's blocks (ViT-Adapter's choice), or one block each when depth < 4."""
    if depth < 4:
        return [[i, i] for i in range(depth)]
    step = depth // 4
    return [[i * step, (i + 1) * step - 1 if i < 3 else depth - 1] for i in range(4)]


# ------------------------------------------------------------------ the published checkpoint's layout

# ViT-Adapter's released segmentation checkpoints (mmseg 0.20 / mmdet 2.22 / mmcv 1.x) -> this module.
# One row per tensor family: (checkpoint name, name here, part). Names are patterns whose {placeholders}
# match one dotted component or more ({i}, {j}: an index; {p}: weight | bias; {rest}: any dotted tail) and
# carry over. `part` q / k / v takes that third (rows) of a packed nn.MultiheadAttention in_proj tensor.
# A name here of None: a published tensor deliberately not loaded. The first matching row wins.
# Sources (read with the search tool): ViT-Adapter segmentation/mmseg_custom/models/backbones/base/beit.py
# (BEiT: blocks.{i}.norm1, attn.qkv, attn.q_bias, attn.v_bias, attn.relative_position_bias_table,
# attn.relative_position_index, attn.proj, norm2, mlp.fc1, mlp.fc2, gamma_1, gamma_2; cls_token;
# patch_embed.proj), backbones/beit_adapter.py (level_embed, spm, interactions, up, norm1..norm4),
# backbones/adapter_modules.py (injector / extractor: query_norm, feat_norm, attn.{sampling_offsets,
# attention_weights, value_proj, output_proj}, gamma, ffn.fc1, ffn.dwconv.dwconv, ffn.fc2, ffn_norm;
# extra_extractors.{0,1}; spm.stem.{0,1,3,4,6,7}, conv2..4.{0,1}, fc1..fc4), decode_heads/
# mask2former_head.py (pixel_decoder, transformer_decoder, query_embed, query_feat, level_embed,
# cls_embed, mask_embed.{0,2,4}; BaseDecodeHead's conv_seg), plugins/msdeformattn_pixel_decoder.py
# (input_convs.{i}.conv/gn, top-down; encoder.layers; level_encoding; lateral_convs.0, output_convs.0;
# mask_feature), utils/transformer.py (DetrTransformerDecoder.post_norm; the encoder has none when
# post-norm), and mmcv 1.x cnn/bricks/transformer.py (BaseTransformerLayer attentions / ffns / norms in
# operation order; FFN layers.0.0 and layers.1; MultiheadAttention wraps nn.MultiheadAttention as `attn`;
# ConvModule's conv / gn). The decoder's operation order is (cross_attn, norm, self_attn, norm, ffn, norm):
# attentions.0 is the cross-attention, norms.0 follows it. transformers' modules here: modeling_mask2former
# Mask2FormerPixelDecoder (input_projections.{i}.{0,1} top-down, encoder.layers.{i}.{self_attn,
# self_attn_layer_norm, fc1, fc2, final_layer_norm}, level_embed, adapter_1, layer_1, mask_projection) and
# Mask2FormerTransformerModule (queries_embedder = DETR's query position = mmdet query_embed;
# queries_features = the content = query_feat; level_embed; decoder.layers.{i}.{cross_attn,
# cross_attn_layer_norm, self_attn.{q,k,v,out}_proj, self_attn_layer_norm, fc1, fc2, final_layer_norm};
# decoder.layernorm = post_norm; decoder.mask_predictor.mask_embedder.{0,1,2}.0 = mask_embed.{0,2,4}).
_PD = "decode_head.pixel_decoder."
_TD = "decode_head.transformer_decoder.layers.{i}."
_TM = "query_decoder.transformer_module."
MMSEG_KEY_TABLE: tuple[tuple[str, str | None, str], ...] = (
    # ViT: timm's Beit has the same names
    ("backbone.blocks.{i}.attn.relative_position_index", None, ""),  # rebuilt from the token grid
    ("backbone.cls_token", "backbone.cls_token", ""),
    ("backbone.patch_embed.proj.{p}", "backbone.patch_embed.proj.{p}", ""),
    ("backbone.blocks.{i}.{rest}", "backbone.blocks.{i}.{rest}", ""),
    # adapter (a module of its own here: only the ViT is the "backbone" parameter group)
    ("backbone.level_embed", "adapter.level_embed", ""),
    ("backbone.spm.{rest}", "adapter.spm.{rest}", ""),
    ("backbone.interactions.{i}.{rest}.ffn.dwconv.dwconv.{p}", "adapter.interactions.{i}.{rest}.ffn.dwconv.{p}", ""),
    ("backbone.interactions.{i}.{rest}", "adapter.interactions.{i}.{rest}", ""),
    ("backbone.up.{p}", "adapter.up.{p}", ""),
    ("backbone.norm1.{rest}", "adapter.norms.0.{rest}", ""),
    ("backbone.norm2.{rest}", "adapter.norms.1.{rest}", ""),
    ("backbone.norm3.{rest}", "adapter.norms.2.{rest}", ""),
    ("backbone.norm4.{rest}", "adapter.norms.3.{rest}", ""),
    # pixel decoder (mmdet MSDeformAttnPixelDecoder -> transformers Mask2FormerPixelDecoder)
    (_PD + "input_convs.{i}.conv.{p}", "decoder.input_projections.{i}.0.{p}", ""),
    (_PD + "input_convs.{i}.gn.{p}", "decoder.input_projections.{i}.1.{p}", ""),
    (_PD + "encoder.layers.{i}.attentions.0.{rest}", "decoder.encoder.layers.{i}.self_attn.{rest}", ""),
    (_PD + "encoder.layers.{i}.norms.0.{p}", "decoder.encoder.layers.{i}.self_attn_layer_norm.{p}", ""),
    (_PD + "encoder.layers.{i}.ffns.0.layers.0.0.{p}", "decoder.encoder.layers.{i}.fc1.{p}", ""),
    (_PD + "encoder.layers.{i}.ffns.0.layers.1.{p}", "decoder.encoder.layers.{i}.fc2.{p}", ""),
    (_PD + "encoder.layers.{i}.norms.1.{p}", "decoder.encoder.layers.{i}.final_layer_norm.{p}", ""),
    (_PD + "level_encoding.weight", "decoder.level_embed", ""),
    (_PD + "lateral_convs.0.conv.weight", "decoder.adapter_1.0.weight", ""),
    (_PD + "lateral_convs.0.gn.{p}", "decoder.adapter_1.1.{p}", ""),
    (_PD + "output_convs.0.conv.weight", "decoder.layer_1.0.weight", ""),
    (_PD + "output_convs.0.gn.{p}", "decoder.layer_1.1.{p}", ""),
    (_PD + "mask_feature.{p}", "decoder.mask_projection.{p}", ""),
    # transformer decoder (mmdet Mask2FormerHead -> transformers Mask2FormerTransformerModule)
    ("decode_head.query_embed.weight", _TM + "queries_embedder.weight", ""),
    ("decode_head.query_feat.weight", _TM + "queries_features.weight", ""),
    ("decode_head.level_embed.weight", _TM + "level_embed.weight", ""),
    (_TD + "attentions.0.attn.{rest}", _TM + "decoder.layers.{i}.cross_attn.{rest}", ""),
    (_TD + "norms.0.{p}", _TM + "decoder.layers.{i}.cross_attn_layer_norm.{p}", ""),
    (_TD + "attentions.1.attn.in_proj_weight", _TM + "decoder.layers.{i}.self_attn.q_proj.weight", "q"),
    (_TD + "attentions.1.attn.in_proj_weight", _TM + "decoder.layers.{i}.self_attn.k_proj.weight", "k"),
    (_TD + "attentions.1.attn.in_proj_weight", _TM + "decoder.layers.{i}.self_attn.v_proj.weight", "v"),
    (_TD + "attentions.1.attn.in_proj_bias", _TM + "decoder.layers.{i}.self_attn.q_proj.bias", "q"),
    (_TD + "attentions.1.attn.in_proj_bias", _TM + "decoder.layers.{i}.self_attn.k_proj.bias", "k"),
    (_TD + "attentions.1.attn.in_proj_bias", _TM + "decoder.layers.{i}.self_attn.v_proj.bias", "v"),
    (_TD + "attentions.1.attn.out_proj.{p}", _TM + "decoder.layers.{i}.self_attn.out_proj.{p}", ""),
    (_TD + "norms.1.{p}", _TM + "decoder.layers.{i}.self_attn_layer_norm.{p}", ""),
    (_TD + "ffns.0.layers.0.0.{p}", _TM + "decoder.layers.{i}.fc1.{p}", ""),
    (_TD + "ffns.0.layers.1.{p}", _TM + "decoder.layers.{i}.fc2.{p}", ""),
    (_TD + "norms.2.{p}", _TM + "decoder.layers.{i}.final_layer_norm.{p}", ""),
    ("decode_head.transformer_decoder.post_norm.{p}", _TM + "decoder.layernorm.{p}", ""),
    ("decode_head.mask_embed.0.{p}", _TM + "decoder.mask_predictor.mask_embedder.0.0.{p}", ""),
    ("decode_head.mask_embed.2.{p}", _TM + "decoder.mask_predictor.mask_embedder.1.0.{p}", ""),
    ("decode_head.mask_embed.4.{p}", _TM + "decoder.mask_predictor.mask_embedder.2.0.{p}", ""),
    # not loaded: the 150 + 1-way class embedding (replaced by the 3-channel one) and mmseg BaseDecodeHead's
    # own 1x1 classifier, which Mask2FormerHead never calls
    ("decode_head.cls_embed.{p}", None, ""),
    ("decode_head.conv_seg.{p}", None, ""),
)
_PLACEHOLDERS = {"i": r"\d+", "j": r"\d+", "p": r"weight|bias", "rest": r"[\w.]+"}


def _pattern(name: str) -> re.Pattern[str]:
    """A table name -> a regex with one named group per {placeholder}."""
    parts = re.split(r"(\{\w+\})", name)
    return re.compile("".join(
        f"(?P<{part[1:-1]}>{_PLACEHOLDERS[part[1:-1]]})" if part.startswith("{") else re.escape(part)
        for part in parts
    ))


_TABLE = [(_pattern(mm), ours, part) for mm, ours, part in MMSEG_KEY_TABLE]


def is_mmseg_layout(sd: dict[str, Tensor]) -> bool:
    """A ViT-Adapter (mmseg) segmentation checkpoint: backbone.* and decode_head.* tensors."""
    return any(k.startswith("decode_head.") for k in sd) and any(k.startswith("backbone.") for k in sd)


def convert_mmseg_state(sd: dict[str, Tensor], source: str = "checkpoint") -> tuple[dict[str, Tensor], list[str]]:
    """A ViT-Adapter segmentation state dict -> (state dict with this module's names, dropped names).

    Every key must match a row of MMSEG_KEY_TABLE; one that matches none raises WeightsError (not the
    published layout), so nothing is silently left out.
    """
    out: dict[str, Tensor] = {}
    dropped: list[str] = []
    unknown: list[str] = []
    for key, value in sd.items():
        rows = [(m, ours, part) for pat, ours, part in _TABLE if (m := pat.fullmatch(key))]
        if not rows:
            unknown.append(key)
            continue
        first = rows[0][1]
        if first is None:
            dropped.append(key)
            continue
        for m, ours, part in rows:
            if ours is None or (part == "" and ours is not first):
                continue  # only the first row applies, except the q / k / v thirds of one packed tensor
            name = ours.format(**m.groupdict())
            out[name] = value.chunk(3, dim=0)["qkv".index(part)] if part else value
    if unknown:
        raise WeightsError(f"{source}: {len(unknown)} tensor(s) not in ViT-Adapter's segmentation layout "
                           f"(MMSEG_KEY_TABLE): {', '.join(unknown[:8])}")
    return out, dropped


_INVERSE = [(_pattern(ours), mm, part) for mm, ours, part in MMSEG_KEY_TABLE if ours is not None]


def to_mmseg_state(model: BeitAdapterMask2Former) -> dict[str, Tensor]:
    """`model`'s segmentation tensors under the released checkpoint's names: MMSEG_KEY_TABLE read backwards
    (the first row whose name here matches; the q / k / v thirds packed back into one in_proj tensor), plus
    each block's `relative_position_index` (a non-persistent buffer in timm's Beit, stored in the release).
    Left out: the restoration head and the 3-way class predictor; a segmentation checkpoint adds its own
    `decode_head.cls_embed` and `decode_head.conv_seg`. A tensor no row maps raises WeightsError."""
    out: dict[str, Tensor] = {}
    packed: dict[str, dict[str, Tensor]] = {}
    unknown = []
    for key, value in model.state_dict().items():
        if key.startswith(("head.", "query_decoder.class_predictor.")):
            continue
        hit = next(((m, mm, part) for pat, mm, part in _INVERSE if (m := pat.fullmatch(key))), None)
        if hit is None:
            unknown.append(key)
            continue
        m, mm, part = hit
        name = mm.format(**m.groupdict())
        if part:
            packed.setdefault(name, {})[part] = value
        else:
            out[name] = value
    if unknown:
        raise WeightsError(f"{len(unknown)} tensor(s) without a row in MMSEG_KEY_TABLE: {', '.join(unknown[:8])}")
    for name, parts in packed.items():
        out[name] = torch.cat([parts[p] for p in "qkv"], dim=0)
    for i, block in enumerate(model.backbone.blocks):
        out[f"backbone.blocks.{i}.attn.relative_position_index"] = block.attn.relative_position_index.clone()
    return out


def build(*, variant: str | None = None, pretrained: str | None = None, **kwargs: Any) -> BeitAdapterMask2Former:
    """Build a BEiTv2 + ViT-Adapter + Mask2Former restorer.

    variant: "demo", "beitv2-b" (default without a checkpoint) or "beitv2-l" (default with a ViT-Adapter
        segmentation checkpoint).
    pretrained: either ViT-Adapter's released segmentation checkpoint (.pth with `state_dict` in the mmseg
        layout: backbone.*, decode_head.*; e.g. mask2former_beitv2_adapter_large_896_80k_ade20k.pth), mapped
        by MMSEG_KEY_TABLE onto everything but the head and the 3-way class predictor; or timm BEiTv2
        weights for the ViT only: hub id (e.g. "timm/beitv2_base_patch16_224.in1k_ft_in22k_in1k"), a
        snapshot folder (config.json with "architecture" [+ "model_args", "pretrained_cfg" mean/std] and
        model.safetensors), a timm-format file (keys "blocks.0...."); or a state dict saved from this model
        (restores everything).
    kwargs: architecture, img_size (the pretraining size: sets the bias table's grid), embed_dim, depth,
        num_heads, drop_path_rate, init_values (ViT); conv_inplane, deform_num_heads, n_points, deform_ratio,
        cffn_ratio, init_values, interaction_indexes (adapter); feature_size, mask_feature_size,
        encoder_layers, encoder_feedforward_dim, num_attention_heads (pixel decoder and attention heads);
        hidden_dim, decoder_layers, num_queries, dim_feedforward (transformer decoder); head_channels,
        shallow_channels (head); aux_loss (deep supervision over the decoder layers, off).
    """
    allowed = set(VIT_KEYS) | set(ADAPTER_KEYS) | set(PIXEL_DECODER_KEYS) | set(TRANSFORMER_KEYS) | set(HEAD_KEYS)
    allowed |= {"aux_loss"}
    unknown = set(kwargs) - allowed
    if unknown:
        raise TypeError(f"vit_adapter: unknown keyword(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
    if variant is not None and variant not in VARIANTS:
        raise ValueError(f"vit_adapter: unknown variant {variant!r}; choose from {list(VARIANTS)}")
    ckpt = read_pretrained(pretrained) if pretrained is not None else None
    mmseg = ckpt is not None and is_mmseg_layout(ckpt.state_dict)
    v = variant or ("beitv2-l" if mmseg else "beitv2-b")
    if mmseg and v not in SEGMENTATION_CHECKPOINT_VARIANTS:
        raise ValueError(f"vit_adapter: {ckpt.path} is a ViT-Adapter segmentation checkpoint; variant {v!r} "
                         f"has no such checkpoint (use one of {list(SEGMENTATION_CHECKPOINT_VARIANTS)})")
    vit_arch = dict(VIT_ARCH[v])
    adapter = dict(ADAPTER_ARCH[v])
    decoder = dict(DECODER_ARCH[v])
    head: dict[str, Any] = dict(head_channels=(16, 16), shallow_channels=16) if v == "demo" else {}
    mean, std = IMAGENET_MEAN, IMAGENET_STD  # also ViT-Adapter's img_norm_cfg (123.675/116.28/103.53 ...)
    if ckpt is not None and ckpt.config is not None and not mmseg:
        cfg = ckpt.config
        if "architecture" not in cfg or "beit" not in str(cfg["architecture"]):
            raise ValueError(f"{ckpt.path}: config.json is not a timm BEiT config (architecture="
                             f"{cfg.get('architecture')!r})")
        vit_arch = {"architecture": cfg["architecture"],
                    **{k: val for k, val in vit_arch.items() if k in ("drop_path_rate", "init_values")},
                    **{k: val for k, val in cfg.get("model_args", {}).items() if k in VIT_SHAPE_KEYS}}
        if variant == "demo" and "embed_dim" not in vit_arch:
            raise ValueError(f"variant 'demo' given, but {ckpt.path} holds a full-size {cfg['architecture']}")
        pcfg = cfg.get("pretrained_cfg", {})
        mean, std = tuple(pcfg.get("mean", mean)), tuple(pcfg.get("std", std))
    vit_arch.update({k: kwargs[k] for k in VIT_KEYS if k in kwargs})
    adapter.update({k: kwargs[k] for k in ADAPTER_KEYS if k in kwargs})
    decoder.update({k: kwargs[k] for k in (*PIXEL_DECODER_KEYS, *TRANSFORMER_KEYS) if k in kwargs})
    head.update({k: kwargs[k] for k in HEAD_KEYS if k in kwargs})
    model = BeitAdapterMask2Former(vit_arch, adapter, decoder, mean=mean, std=std, **head,
                                   aux_loss=bool(kwargs.get("aux_loss", False)),
                                   segmentation_layout=v in SEGMENTATION_CHECKPOINT_VARIANTS)
    model.variant_note = VARIANT_NOTES.get(v, "")
    if ckpt is not None:
        sd = ckpt.state_dict
        if mmseg:
            sd, _ = convert_mmseg_state(sd, str(ckpt.path))
            required = ["backbone.", "adapter.", "decoder.", "query_decoder.transformer_module."]
        else:
            if not any(k.startswith("backbone.") for k in sd):  # a bare timm ViT state dict
                sd = {"backbone." + k: t for k, t in sd.items()}
            required = ["backbone."]
        load_checked(model, sd, required_prefixes=required, source=str(ckpt.path))
    return model
