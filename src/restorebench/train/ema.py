"""Exponential moving average of a model's weights (evaluated and saved as the final model)."""

from __future__ import annotations

import copy

import torch
import torch.nn as nn


class EMA:
    """shadow = decay * shadow + (1 - decay) * weights, for parameters and floating buffers."""

    def __init__(self, model: nn.Module, decay: float = 0.999) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"train.ema: decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.shadow = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, foreach: bool | None = None) -> None:
        """One step. foreach: the same arithmetic in a few multi-tensor kernels instead of two launches per
        tensor; None = on CUDA only (as torch.optim's default: on a CPU the loop is as fast or faster,
        benchmarks/ema.py)."""
        current = model.state_dict()
        shadow, source = [], []
        for name, value in self.shadow.state_dict().items():
            if value.dtype.is_floating_point:
                shadow.append(value)
                source.append(current[name].detach())
            else:
                value.copy_(current[name])
        if foreach is None:
            foreach = bool(shadow) and shadow[0].is_cuda
        if foreach:
            torch._foreach_mul_(shadow, self.decay)
            torch._foreach_add_(shadow, source, alpha=1.0 - self.decay)
        else:
            for value, src in zip(shadow, source, strict=True):
                value.mul_(self.decay).add_(src, alpha=1.0 - self.decay)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "shadow": self.shadow.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.decay = state["decay"]
        self.shadow.load_state_dict(state["shadow"])
