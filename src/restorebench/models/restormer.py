"""Restormer (Zamir et al., "Restormer: Efficient Transformer for High-Resolution Image Restoration", CVPR 2022).

Architecture, module names and parameter names follow swz30/Restormer
`basicsr/models/archs/restormer_arch.py` exactly, so an official checkpoint (`torch.load(f, weights_only=True)["params"]`, as
the official test scripts load it) loads with `strict=True` and gives the official outputs. Written afresh
from that structure; nothing is copied.

State-dict keys: `patch_embed.proj.weight (48,3,3,3)`, `encoder_level{1,2,3}.{j}.*`, `down{1_2,2_3,3_4}.body.0
.weight`, `latent.{j}.*`, `up{4_3,3_2,2_1}.body.0.weight`, `reduce_chan_level{3,2}.weight`,
`decoder_level{3,2,1}.{j}.*`, `refinement.{j}.*`, `output.weight`, `skip_conv.weight` (dual_pixel_task);
each TransformerBlock has `norm1.body.weight` (+ `.bias` for WithBias), `attn.temperature (heads,1,1)`,
`attn.qkv.weight`, `attn.qkv_dwconv.weight`, `attn.project_out.weight`, `norm2.body.*`,
`ffn.project_in.weight`, `ffn.dwconv.weight`, `ffn.project_out.weight` (plus `.bias` when bias=True).

Padding: the official architecture needs H, W divisible by 8; its test scripts (Motion_Deblurring/test.py)
reflect-pad bottom/right to the next multiple of 8 and crop back. `Restormer.forward` does the same inside
(replicate padding where an image is too small to reflect), so any H, W works and inputs that are already
multiples of 8 go through untouched, exactly as the official module.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from restorebench.models.restorer import Restorer, zero_
from restorebench.models.weights import load_strict, resolve_kwargs

_ARCH_KEYS = (
    "inp_channels",
    "out_channels",
    "dim",
    "num_blocks",
    "num_refinement_blocks",
    "heads",
    "ffn_expansion_factor",
    "bias",
    "LayerNorm_type",
    "dual_pixel_task",
)

_PAPER = dict(
    inp_channels=3,
    out_channels=3,
    dim=48,
    num_blocks=(4, 6, 6, 8),
    num_refinement_blocks=4,
    heads=(1, 2, 4, 8),
    ffn_expansion_factor=2.66,
    bias=False,
    dual_pixel_task=False,
)
# Options/RealDenoising_Restormer.yml (BiasFree) and Options/Deraining / Deblurring (WithBias, the
# official constructor default). Published size (docs/ARCHITECTURE.md): 26.13M.
_VARIANT_CFG: dict[str, dict] = {
    "demo": dict(
        _PAPER,
        dim=8,
        num_blocks=(1, 1, 1, 1),
        num_refinement_blocks=1,
        heads=(1, 1, 1, 1),
        LayerNorm_type="WithBias",
    ),
    "denoise": dict(_PAPER, LayerNorm_type="BiasFree"),
    "deblur": dict(_PAPER, LayerNorm_type="WithBias"),
}
VARIANTS: tuple[str, ...] = tuple(_VARIANT_CFG)
# The official constructor defaults are exactly the "deblur" config.
DEFAULT_VARIANT = "deblur"
PUBLISHED_PARAMS: dict[str, float] = {"denoise": 26.13e6, "deblur": 26.13e6}
PAD_MULTIPLE = 8


# --------------------------------------------------------------------------------------------- layers


class BiasFreeLayerNorm(nn.Module):
    """x / sqrt(var_c(x) + 1e-5) * weight over channels; note: no mean subtraction in the numerator."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        """x (B, C, H, W) -> same shape."""
        xf = x.float()  # statistics in float32 under bf16/fp16 autocast; a no-op for float32
        var = xf.var(1, keepdim=True, unbiased=False)
        return (xf / torch.sqrt(var + 1e-5)).to(x.dtype) * self.weight.view(1, -1, 1, 1)


class WithBiasLayerNorm(nn.Module):
    """Standard LayerNorm over channels of an NCHW tensor, eps 1e-5."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x: Tensor) -> Tensor:
        """x (B, C, H, W) -> same shape."""
        xf = x.float()  # statistics in float32 under bf16/fp16 autocast; a no-op for float32
        mu = xf.mean(1, keepdim=True)
        var = xf.var(1, keepdim=True, unbiased=False)
        y = ((xf - mu) / torch.sqrt(var + 1e-5)).to(x.dtype)
        return y * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


