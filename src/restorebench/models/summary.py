"""Parameter counts (total, per group, and the share a segmentation checkpoint fills) and GMACs at 256x256
for `restorebench models`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

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


def table_lines(names: list[str] | None = None, *, macs: bool = False, profile: str | None = None,
                variants: dict[str, dict[str, str]] | None = None, pretrained: dict[str, str | None] | None = None,
                params: Path = Path("params.yaml")) -> Iterator[str]:  # fmt: skip
    """`restorebench models`' table, a line as soon as each variant is counted: per variant of the registry
    (only `names`' models when given) its parameters (total, per group), what the profile loads into it
    (`pretrained[model]`: that source, or "random init" for None; a variant outside the profile's `variants`
    is "not used") and the share of its parameters that checkpoint fills (only where one is loaded);
    then the legend and the variants' notes. Without a profile (no params file), each variant's possible share."""
    from restorebench.models import VARIANTS

    used = {(m, v) for m, per_task in (variants or {}).items() for v in per_task.values()}
    cols = [("model", 18, "<"), ("variant", 14, "<"), ("params (M)", 11, ">"), ("backbone", 9, ">"),
            ("decoder", 9, ">"), ("head", 8, ">"), ("from ckpt", 9, ">")] + ([("GMACs@256", 10, ">")] if macs else [])  # fmt: skip

    def line(values: list[str], loads: str) -> str:
        cells = "  ".join(f"{v:{align}{width}}" for v, (_, width, align) in zip(values, cols, strict=True))
        return f"{cells}  {loads}"

    yield line([c[0] for c in cols], f"loads (profile {profile})" if profile else "loads")
    notes: list[str] = []
    for name, names_of_variants in VARIANTS.items():
        if names and name not in names:
            continue
        for variant in names_of_variants:
            row = summarize(name, variant, macs=macs)
            if row["note"]:  # a variant that does not start from a segmentation checkpoint says so
                notes.append(f"({len(notes) + 1}) {name} {variant}: {row['note']}")
            share = row["from_checkpoint"]
            if profile is None:
                loads = "-"
            elif (name, variant) not in used:
                loads, share = "- (not used)", None
            else:
                source = (pretrained or {}).get(name)
                loads = source or "random init"
                share = share if source else None  # a random init fills nothing from a checkpoint
            values = [name, variant + (f" ({len(notes)})" if row["note"] else ""), f"{row['params'] / 1e6:.2f}",
                      *(f"{row['groups'][g] / 1e6:.2f}" for g in ("backbone", "decoder", "head")),
                      f"{100 * share:.1f}%" if share is not None else "-"]  # fmt: skip
            if macs:
                values.append(f"{row['gmacs']:.1f}" if row["gmacs"] is not None else "-")
            yield line(values, loads)
    yield ("from ckpt: share of the parameters the checkpoint it loads fills (-: none loaded)" if profile else
           f"from ckpt: share of the parameters its segmentation checkpoint would fill (no {params} here: no profile)")  # fmt: skip
    yield from notes
