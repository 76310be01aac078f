"""NAFNet (Chen et al., "Simple Baselines for Image Restoration", ECCV 2022), with test-time local pooling.

Architecture, module names and parameter names follow megvii-research/NAFNet
`basicsr/models/archs/NAFNet_arch.py` (and `arch_util.LayerNorm2d`, `local_arch.py` for TLC) exactly, so
an official checkpoint (`torch.load(f, weights_only=True)["params"]`) loads with `strict=True` and gives the official outputs.
The code here is written afresh from that structure; nothing is copied.

State-dict keys (width 32, SIDD config): `intro.weight (32,3,3,3)`, `encoders.{i}.{j}.{conv1..conv5,
sca.1, norm1, norm2}.{weight,bias}`, `encoders.{i}.{j}.beta/gamma (1,C,1,1)`, `downs.{i}.weight`,
`middle_blks.{j}.*`, `ups.{i}.0.weight` (1x1 conv before PixelShuffle(2), no bias),
`decoders.{i}.{j}.*`, `ending.{weight,bias}`.

Padding: the input is zero-padded bottom/right to a multiple of 2**len(enc_blk_nums) (16 for the paper
configs) and the output cropped back, as the official `check_image_size` does.

TLC (test-time local converter, Chu et al. 2022, arXiv:2112.04491; the official `NAFNetLocal`): the
global average pool inside each block's simplified channel attention (SCA) is replaced by a local average
pool whose kernel is 1.5x the feature size the model saw in training (train_size 256 -> base_size 384 at
full resolution, 384/2**level at level `level`). Where a feature map is no larger than the kernel it is
exactly the global pool, so the swap changes nothing at training size; on 1280x720 GoPro frames it
does. The GoPro variants switch it on by default (as the official GoPro test configs use NAFNetLocal).
The exact integral-image implementation is used (the official `fast_imp=False`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from restorebench.models.restorer import Restorer, zero_
from restorebench.models.weights import load_strict, resolve_kwargs

log = logging.getLogger(__name__)

# The official constructor keyword arguments (NAFNet.__init__) plus this module's TLC switches.
_ARCH_KEYS = ("img_channel", "width", "middle_blk_num", "enc_blk_nums", "dec_blk_nums", "drop_out_rate")
_EXTRA_KEYS = ("tlc", "train_size")

_SIDD = dict(middle_blk_num=12, enc_blk_nums=(2, 2, 4, 8), dec_blk_nums=(2, 2, 2, 2))
_GOPRO = dict(middle_blk_num=1, enc_blk_nums=(1, 1, 1, 28), dec_blk_nums=(1, 1, 1, 1))

# Paper configs: options/test/SIDD/NAFNet-width{32,64}.yml and options/test/GoPro/NAFNet-width{32,64}.yml
# in the official repo. Published sizes (docs/ARCHITECTURE.md): 29.16M / 115.98M (SIDD), 17.11M / 67.89M (GoPro).
_VARIANT_CFG: dict[str, dict] = {
    "demo": dict(
        img_channel=3, width=8, middle_blk_num=1, enc_blk_nums=(1, 1, 1, 1), dec_blk_nums=(1, 1, 1, 1)
    ),
    "sidd-width32": dict(img_channel=3, width=32, **_SIDD),
    "sidd-width64": dict(img_channel=3, width=64, **_SIDD),
    "gopro-width32": dict(img_channel=3, width=32, tlc=True, **_GOPRO),
    "gopro-width64": dict(img_channel=3, width=64, tlc=True, **_GOPRO),
}
VARIANTS: tuple[str, ...] = tuple(_VARIANT_CFG)
DEFAULT_VARIANT = "sidd-width32"

PUBLISHED_PARAMS: dict[str, float] = {
    "sidd-width32": 29.16e6,
    "sidd-width64": 115.98e6,
    "gopro-width32": 17.11e6,
    "gopro-width64": 67.89e6,
}


# --------------------------------------------------------------------------------------------- layers


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel axis of an NCHW tensor (official `arch_util.LayerNorm2d`, eps 1e-6).

    The official file pairs it with a hand-written backward; autograd of the same forward is the same
    gradient, so plain ops are used here. Statistics are taken in float32 under reduced-precision autocast.
    """

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        # Statistics in float32 even under bf16/fp16 autocast (a no-op for float32 inputs).
        xf = x.float()
        mu = xf.mean(1, keepdim=True)
        var = (xf - mu).pow(2).mean(1, keepdim=True)
        y = ((xf - mu) / (var + self.eps).sqrt()).to(x.dtype)
        return self.weight.view(1, -1, 1, 1) * y + self.bias.view(1, -1, 1, 1)