class LayerNorm(nn.Module):
    """Channel LayerNorm with the official wrapper name `body` (keys `norm1.body.weight`, `.bias`).

    The official code rearranges to (B, HW, C) and normalises the last axis; normalising axis 1 of the
    NCHW tensor is the same computation without the two transposes.
    """

    def __init__(self, dim: int, LayerNorm_type: str) -> None:  # noqa: N803 (official keyword)
        super().__init__()
        if LayerNorm_type not in ("BiasFree", "WithBias"):
            raise ValueError(f"LayerNorm_type must be 'BiasFree' or 'WithBias', not {LayerNorm_type!r}")
        self.body = BiasFreeLayerNorm(dim) if LayerNorm_type == "BiasFree" else WithBiasLayerNorm(dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


class FeedForward(nn.Module):
    """Gated-Dconv feed-forward network (GDFN): (B, dim, H, W) -> (B, dim, H, W)."""

    def __init__(self, dim: int, ffn_expansion_factor: float, bias: bool) -> None:
        super().__init__()
        hidden = int(dim * ffn_expansion_factor)
        self.project_in = nn.Conv2d(dim, hidden * 2, 1, bias=bias)
        self.dwconv = nn.Conv2d(hidden * 2, hidden * 2, 3, padding=1, groups=hidden * 2, bias=bias)
        self.project_out = nn.Conv2d(hidden, dim, 1, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        a, b = self.dwconv(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(F.gelu(a) * b)


class Attention(nn.Module):
    """Multi-Dconv head transposed attention (MDTA): attention across channels, (C/h x C/h) per head."""

    def __init__(self, dim: int, num_heads: int, bias: bool) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.qkv = nn.Conv2d(dim, dim * 3, 1, bias=bias)
        self.qkv_dwconv = nn.Conv2d(dim * 3, dim * 3, 3, padding=1, groups=dim * 3, bias=bias)
        self.project_out = nn.Conv2d(dim, dim, 1, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        """x (B, C, H, W) -> (B, C, H, W)."""
        b, c, h, w = x.shape
        q, k, v = self.qkv_dwconv(self.qkv(x)).chunk(3, dim=1)
        q, k, v = (t.reshape(b, self.num_heads, c // self.num_heads, h * w) for t in (q, k, v))
        q = F.normalize(q, dim=-1)  # L2 over the spatial axis
        k = F.normalize(k, dim=-1)
        attn = ((q @ k.transpose(-2, -1)) * self.temperature).softmax(dim=-1)
        return self.project_out((attn @ v).reshape(b, c, h, w))


class TransformerBlock(nn.Module):
    """Pre-norm block: x + MDTA(norm1(x)), then + GDFN(norm2(x))."""

    def __init__(
        self, dim: int, num_heads: int, ffn_expansion_factor: float, bias: bool, LayerNorm_type: str
    ) -> None:  # noqa: N803
        super().__init__()
        self.norm1 = LayerNorm(dim, LayerNorm_type)
        self.attn = Attention(dim, num_heads, bias)
        self.norm2 = LayerNorm(dim, LayerNorm_type)
        self.ffn = FeedForward(dim, ffn_expansion_factor, bias)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


class OverlapPatchEmbed(nn.Module):
    """3x3 conv embedding (key `patch_embed.proj.weight`); the official code fixes bias=False here."""

    def __init__(self, in_c: int = 3, embed_dim: int = 48, bias: bool = False) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_c, embed_dim, 3, padding=1, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x)


class Downsample(nn.Module):
    """(B, C, H, W) -> (B, 2C, H/2, W/2): 3x3 conv to C/2 then PixelUnshuffle(2)."""

    def __init__(self, n_feat: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(n_feat, n_feat // 2, 3, padding=1, bias=False), nn.PixelUnshuffle(2)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


class Upsample(nn.Module):
    """(B, C, H, W) -> (B, C/2, 2H, 2W): 3x3 conv to 2C then PixelShuffle(2)."""

    def __init__(self, n_feat: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(n_feat, n_feat * 2, 3, padding=1, bias=False), nn.PixelShuffle(2))

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


# --------------------------------------------------------------------------------------------- model


class Restormer(Restorer):
    """Restormer: (B, inp_channels, H, W) in [0, 1] -> (B, out_channels, H, W), any H, W.

    Keyword arguments and their defaults are the official constructor's. Output is `output(...) + input`
    (the input residual) unless dual_pixel_task, where the official model adds a skip conv of the level-1
    embedding instead and predicts the image directly.
    """

    def __init__(
        self,
        inp_channels: int = 3,
        out_channels: int = 3,
        dim: int = 48,
        num_blocks: Sequence[int] = (4, 6, 6, 8),
        num_refinement_blocks: int = 4,
        heads: Sequence[int] = (1, 2, 4, 8),
        ffn_expansion_factor: float = 2.66,
        bias: bool = False,
        LayerNorm_type: str = "WithBias",  # noqa: N803 (official keyword)
        dual_pixel_task: bool = False,
    ) -> None:
        super().__init__()
        if len(num_blocks) != 4 or len(heads) != 4:
            raise ValueError(
                f"num_blocks and heads need 4 entries each, got {list(num_blocks)}, {list(heads)}"
            )

        def blocks(d: int, h: int, n: int) -> nn.Sequential:
            return nn.Sequential(
                *[TransformerBlock(d, h, ffn_expansion_factor, bias, LayerNorm_type) for _ in range(n)]
            )

        d1, d2, d3, d4 = dim, dim * 2, dim * 4, dim * 8
        self.patch_embed = OverlapPatchEmbed(inp_channels, dim)
        self.encoder_level1 = blocks(d1, heads[0], num_blocks[0])
        self.down1_2 = Downsample(d1)
        self.encoder_level2 = blocks(d2, heads[1], num_blocks[1])
        self.down2_3 = Downsample(d2)
        self.encoder_level3 = blocks(d3, heads[2], num_blocks[2])
        self.down3_4 = Downsample(d3)
        self.latent = blocks(d4, heads[3], num_blocks[3])
        self.up4_3 = Upsample(d4)
        self.reduce_chan_level3 = nn.Conv2d(d4, d3, 1, bias=bias)
        self.decoder_level3 = blocks(d3, heads[2], num_blocks[2])
        self.up3_2 = Upsample(d3)
        self.reduce_chan_level2 = nn.Conv2d(d3, d2, 1, bias=bias)
        self.decoder_level2 = blocks(d2, heads[1], num_blocks[1])
        self.up2_1 = Upsample(d2)  # level 1 keeps 2*dim channels after the concat (no channel reduction)
        self.decoder_level1 = blocks(d2, heads[0], num_blocks[0])
        self.refinement = blocks(d2, heads[0], num_refinement_blocks)
        self.dual_pixel_task = dual_pixel_task
        if dual_pixel_task:
            self.skip_conv = nn.Conv2d(dim, d2, 1, bias=bias)
        self.output = nn.Conv2d(d2, out_channels, 3, padding=1, bias=bias)
        # Layer-wise LR decay: patch_embed 0, encoder_level{i} (+ the down conv after it) i, latent 4.
        self.num_layers = 5

    def _pad(self, x: Tensor) -> Tensor:
        """Pad bottom/right to a multiple of 8 as the official test scripts do (reflect; replicate if tiny)."""
        h, w = x.shape[-2:]
        ph, pw = (-h) % PAD_MULTIPLE, (-w) % PAD_MULTIPLE
        if ph == 0 and pw == 0:
            return x
        mode = "reflect" if ph < h and pw < w else "replicate"
        return F.pad(x, (0, pw, 0, ph), mode=mode)

    def forward(self, inp_img: Tensor) -> Tensor:
        """inp_img (B, inp_channels, H, W) -> (B, out_channels, H, W) (not clamped)."""
        h, w = inp_img.shape[-2:]
        x0 = self._pad(inp_img)
        emb = self.patch_embed(x0)
        e1 = self.encoder_level1(emb)
        e2 = self.encoder_level2(self.down1_2(e1))
        e3 = self.encoder_level3(self.down2_3(e2))
        lat = self.latent(self.down3_4(e3))
        d3 = self.decoder_level3(self.reduce_chan_level3(torch.cat([self.up4_3(lat), e3], 1)))
        d2 = self.decoder_level2(self.reduce_chan_level2(torch.cat([self.up3_2(d3), e2], 1)))
        d1 = self.refinement(self.decoder_level1(torch.cat([self.up2_1(d2), e1], 1)))
        if self.dual_pixel_task:
            out = self.output(d1 + self.skip_conv(emb))
        else:
            out = self.output(d1) + x0
        return out[:, :, :h, :w]

    # -- what the model answers about itself (models/restorer.py) --------------------------------------

    attention = "channel"  # MDTA: attention across channels (a (C/heads)^2 map), no token attention

    def decoder_features(self) -> list[tuple[str, nn.Module]]:
        """The decoder levels, coarse to fine (DCPT's hook points)."""
        return [(name, getattr(self, name)) for name in ("decoder_level3", "decoder_level2", "decoder_level1")]

    def start_at_identity_(self) -> None:
        """The output conv (the residual on the input) at zero: output = input. The dual-pixel model predicts
        the image from 6 input channels with no input skip: nothing to zero."""
        if not self.dual_pixel_task:
            zero_(self.output)

    # -- finetuning interface -----------------------------------------------------------------------

    _BACKBONE = (
        "patch_embed",
        "encoder_level1",
        "down1_2",
        "encoder_level2",
        "down2_3",
        "encoder_level3",
        "down3_4",
        "latent",
    )
    _LAYER = {"patch_embed": 0, "encoder_level1": 1, "down1_2": 1, "encoder_level2": 2, "down2_3": 2,
              "encoder_level3": 3, "down3_4": 3, "latent": 4}  # fmt: skip

    def parameter_groups(self) -> dict[str, list[tuple[str, nn.Parameter]]]:
        """{"backbone", "decoder", "head"} -> [(qualified name, parameter)], each parameter exactly once.

        backbone: the contracting half up to and including the bottleneck (patch_embed, encoder_level1-3,
        down1_2/2_3/3_4, latent); decoder: up*, reduce_chan*, decoder_level3-1, refinement, skip_conv;
        head: output (the last 3x3 conv).
        """
        groups: dict[str, list[tuple[str, nn.Parameter]]] = {"backbone": [], "decoder": [], "head": []}
        for name, p in self.named_parameters():
            top = name.split(".", 1)[0]
            key = "backbone" if top in self._BACKBONE else "head" if top == "output" else "decoder"
            groups[key].append((name, p))
        return groups

    def layer_ids(self) -> dict[str, int]:
        """Backbone parameter name -> layer index 0..4 (patch_embed 0, level i and its down conv i, latent 4)."""
        return {name: self._LAYER[name.split(".", 1)[0]] for name, _ in self.parameter_groups()["backbone"]}


def build(*, variant: str | None = None, pretrained: str | None = None, **kwargs) -> Restormer:
    """Build Restormer.

    variant: one of VARIANTS; None means "deblur", which equals the official constructor defaults, so with
        no variant the official keywords (inp_channels, out_channels, dim, num_blocks,
        num_refinement_blocks, heads, ffn_expansion_factor, bias, LayerNorm_type, dual_pixel_task) build
        exactly `Restormer(**those)` of the official code. Keywords override the variant's values.
    pretrained: an official or own checkpoint (file, snapshot folder or hub id) loaded strictly; a snapshot
        folder's config.json may give "variant" and constructor keywords for what the call leaves unset.
    """
    cfg = resolve_kwargs(_VARIANT_CFG, DEFAULT_VARIANT, variant, kwargs, _ARCH_KEYS, "restormer", pretrained)
    model = Restormer(**cfg)
    if pretrained is not None:
        load_strict(model, pretrained, source=f"restormer pretrained={pretrained}")
    return model
