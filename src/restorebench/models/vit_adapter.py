"""BEiTv2 ViT (timm) + ViT-Adapter (written here) + Mask2Former pixel decoder, turned restorer.

    x (B, 3, H, W) in [0, 1] -> normalise (timm pretrained_cfg mean/std) -> reflect-pad to a multiple of 32
    -> spatial prior module (conv stem): c1 at 1/4 (map), c2, c3, c4 at 1/8, 1/16, 1/32 (token sequences)
    -> ViT patch tokens at 1/16; interaction block i runs ViT blocks interaction_indexes[i] between
         an injector  (ViT tokens query the spatial tokens c2|c3|c4: deformable attention, 3 levels, gamma)
         an extractor (spatial tokens query the ViT tokens: deformable attention, 1 level + ConvFFN)
       (the last block has two extra extractors)
    -> c2 -> ConvTranspose x2 + c1 = 1/4 map; ViT outputs of the 4 interactions resized and added to the
       four scales; BatchNorm each: 4 maps at strides 4, 8, 16, 32, embed_dim channels each
    -> Mask2Former pixel decoder (the same transformers module as swin_mask2former) -> 1/4 mask features
    -> RestorationHead -> residual; output x + residual, cropped back to H, W.

The adapter follows ViT-Adapter (Chen et al., ICLR 2023; github.com/czczup/ViT-Adapter,
segmentation/mmseg_custom/models/backbones/adapter_modules.py and beit_adapter.py): SpatialPriorModule with
64 stem channels, InteractionBlockWithCls (the cls token rides along through the ViT blocks), injector
gamma initialised to `init_values` = 0 (so the pretrained ViT sees its usual tokens at the start), extra
extractors in the last block, ConvFFN ratio 0.25, 4 sampling points, deform_ratio 0.5 and 12 deformable
heads for a base-width ViT (configs/ade20k/upernet_augreg_adapter_base_512_160k_ade20k.py; adapter_modules'
own defaults are 6 heads / ratio 1.0, which the tiny/small configs use). Multi-scale deformable attention
is plain PyTorch (F.grid_sample), no custom CUDA op. BatchNorm stands in for the original SyncBatchNorm.

The ViT is timm's Beit. Its relative position bias table keeps the checkpoint's shape (pretraining grid,
14x14 for 224 px); for any other token grid the table is resampled bicubically on the fly (as BEiT does
when finetuning at a new resolution, here differentiably and per forward), so any H, W works.
`pretrained` loads the timm BEiTv2 checkpoint into `backbone` (the ViT) only; adapter, decoder and head
are new.

Variants:
    demo      Beit embed 32, depth 2, heads 2, grid 4x4 (64 px); 2 interactions; decoder width 32
    beitv2-b  beitv2_base_patch16_224: embed 768, depth 12, heads 12; interactions [[0,2],[3,5],[6,8],[9,11]];
              pixel decoder 256 wide, 6 deformable encoder layers (Mask2Former defaults); drop path 0.3
"""

from __future__ import annotations

import math
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
    SegmentationRestorer,
)
from restorebench.models.swin_mask2former import (
    PIXEL_DECODER_DEFAULT,
    PIXEL_DECODER_DEMO,
    PIXEL_DECODER_KEYS,
    deformable_init_,
    make_pixel_decoder,
)
from restorebench.models.weights import load_checked, read_pretrained

VARIANTS: tuple[str, ...] = ("demo", "beitv2-b")

VIT_ARCH: dict[str, dict[str, Any]] = {
    "demo": dict(architecture="beitv2_base_patch16_224", img_size=64, embed_dim=32, depth=2, num_heads=2,
                 drop_path_rate=0.0),
    "beitv2-b": dict(architecture="beitv2_base_patch16_224", img_size=224, drop_path_rate=0.3),
}
ADAPTER_ARCH: dict[str, dict[str, Any]] = {
    "demo": dict(conv_inplane=16, deform_num_heads=2, n_points=4, deform_ratio=0.5, cffn_ratio=0.25,
                 init_values=0.0),
    "beitv2-b": dict(conv_inplane=64, deform_num_heads=12, n_points=4, deform_ratio=0.5, cffn_ratio=0.25,
                     init_values=0.0, interaction_indexes=[[0, 2], [3, 5], [6, 8], [9, 11]]),
}
VIT_KEYS = ("architecture", "img_size", "embed_dim", "depth", "num_heads", "drop_path_rate")
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


def beit_layer_id(name: str, depth: int) -> int:
    """BEiT's layer-decay numbering (github.com/microsoft/unilm beit/optim_factory.py get_num_layer_for_vit):
    cls_token / pos_embed / patch_embed / rel_pos_bias 0, blocks.i -> i + 1, anything else depth + 1."""
    if name.startswith(("cls_token", "mask_token", "pos_embed", "patch_embed", "rel_pos_bias")):
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


