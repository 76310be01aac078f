"""The model zoo: an explicit registry, one file per architecture.

Every model maps (B, 3, H, W) in [0, 1] to (B, 3, H, W) for any H, W (it pads inside and crops back),
and offers `parameter_groups()` -> {"backbone": [...], "decoder": [...], "head": [...]} (lists of
(qualified name, parameter)) plus `layer_ids()` -> {backbone parameter name: layer index} and
`num_layers` for layer-wise learning-rate decay.

Builders take `variant=` (a named size from the module's VARIANTS, "demo" is the tiny CPU one),
`pretrained=` (hub id, hub-snapshot folder, or .safetensors/.pth file) and the architecture's own keyword
arguments, which override the variant's.
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn as nn

from restorebench.models import ipt, nafnet, restormer, swin_mask2former, swin_upernet, vit_adapter

MODELS: dict[str, Callable[..., nn.Module]] = {
    "swin_upernet": swin_upernet.build,
    "swin_mask2former": swin_mask2former.build,
    "vit_adapter": vit_adapter.build,
    "nafnet": nafnet.build,
    "restormer": restormer.build,
    "ipt": ipt.build,
}

VARIANTS: dict[str, tuple[str, ...]] = {
    "swin_upernet": swin_upernet.VARIANTS,
    "swin_mask2former": swin_mask2former.VARIANTS,
    "vit_adapter": vit_adapter.VARIANTS,
    "nafnet": nafnet.VARIANTS,
    "restormer": restormer.VARIANTS,
    "ipt": ipt.VARIANTS,
}


def build_model(name: str, *, variant: str | None = None, pretrained: str | None = None, **kwargs) -> nn.Module:
    """Build model `name` (see MODELS) at `variant`, optionally loading `pretrained` weights."""
    if name not in MODELS:
        import difflib

        close = difflib.get_close_matches(name, list(MODELS), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown model {name!r}; choose from {sorted(MODELS)}{hint}")
    if variant is not None and variant not in VARIANTS[name]:
        raise ValueError(f"model {name!r}: unknown variant {variant!r}; choose from {list(VARIANTS[name])}")
    return MODELS[name](variant=variant, pretrained=pretrained, **kwargs)
