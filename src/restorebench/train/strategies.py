"""Finetuning strategies, defined for every model through `model.parameter_groups()`.

- frozen:     backbone parameters frozen and its norm layers kept in eval mode; decoder and head are
              trained at the model's own learning rate.
- full_lowlr: everything trained on the model's original schedule with the learning rate divided by 10
              (the study's proposal for segmentation checkpoints).
- full:       everything trained at the original learning rate.
- llrd:       layer-wise LR decay (the BEiT finetuning convention): a backbone parameter at layer i of L
              gets lr * decay**(L - i); decoder and head get lr.
"""

from __future__ import annotations

import torch.nn as nn

STRATEGY_NAMES = ("frozen", "full_lowlr", "full", "llrd")
LOWLR_FACTOR = 0.1


def _groups(model: nn.Module) -> dict[str, list[tuple[str, nn.Parameter]]]:
    if not hasattr(model, "parameter_groups"):
        raise TypeError(f"{type(model).__name__} has no parameter_groups(); every model in MODELS must define it")
    groups = model.parameter_groups()
    seen: dict[int, str] = {}
    for group, items in groups.items():
        for name, p in items:
            if id(p) in seen:
                raise ValueError(f"parameter {name} is in both {seen[id(p)]!r} and {group!r}")
            seen[id(p)] = group
    missing = [n for n, p in model.named_parameters() if id(p) not in seen]
    if missing:
        raise ValueError(f"parameter_groups() leaves out {len(missing)} parameters, e.g. {missing[:3]}")
    return groups


def _is_norm(module: nn.Module) -> bool:
    return isinstance(module, nn.modules.batchnorm._NormBase | nn.LayerNorm | nn.GroupNorm) or (
        "norm" in type(module).__name__.lower()
    )


def backbone_norms(model: nn.Module) -> list[nn.Module]:
    """Norm layers whose parameters all belong to the backbone group."""
    backbone = {id(p) for _, p in _groups(model)["backbone"]}
    out = []
    for module in model.modules():
        params = list(module.parameters(recurse=False))
        if _is_norm(module) and params and all(id(p) in backbone for p in params):
            out.append(module)
    return out


def prepare(model: nn.Module, strategy: str) -> None:
    """Set requires_grad for `strategy` (frozen: backbone off, everything else on)."""
    if strategy not in STRATEGY_NAMES:
        raise ValueError(f"strategy {strategy!r} unknown; choose from {list(STRATEGY_NAMES)}")
    frozen = strategy == "frozen"
    groups = _groups(model)
    for group, items in groups.items():
        for _, p in items:
            p.requires_grad_(not (frozen and group == "backbone"))


def train_mode(model: nn.Module, strategy: str) -> None:
    """model.train(), with a frozen backbone's norm layers back in eval mode (no running-stat drift)."""
    model.train()
    if strategy == "frozen":
        for module in backbone_norms(model):
            module.eval()


def optimizer_groups(
    model: nn.Module, strategy: str, *, lr: float, weight_decay: float, llrd_decay: float = 0.75
) -> list[dict]:
    """AdamW parameter groups: per-strategy LR, and no weight decay on biases and norm gains (1-D)."""
    prepare(model, strategy)
    groups = _groups(model)
    scale = LOWLR_FACTOR if strategy == "full_lowlr" else 1.0
    layer_ids = model.layer_ids() if strategy == "llrd" else {}
    num_layers = getattr(model, "num_layers", 0)
    buckets: dict[tuple[float, float], list[nn.Parameter]] = {}
    names: dict[tuple[float, float], list[str]] = {}
    for group, items in groups.items():
        for name, p in items:
            if not p.requires_grad:
                continue
            factor = scale
            if strategy == "llrd" and group == "backbone":
                if name not in layer_ids:
                    raise ValueError(f"layer_ids() has no entry for backbone parameter {name}")
                factor = llrd_decay ** (num_layers - layer_ids[name])
            wd = 0.0 if p.ndim <= 1 else weight_decay
            key = (lr * factor, wd)
            buckets.setdefault(key, []).append(p)
            names.setdefault(key, []).append(name)
    return [
        {"params": ps, "lr": key[0], "initial_lr": key[0], "weight_decay": key[1], "names": names[key]}
        for key, ps in sorted(buckets.items(), key=lambda kv: -kv[0][0])
    ]
