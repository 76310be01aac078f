"""Finetuning strategies, defined for every model through `model.parameter_groups()`.

Each is defined on the model's published recipe (config.ModelTrainConfig: optimizer, LR, weight decay
and its exemptions, schedule, warmup, backbone multiplier, layer decay, clipping):
- full:       the recipe as published.
- full_lowlr: exactly the recipe's schedule with every LR divided by 10 (the warmup start and the floor
              are fractions of the LR, so they scale with it): the study's proposal for segmentation
              checkpoints.
- frozen:     the recipe with the pretrained backbone frozen and its norm layers kept in eval mode.
- llrd:       the recipe with layer-wise LR decay (the BEiT finetuning convention): a backbone parameter at
              layer i of L = model.num_layers gets lr * decay**(L - 1 - i); decoder and head get lr. decay: the recipe's own
              published rate (ViT-Adapter's 0.9) where it has one, train.llrd_decay (0.9) otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch.nn as nn

from restorebench.schema import STRATEGIES

LOWLR_FACTOR = 0.1


@dataclass(frozen=True)
class Strategy:
    """What a strategy changes in the recipe."""

    freeze_backbone: bool = False  # backbone parameters not trained, its norm layers kept in eval mode
    lr_scale: float = 1.0  # every LR (and so the warmup start and the floor) times this
    layer_decay: bool = False  # layer-wise LR decay at train.llrd_decay when the recipe has no rate of its own


# The names are schema.STRATEGIES (what params.yaml and the CLI are checked against); this table says what each
# does, and tests/test_vocabularies.py holds its keys equal to those names.
BEHAVIOUR: dict[str, Strategy] = {
    "frozen": Strategy(freeze_backbone=True),
    "full_lowlr": Strategy(lr_scale=LOWLR_FACTOR),
    "full": Strategy(),
    "llrd": Strategy(layer_decay=True),
}


def behaviour(strategy: str) -> Strategy:
    if strategy not in BEHAVIOUR:
        raise ValueError(f"strategy {strategy!r} unknown; choose from {list(STRATEGIES)}")
    return BEHAVIOUR[strategy]


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
    frozen = behaviour(strategy).freeze_backbone
    groups = _groups(model)
    for group, items in groups.items():
        for _, p in items:
            p.requires_grad_(not (frozen and group == "backbone"))


def train_mode(model: nn.Module, strategy: str) -> None:
    """model.train(), with a frozen backbone's norm layers back in eval mode (no running-stat drift)."""
    model.train()
    if behaviour(strategy).freeze_backbone:
        for module in backbone_norms(model):
            module.eval()


def _no_decay(name: str, p: nn.Parameter, rules: Sequence[str], by_type: dict[str, set[int]]) -> bool:
    """Whether the recipe's `no_decay` rules exempt parameter `name` from weight decay: "1d" (every 1-D
    tensor, biases included: BEiT / ViT-Adapter), "norm_layers" / "embedding_layers" (parameters of norm /
    nn.Embedding modules, by type: Mask2Former's WEIGHT_DECAY_NORM / WEIGHT_DECAY_EMBED, both 0.0 in
    mask2former/config.py, applied by type in its train_net.py build_optimizer; the embeddings are the
    decoder's queries and level embeddings), any other string a substring of the name (mmcv's paramwise
    custom_keys with decay_mult 0: mmseg's Swin recipe)."""
    for rule in rules:
        if rule == "1d" and p.ndim <= 1:
            return True
        if rule in by_type:
            if id(p) in by_type[rule]:
                return True
        elif rule != "1d" and rule in name:
            return True
    return False


def layer_scale(model: nn.Module, name: str, group: str, decay: float, layer_ids: dict[str, int]) -> float:
    """Layer-wise LR scale decay ** (L - 1 - id) of a backbone parameter at layer id of L = model.num_layers
    (ids 0 .. L-1, the deepest at scale 1); decoder and head parameters get 1 unless `layer_ids` lists them
    (ViT-Adapter's decoder embeddings sit at layer 0). This is ViT-Adapter's LayerDecayOptimizerConstructor
    (segmentation/mmcv_custom/layer_decay_optimizer_constructor.py: num_layers = depth + 2, scale = rate **
    (num_layers - layer_id - 1), blocks.i at id i + 1, the rest of the decode head at num_layers - 1) and
    SimMIM's Swin numbering (microsoft/SimMIM optimizer.py: num_layers = sum(depths) + 2)."""
    if name in layer_ids:
        return decay ** (model.num_layers - 1 - layer_ids[name])
    if group == "backbone":
        raise ValueError(f"layer_ids() has no entry for backbone parameter {name}")
    return 1.0


def optimizer_groups(
    model: nn.Module,
    strategy: str,
    *,
    lr: float,
    weight_decay: float,
    llrd_decay: float = 0.9,
    layer_decay: float = 0.0,
    backbone_lr_mult: float = 1.0,
    no_decay: Sequence[str] = ("1d",),
) -> list[dict]:
    """AdamW parameter groups of `strategy` on a recipe (lr, weight_decay, its exemptions `no_decay`, the
    backbone multiplier, the recipe's own `layer_decay`).

    full: the recipe. full_lowlr: every LR / 10. frozen: the recipe without the backbone. llrd: the recipe
    with layer-wise decay at `layer_decay` when the recipe has one, else `llrd_decay`. A parameter's LR is
    lr x strategy scale x backbone_lr_mult (backbone only) x layer scale (backbone only).
    """
    prepare(model, strategy)
    groups = _groups(model)
    rule = behaviour(strategy)
    scale = rule.lr_scale
    decay = layer_decay if layer_decay > 0 else (llrd_decay if rule.layer_decay else 0.0)
    layer_ids = model.layer_ids() if decay > 0 else {}
    by_type = {"norm_layers": {id(p) for m in model.modules() if _is_norm(m) for p in m.parameters(recurse=False)},
               "embedding_layers": {id(p) for m in model.modules() if isinstance(m, nn.Embedding)
                                    for p in m.parameters(recurse=False)}}  # fmt: skip
    buckets: dict[tuple[float, float], list[nn.Parameter]] = {}
    names: dict[tuple[float, float], list[str]] = {}
    for group, items in groups.items():
        for name, p in items:
            if not p.requires_grad:
                continue
            factor = scale
            if group == "backbone":
                factor *= backbone_lr_mult
            if decay > 0:
                factor *= layer_scale(model, name, group, decay, layer_ids)
            wd = 0.0 if _no_decay(name, p, no_decay, by_type) else weight_decay
            key = (lr * factor, wd)
            buckets.setdefault(key, []).append(p)
            names.setdefault(key, []).append(name)
    return [
        {"params": ps, "lr": key[0], "initial_lr": key[0], "weight_decay": key[1], "names": names[key]}
        for key, ps in sorted(buckets.items(), key=lambda kv: -kv[0][0])
    ]
