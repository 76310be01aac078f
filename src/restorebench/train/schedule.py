"""Learning-rate schedules as plain functions of the step: the multiplier a LambdaLR applies to every
parameter group's base LR (so a backbone multiplier or a layer-wise decay scales the whole curve, as mmcv
and detectron2 do).

The published schedules, in closed form (t = iteration, T = total iterations, floor = min_lr / lr):
- cosine (NAFNet, TrueCosineAnnealingLR = torch's CosineAnnealingLR with T_max = T):
      floor + (1 - floor) (1 + cos(pi t / T)) / 2
- poly (mmseg `policy='poly'`, mmcv PolyLrUpdaterHook; detectron2 WarmupPolyLR for Mask2Former):
      floor + (1 - floor) (1 - t / T) ** power
- constant_then_cosine (Restormer's CosineAnnealingRestartCyclicLR, periods [C, T - C], eta_mins
  [lr, min_lr], restart_weights [1, 1]): 1 for t < C, then cosine from 1 to floor over T - C.
Warmup (mmcv `warmup='linear'`): for t < warmup the scheduled value is multiplied by
      1 - (1 - t / warmup) (1 - warmup_ratio)
so the first step runs at warmup_ratio x the scheduled LR and the ramp joins the schedule at t = warmup.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from restorebench.schema import SCHEDULES


def _cosine(t: int, total: int, floor: float, power: float, constant: int) -> float:
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * t / max(total, 1)))


def _poly(t: int, total: int, floor: float, power: float, constant: int) -> float:
    return floor + (1.0 - floor) * (1.0 - t / max(total, 1)) ** power


def _constant_then_cosine(t: int, total: int, floor: float, power: float, constant: int) -> float:
    span = max(total - constant, 1)
    return 1.0 if t < constant else floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * (t - constant) / span))


# The names are schema.SCHEDULES (what a recipe's `schedule` is checked against); tests/test_vocabularies.py
# holds this table's keys equal to them. Each maps (t, T, floor, power, C) to the multiplier before warmup.
SHAPES: dict[str, Callable[[int, int, float, float, int], float]] = {
    "cosine": _cosine,
    "poly": _poly,
    "constant_then_cosine": _constant_then_cosine,
}


def lr_factor(
    step: int,
    *,
    total: int,
    schedule: str = "cosine",
    floor: float = 0.0,
    power: float = 1.0,
    constant: int = 0,
    warmup: int = 0,
    warmup_ratio: float = 0.0,
) -> float:
    """Multiplier of the base LR at iteration `step` (0-based) of a `total`-iteration run (module docstring)."""
    if schedule not in SHAPES:
        raise ValueError(f"schedule {schedule!r} unknown; choose from {list(SCHEDULES)}")
    t = min(max(step, 0), total)
    value = SHAPES[schedule](t, total, floor, power, constant)
    if warmup > 0 and t < warmup:
        value *= 1.0 - (1.0 - t / warmup) * (1.0 - warmup_ratio)
    return value


def warmup_cosine(step: int, *, total: int, warmup: int = 0, base_lr: float = 1.0, min_lr: float = 0.0) -> float:
    """Cosine from base_lr to min_lr after a linear warmup from 0 (pretraining's schedule): the multiplier."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    span = max(1, total - warmup)
    t = min(1.0, (step - warmup) / span)
    floor = min_lr / base_lr if base_lr > 0 else 0.0
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * t))
