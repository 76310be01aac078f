"""Learning-rate schedules as plain functions of the step (a LambdaLR multiplies the base LR by them)."""

from __future__ import annotations

import math


def warmup_cosine(step: int, *, total: int, warmup: int = 0, base_lr: float = 1.0, min_lr: float = 0.0) -> float:
    """Multiplier of the base LR at `step`: linear warmup over `warmup` steps, then cosine to min_lr.

    NAFNet: cosine from 1e-3 to 1e-7 over 200k iterations, no warmup (min_lr/base_lr = 1e-4).
    Restormer: its schedule is cosine restarts (92k at 3e-4 then 208k down to 1e-6); `cosine` from base to
    min is the single-cycle form used here unless a profile sets `restarts`.
    """
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    span = max(1, total - warmup)
    t = min(1.0, (step - warmup) / span)
    floor = min_lr / base_lr if base_lr > 0 else 0.0
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * t))
