"""The shared restoration head and the plumbing around it for the segmentation-derived models.

A segmentation decoder delivers features at 1/4 of the input resolution (UperNet's fused FPN output,
Mask2Former's `mask_features`). `RestorationHead` turns them into a full-resolution RGB residual:

    feats (B, C, H/4, W/4) --conv3x3, PixelShuffle(2), GELU, conv3x3, PixelShuffle(2), GELU--> (B, c2, H, W)
    image (B, 3, H, W)     --conv3x3, GELU, conv3x3, GELU (shallow full-resolution branch)--> (B, s, H, W)
    concat -> conv3x3, GELU -> conv3x3 (zero-initialised) -> residual (B, 3, H, W)

The shallow branch sees the raw pixels, so detail that the stride-4 patch stem throws away can still reach
the output. The last conv starts at zero (weight and bias), so an untrained model returns its input exactly.

`SegmentationRestorer` is the common forward for swin_upernet, swin_mask2former and vit_adapter:
normalise -> pad to the backbone's multiple -> features at 1/4 -> head -> input + residual -> crop. It is a
`Restorer` (models/restorer.py) whose defaults fit any backbone + decoder + head model: DCPT hooks the 1/4
features the head reads (a subclass with a multi-scale decoder lists its scales instead), the identity start
zeroes the head's last conv.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from restorebench.models.restorer import Restorer, zero_

# ImageNet statistics on the [0, 1] scale. The HF image processors of openmmlab/upernet-swin-* and
# facebook/mask2former-swin-*-ade-semantic normalise with these (0.485/0.456/0.406, 0.229/0.224/0.225;
# mmseg writes them as 123.675/116.28/103.53 and 58.395/57.12/57.375 on the 0-255 scale), and timm's
# pretrained_cfg for every beitv2_base_patch16_224.* tag uses IMAGENET_DEFAULT_MEAN / IMAGENET_DEFAULT_STD
# (timm/models/beit.py default_cfgs). BEiT v1 tags use (0.5, 0.5, 0.5) instead: pass mean/std explicitly.
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


class Normalize(nn.Module):
    """(x - mean) / std per channel; x in [0, 1]. Buffers are not saved in the state dict (constants)."""

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)


def pad_to_multiple(x: Tensor, multiple: int, mode: str = "reflect") -> Tensor:
    """Pad (B, C, H, W) at the bottom/right so H and W are multiples of `multiple`.

    Reflect padding (no artificial edge for the restorer to "fix"); where the pad is not smaller than the
    side (tiny inputs), replicate padding instead, which has no such limit. Undo with `x[..., :H, :W]`.
    """
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return x
    if mode == "reflect" and (ph >= h or pw >= w):
        mode = "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)


def _conv3x3(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, padding=1)


class RestorationHead(nn.Module):
    """1/4-resolution decoder features + the input image -> full-resolution residual.

    in_channels: channels of the decoder features (B, in_channels, H/4, W/4).
    out_channels: channels of the residual (3 for RGB).
    channels: (c1, c2) widths after the first and second PixelShuffle(2).
    shallow_channels: width of the full-resolution branch on the raw image.
    forward(feats, image): image (B, image_channels, H, W), in [0, 1] (already padded, H and W divisible
        by 4 with H/4, W/4 equal to feats' size) -> residual (B, out_channels, H, W), zero at init.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int = 3,
        *,
        channels: tuple[int, int] = (64, 32),
        shallow_channels: int = 32,
        image_channels: int = 3,
    ) -> None:
        super().__init__()
        c1, c2 = channels
        self.upsample = nn.Sequential(
            _conv3x3(in_channels, 4 * c1),
            nn.PixelShuffle(2),
            nn.GELU(),
            _conv3x3(c1, 4 * c2),
            nn.PixelShuffle(2),
            nn.GELU(),
        )
        self.shallow = nn.Sequential(
            _conv3x3(image_channels, shallow_channels),
            nn.GELU(),
            _conv3x3(shallow_channels, shallow_channels),
            nn.GELU(),
        )
        self.fuse = nn.Sequential(_conv3x3(c2 + shallow_channels, c2), nn.GELU())
        self.out = _conv3x3(c2, out_channels)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, feats: Tensor, image: Tensor) -> Tensor:
        if feats.shape[-2] * 4 != image.shape[-2] or feats.shape[-1] * 4 != image.shape[-1]:
            raise ValueError(
                f"RestorationHead: features {tuple(feats.shape[-2:])} are not 1/4 of the image "
                f"{tuple(image.shape[-2:])}"
            )
        up = self.upsample(feats)
        return self.out(self.fuse(torch.cat([up, self.shallow(image)], dim=1)))