class SimpleGate(nn.Module):
    """Split channels in two halves and multiply them: (B, 2C, H, W) -> (B, C, H, W)."""

    def forward(self, x: Tensor) -> Tensor:
        a, b = x.chunk(2, dim=1)
        return a * b


class LocalAvgPool2d(nn.Module):
    """TLC local average pooling (official `local_arch.AvgPool2d` with fast_imp=False).

    kernel: (kh, kw) box size in pixels at this feature level. Input (B, C, H, W) -> output of the same size:
    each position gets the mean over the valid kh x kw window (kernel clipped to the image), computed with an
    integral image over the valid windows only; the border is filled by replicate padding, centred as in
    the original. If kh >= H and kw >= W it is exactly `adaptive_avg_pool2d(x, 1)`, shape (B, C, 1, 1).
    """

    def __init__(self, kernel: tuple[int, int]) -> None:
        super().__init__()
        self.kernel = (int(kernel[0]), int(kernel[1]))

    def extra_repr(self) -> str:
        return f"kernel={self.kernel}"

    def forward(self, x: Tensor) -> Tensor:
        _, _, h, w = x.shape
        kh, kw = self.kernel
        if kh >= h and kw >= w:
            return F.adaptive_avg_pool2d(x, 1)
        k1, k2 = min(h, kh), min(w, kw)
        s = F.pad(x.cumsum(dim=-1).cumsum(dim=-2), (1, 0, 1, 0))  # s[i, j] = sum of x[:i, :j]
        out = (s[:, :, k1:, k2:] - s[:, :, :-k1, k2:] - s[:, :, k1:, :-k2] + s[:, :, :-k1, :-k2]) / (k1 * k2)
        oh, ow = out.shape[-2:]
        pad = ((w - ow) // 2, (w - ow + 1) // 2, (h - oh) // 2, (h - oh + 1) // 2)
        return F.pad(out, pad, mode="replicate")


class NAFBlock(nn.Module):
    """The NAFNet block; (B, c, H, W) -> (B, c, H, W). Names as the official NAFBlock (DW_Expand=FFN_Expand=2)."""

    def __init__(self, c: int, dw_expand: int = 2, ffn_expand: int = 2, drop_out_rate: float = 0.0) -> None:
        super().__init__()
        dw = c * dw_expand
        self.conv1 = nn.Conv2d(c, dw, 1)
        self.conv2 = nn.Conv2d(dw, dw, 3, padding=1, groups=dw)
        self.conv3 = nn.Conv2d(dw // 2, c, 1)
        # Simplified channel attention: pool -> 1x1 conv; index 0 is the pool TLC swaps, key "sca.1.*".
        self.sca = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(dw // 2, dw // 2, 1))
        self.sg = SimpleGate()
        ffn = ffn_expand * c
        self.conv4 = nn.Conv2d(c, ffn, 1)
        self.conv5 = nn.Conv2d(ffn // 2, c, 1)
        self.norm1 = LayerNorm2d(c)
        self.norm2 = LayerNorm2d(c)
        self.dropout1 = nn.Dropout(drop_out_rate) if drop_out_rate > 0 else nn.Identity()
        self.dropout2 = nn.Dropout(drop_out_rate) if drop_out_rate > 0 else nn.Identity()
        # Zero-initialised residual scales: an untrained block is the identity.
        self.beta = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, c, 1, 1))

    def forward(self, inp: Tensor) -> Tensor:
        x = self.sg(self.conv2(self.conv1(self.norm1(inp))))
        x = self.conv3(x * self.sca(x))
        y = inp + self.dropout1(x) * self.beta
        x = self.conv5(self.sg(self.conv4(self.norm2(y))))
        return y + self.dropout2(x) * self.gamma


# --------------------------------------------------------------------------------------------- model


class NAFNet(Restorer):
    """NAFNet U-Net: (B, img_channel, H, W) in [0, 1] -> (B, img_channel, H, W), a residual on the input.

    Keyword arguments are the official constructor's (img_channel, width, middle_blk_num, enc_blk_nums,
    dec_blk_nums) plus drop_out_rate (official NAFBlock), `tlc` (switch test-time local pooling on) and
    `train_size` (N, C, H, W) that TLC derives its kernels from (official NAFNetLocal default (1,3,256,256)).
    """

    def __init__(
        self,
        img_channel: int = 3,
        width: int = 16,
        middle_blk_num: int = 1,
        enc_blk_nums: Sequence[int] = (),
        dec_blk_nums: Sequence[int] = (),
        drop_out_rate: float = 0.0,
        *,
        tlc: bool = False,
        train_size: Sequence[int] = (1, 3, 256, 256),
    ) -> None:
        super().__init__()
        if len(enc_blk_nums) != len(dec_blk_nums):
            raise ValueError(
                f"enc_blk_nums {list(enc_blk_nums)} and dec_blk_nums {list(dec_blk_nums)} differ in length"
            )
        self.intro = nn.Conv2d(img_channel, width, 3, padding=1)
        self.ending = nn.Conv2d(width, img_channel, 3, padding=1)
        self.encoders = nn.ModuleList()
        self.decoders = nn.ModuleList()
        self.middle_blks = nn.Sequential()  # placeholder keeps the official registration (state-dict) order
        self.ups = nn.ModuleList()
        self.downs = nn.ModuleList()
        # Each NAFBlock's U-Net level (0 = full resolution), for TLC kernels.
        self._levels: list[tuple[NAFBlock, int]] = []

        def stage(c: int, n: int, level: int) -> nn.Sequential:
            blocks = [NAFBlock(c, drop_out_rate=drop_out_rate) for _ in range(n)]
            self._levels.extend((b, level) for b in blocks)
            return nn.Sequential(*blocks)

        chan = width
        for level, n in enumerate(enc_blk_nums):
            self.encoders.append(stage(chan, n, level))
            self.downs.append(nn.Conv2d(chan, 2 * chan, 2, 2))
            chan *= 2
        self.middle_blks = stage(chan, middle_blk_num, len(enc_blk_nums))
        for i, n in enumerate(dec_blk_nums):
            self.ups.append(nn.Sequential(nn.Conv2d(chan, chan * 2, 1, bias=False), nn.PixelShuffle(2)))
            chan //= 2
            self.decoders.append(stage(chan, n, len(dec_blk_nums) - 1 - i))
        self.padder_size = 2 ** len(self.encoders)
        self.tlc = False
        self.train_size = tuple(int(v) for v in train_size)
        if tlc:
            self.use_tlc(True, train_size=train_size)
        # Layer-wise LR decay: intro 0, encoder stage i (+ the down conv after it) i+1, middle len+1.
        self.num_layers = len(self.encoders) + 2

    # -- TLC ----------------------------------------------------------------------------------------

    def use_tlc(self, enabled: bool = True, *, train_size: Sequence[int] | None = None) -> NAFNet:
        """Swap every SCA pool to local pooling (enabled) or back to global pooling; returns self.

        train_size (N, C, H, W): the training crop; kernels are int(1.5 * H) x int(1.5 * W) at full
        resolution and (H >> level) * base // H at level `level`, the sizes the official `Local_Base.convert`
        arrives at by tracing one forward pass at train_size. Parameters and state-dict keys are unchanged.
        """
        if train_size is not None:
            self.train_size = tuple(int(v) for v in train_size)
        th, tw = self.train_size[-2:]
        base = (int(th * 1.5), int(tw * 1.5))
        for block, level in self._levels:
            if enabled:
                kernel = ((th >> level) * base[0] // th, (tw >> level) * base[1] // tw)
                block.sca[0] = LocalAvgPool2d(kernel)
            else:
                block.sca[0] = nn.AdaptiveAvgPool2d(1)
        self.tlc = bool(enabled)
        return self

    # -- forward ------------------------------------------------------------------------------------

    def check_image_size(self, x: Tensor) -> Tensor:
        """Zero-pad bottom/right to a multiple of `padder_size` (official behaviour)."""
        h, w = x.shape[-2:]
        ph = (self.padder_size - h % self.padder_size) % self.padder_size
        pw = (self.padder_size - w % self.padder_size) % self.padder_size
        return F.pad(x, (0, pw, 0, ph))

    def forward(self, inp: Tensor) -> Tensor:
        """inp (B, C, H, W), any H, W; returns (B, C, H, W) = inp + predicted residual (not clamped)."""
        h, w = inp.shape[-2:]
        inp = self.check_image_size(inp)
        x = self.intro(inp)
        skips = []
        for encoder, down in zip(self.encoders, self.downs, strict=True):
            x = encoder(x)
            skips.append(x)
            x = down(x)
        x = self.middle_blks(x)
        for decoder, up, skip in zip(self.decoders, self.ups, reversed(skips), strict=True):
            x = decoder(up(x) + skip)
        x = self.ending(x) + inp
        return x[:, :, :h, :w]

    # -- what the model answers about itself (models/restorer.py) --------------------------------------

    def decoder_features(self) -> list[tuple[str, nn.Module]]:
        """The decoder stages, coarse to fine (DCPT's hook points)."""
        return [(f"decoders.{i}", stage) for i, stage in enumerate(self.decoders)]

    def start_at_identity_(self) -> None:
        """The last conv (the residual on the input) at zero: output = input."""
        zero_(self.ending)

    # -- finetuning interface -----------------------------------------------------------------------

    def parameter_groups(self) -> dict[str, list[tuple[str, nn.Parameter]]]:
        """{"backbone", "decoder", "head"} -> [(qualified name, parameter)], each parameter exactly once.

        backbone: the contracting half up to and including the bottleneck (intro, encoders, downs,
        middle_blks), i.e. everything computed before the first upsampling; decoder: ups + decoders;
        head: ending (the last 3x3 conv to RGB).
        """
        groups: dict[str, list[tuple[str, nn.Parameter]]] = {"backbone": [], "decoder": [], "head": []}
        for name, p in self.named_parameters():
            top = name.split(".", 1)[0]
            if top in ("intro", "encoders", "downs", "middle_blks"):
                groups["backbone"].append((name, p))
            elif top in ("ups", "decoders"):
                groups["decoder"].append((name, p))
            else:
                groups["head"].append((name, p))
        return groups

    def layer_ids(self) -> dict[str, int]:
        """Backbone parameter name -> layer index: intro 0, encoders.i / downs.i -> i+1, middle -> len+1.

        Indices run 0 .. num_layers-1 (shallow to deep).
        """
        ids: dict[str, int] = {}
        for name, _ in self.parameter_groups()["backbone"]:
            parts = name.split(".")
            if parts[0] == "intro":
                ids[name] = 0
            elif parts[0] in ("encoders", "downs"):
                ids[name] = int(parts[1]) + 1
            else:
                ids[name] = len(self.encoders) + 1
        return ids


def build(*, variant: str | None = None, pretrained: str | None = None, **kwargs) -> NAFNet:
    """Build NAFNet.

    variant: one of VARIANTS; None means the default paper config "sidd-width32". Official constructor
        keywords (img_channel, width, middle_blk_num, enc_blk_nums, dec_blk_nums, drop_out_rate) and
        `tlc`, `train_size` override the variant's values (so passing all five official keywords builds
        exactly `NAFNet(**those)` of the official code). GoPro variants have tlc=True.
    pretrained: an official or own checkpoint (file, snapshot folder or hub id) loaded strictly; a snapshot
        folder's config.json may give "variant" and constructor keywords for what the call leaves unset.
    """
    cfg = resolve_kwargs(
        _VARIANT_CFG, DEFAULT_VARIANT, variant, kwargs, _ARCH_KEYS + _EXTRA_KEYS, "nafnet", pretrained
    )
    model = NAFNet(**cfg)
    if pretrained is not None:
        load_strict(model, pretrained, source=f"nafnet pretrained={pretrained}")
    return model