class BeitAdapterMask2Former(SegmentationRestorer):
    """BEiTv2 + ViT-Adapter + Mask2Former pixel decoder restorer; forward (B,3,H,W) in [0,1] -> (B,3,H,W)."""

    pad_multiple = 32

    def __init__(self, vit_arch: dict[str, Any], adapter: dict[str, Any], decoder: dict[str, int], *,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 head_channels: tuple[int, int] = (64, 32), shallow_channels: int = 32) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.backbone = make_vit(vit_arch)
        dim, depth = self.backbone.embed_dim, len(self.backbone.blocks)
        self.depth = depth
        adapter = dict(adapter)
        indexes = adapter.pop("interaction_indexes", None) or default_interaction_indexes(depth)
        self.adapter = ViTAdapter(dim, indexes, drop_path_rate=vit_arch.get("drop_path_rate", 0.0), **adapter)
        self.decoder = make_pixel_decoder([dim] * 4, **decoder)
        self.head = RestorationHead(self.decoder.mask_projection.out_channels, 3, channels=tuple(head_channels),
                                    shallow_channels=shallow_channels)

    def decode(self, x: Tensor) -> Tensor:
        feats = self.adapter(self.backbone, x)
        return self.decoder(feats, return_dict=True).mask_features

    def backbone_layer_id(self, name: str) -> int:
        return beit_layer_id(name, self.depth)


def default_interaction_indexes(depth: int) -> list[list[int]]:
    """Four equal chunks of the ViT's blocks (ViT-Adapter's choice), or one block each when depth < 4."""
    if depth < 4:
        return [[i, i] for i in range(depth)]
    step = depth // 4
    return [[i * step, (i + 1) * step - 1 if i < 3 else depth - 1] for i in range(4)]


def build(*, variant: str | None = None, pretrained: str | None = None, **kwargs: Any) -> BeitAdapterMask2Former:
    """Build a BEiTv2 + ViT-Adapter + Mask2Former-pixel-decoder restorer.

    variant: "demo" or "beitv2-b" (default).
    pretrained: timm BEiTv2 weights: hub id (e.g. "timm/beitv2_base_patch16_224.in1k_ft_in22k_in1k"), a
        snapshot folder (config.json with "architecture" [+ "model_args", "pretrained_cfg" mean/std] and
        model.safetensors), a timm-format file (keys "blocks.0...."), or a state dict saved from this
        model (keys "backbone....", restores everything).
    kwargs: architecture, img_size (the pretraining size: sets the bias table's grid), embed_dim, depth,
        num_heads, drop_path_rate (ViT); conv_inplane, deform_num_heads, n_points, deform_ratio,
        cffn_ratio, init_values, interaction_indexes (adapter); feature_size, mask_feature_size,
        encoder_layers, encoder_feedforward_dim, num_attention_heads (pixel decoder); head_channels,
        shallow_channels (head).
    """
    allowed = set(VIT_KEYS) | set(ADAPTER_KEYS) | set(PIXEL_DECODER_KEYS) | set(HEAD_KEYS)
    unknown = set(kwargs) - allowed
    if unknown:
        raise TypeError(f"vit_adapter: unknown keyword(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
    if variant is not None and variant not in VARIANTS:
        raise ValueError(f"vit_adapter: unknown variant {variant!r}; choose from {list(VARIANTS)}")
    v = variant or "beitv2-b"
    vit_arch = dict(VIT_ARCH[v])
    adapter = dict(ADAPTER_ARCH[v])
    decoder = dict(PIXEL_DECODER_DEMO if v == "demo" else PIXEL_DECODER_DEFAULT)
    head: dict[str, Any] = dict(head_channels=(16, 16), shallow_channels=16) if v == "demo" else {}
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    ckpt = read_pretrained(pretrained) if pretrained is not None else None
    if ckpt is not None and ckpt.config is not None:
        cfg = ckpt.config
        if "architecture" not in cfg or "beit" not in str(cfg["architecture"]):
            raise ValueError(f"{ckpt.path}: config.json is not a timm BEiT config (architecture="
                             f"{cfg.get('architecture')!r})")
        vit_arch = {"architecture": cfg["architecture"], "drop_path_rate": vit_arch["drop_path_rate"],
                    **{k: val for k, val in cfg.get("model_args", {}).items() if k in VIT_KEYS}}
        if variant == "demo" and "embed_dim" not in vit_arch:
            raise ValueError(f"variant 'demo' given, but {ckpt.path} holds a full-size {cfg['architecture']}")
        pcfg = cfg.get("pretrained_cfg", {})
        mean, std = tuple(pcfg.get("mean", mean)), tuple(pcfg.get("std", std))
    vit_arch.update({k: kwargs[k] for k in VIT_KEYS if k in kwargs})
    adapter.update({k: kwargs[k] for k in ADAPTER_KEYS if k in kwargs})
    decoder.update({k: kwargs[k] for k in PIXEL_DECODER_KEYS if k in kwargs})
    head.update({k: kwargs[k] for k in HEAD_KEYS if k in kwargs})
    model = BeitAdapterMask2Former(vit_arch, adapter, decoder, mean=mean, std=std, **head)
    if ckpt is not None:
        sd = ckpt.state_dict
        if not any(k.startswith("backbone.") for k in sd):  # a bare timm ViT state dict
            sd = {"backbone." + k: t for k, t in sd.items()}
        load_checked(model, sd, required_prefixes=["backbone."], source=str(ckpt.path))
    return model
