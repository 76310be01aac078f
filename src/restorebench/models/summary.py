"""Parameter counts (total, per group, and the share a segmentation checkpoint fills) and GMACs at 256x256
for `restorebench models`."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from restorebench.models import build_model


def count_macs(model: torch.nn.Module, size: int = 256, **forward_kw) -> float:
    """Multiply-accumulates of one forward pass on a 1x3xSxS input (FLOPs / 2, as papers report GMACs)."""
    device = next(model.parameters()).device
    x = torch.rand(1, 3, size, size, device=device)
    counter = FlopCounterMode(display=False)
    flags = [p.requires_grad for p in model.parameters()]
    model.requires_grad_(False)  # the counter's module tracker trips over grad hooks under no_grad
    try:
        with counter, torch.no_grad():
            model(x, **forward_kw)
    finally:
        for p, flag in zip(model.parameters(), flags, strict=True):
            p.requires_grad_(flag)
    return counter.get_total_flops() / 2


def checkpoint_share(model: torch.nn.Module) -> float | None:
    """The share of `model`'s parameters (by count) that its published segmentation checkpoint fills, from
    the model's own mapping (`checkpoint_parameters()`); None for a model that has none (the restoration
    baselines). Works on the meta device: no weights are read."""
    if not hasattr(model, "checkpoint_parameters"):
        return None
    own = dict(model.named_parameters())
    total = sum(p.numel() for p in own.values())
    return sum(own[n].numel() for n in model.checkpoint_parameters()) / total if total else 0.0


def summarize(name: str, variant: str, *, macs: bool = True, size: int = 256) -> dict:
    """{'params', 'groups': {backbone, decoder, head}, 'from_checkpoint' (share or None), 'note', 'gmacs'}
    for one model variant."""
    with torch.device("meta"):
        model = build_model(name, variant=variant)
    groups = {g: sum(p.numel() for _, p in items) for g, items in model.parameter_groups().items()}
    row = {"params": sum(p.numel() for p in model.parameters()), "groups": groups,
           "from_checkpoint": checkpoint_share(model), "note": getattr(model, "variant_note", ""), "gmacs": None}
    if macs:
        try:
            row["gmacs"] = count_macs(model.eval(), size) / 1e9
        except (NotImplementedError, RuntimeError):  # an op without a meta kernel: count on the CPU
            model = build_model(name, variant=variant).eval()
            row["gmacs"] = count_macs(model, size) / 1e9
    return row