ParamList = list[tuple[str, nn.Parameter]]


class SegmentationRestorer(Restorer):
    """Shared forward and parameter bookkeeping for backbone + decoder + RestorationHead models.

    Subclasses call `super().__init__()` first, set `self.normalize`, `self.backbone` (exactly the pretrained
    part), the decoder modules (any other attribute), `self.head` (a RestorationHead), `self.pad_multiple`,
    and implement `decode(x) -> (B, C, H/4, W/4)` for a normalised, padded x, and
    `backbone_layer_id(name) -> int`.

    forward: (B, 3, H, W) in [0, 1], any H, W -> (B, 3, H, W) = input + residual (not clamped).
    """

    backbone: nn.Module
    head: RestorationHead
    normalize: Normalize
    pad_multiple: int = 32
    attention = "token"  # Swin and BEiT backbones (transformers' sdpa and timm's fused_attn)

    def __init__(self) -> None:
        super().__init__()
        # a hook point (no parameters, no state-dict keys): its output is what decode() hands the head
        self.decoded = nn.Identity()

    def decode(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def backbone_layer_id(self, name: str) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"{type(self).__name__} expects (B, 3, H, W) images, got {tuple(x.shape)}")
        h, w = x.shape[-2:]
        xp = pad_to_multiple(x, self.pad_multiple)
        feats = self.decoded(self.decode(self.normalize(xp)))
        out = xp + self.head(feats, xp)
        return out[..., :h, :w]

    def decoder_features(self) -> list[tuple[str, nn.Module]]:
        """Default: the decoder's output, the (B, C, H/4, W/4) features the head reads (one scale). A
        subclass whose decoder has several scales lists them, coarse to fine."""
        return [("decoded", self.decoded)]

    def checkpoint_blocks(self) -> list[nn.Module]:
        """The backbone's transformer blocks: the items of every ModuleList named `blocks` in it (timm's
        BEiT `blocks`, transformers' Swin stages' `blocks`), where the activations of these models are."""
        return [block for name, mod in self.backbone.named_modules()
                if name.split(".")[-1] == "blocks" and isinstance(mod, nn.ModuleList) for block in mod]

    def start_at_identity_(self) -> None:
        """The head's last conv at zero (it starts there anyway; this restores it): output = input."""
        zero_(self.head.out)

    def parameter_groups(self) -> dict[str, ParamList]:
        """{"backbone": pretrained-checkpoint parameters, "decoder": new decoder/adapter ones, "head": head}.

        Every parameter appears exactly once; names are qualified from this module.
        """
        groups: dict[str, ParamList] = {"backbone": [], "decoder": [], "head": []}
        for name, p in self.named_parameters():
            if name.startswith("backbone."):
                groups["backbone"].append((name, p))
            elif name.startswith("head."):
                groups["head"].append((name, p))
            else:
                groups["decoder"].append((name, p))
        return groups

    def layer_ids(self) -> dict[str, int]:
        """Backbone parameter name (qualified, "backbone....") -> layer index in [0, num_layers).

        For layer-wise LR decay (train/strategies.py layer_scale): scale = decay ** (num_layers - 1 - id);
        decoder and head parameters that the map leaves out are at scale 1.
        """
        return {n: self.backbone_layer_id(n[len("backbone.") :]) for n, _ in self.named_parameters()
                if n.startswith("backbone.")}

    @property
    def num_layers(self) -> int:
        return max(self.layer_ids().values()) + 1


# ------------------------------------------------------------------------------------- Swin layer ids

_SWIN_BLOCK = re.compile(r"(?:^|\.)layers\.(\d+)\.blocks\.(\d+)\.")
_SWIN_DOWNSAMPLE = re.compile(r"(?:^|\.)layers\.(\d+)\.downsample\.")


def swin_layer_id(name: str, depths: Sequence[int]) -> int:
    """Layer index of a HF SwinBackbone parameter, as SimMIM's `get_swin_layer` counts them
    (microsoft/SimMIM optimizer.py at 0e717460, get_swin_layer): patch embedding 0; block b of stage s
    1 + sum(depths[:s]) + b; a stage's patch merging with that stage's last block; anything else (the
    per-stage output norms `hidden_states_norms`) sum(depths) + 1.
    """
    if "embeddings." in name:
        return 0
    m = _SWIN_BLOCK.search(name)
    if m:
        s, b = int(m.group(1)), int(m.group(2))
        return 1 + sum(depths[:s]) + b
    m = _SWIN_DOWNSAMPLE.search(name)
    if m:
        return sum(depths[: int(m.group(1)) + 1])
    return sum(depths) + 1
