"""A tiny restorer with the model protocol (parameter_groups, layer_ids), and step-seeded batches."""

from __future__ import annotations

import torch
import torch.nn as nn


class TinyRestorer(nn.Module):
    num_layers = 2

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.backbone = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1),
            nn.GroupNorm(2, width),
            nn.GELU(),
            nn.Conv2d(width, width, 3, padding=1),
        )
        self.decoder = nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.GELU())
        self.head = nn.Conv2d(width, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.head(self.decoder(self.backbone(x)))

    def parameter_groups(self):
        return {
            g: [(f"{g}.{n}", p) for n, p in getattr(self, g).named_parameters()]
            for g in ("backbone", "decoder", "head")
        }

    def layer_ids(self):
        return {
            f"backbone.{n}": (0 if n.startswith("0.") or n.startswith("1.") else 1)
            for n, _ in self.backbone.named_parameters()
        }


def make_batches(seed: int = 0, batch: int = 4, size: int = 16, sigma: float = 0.1):
    """batches(start) -> iterator of (noisy, clean) for steps start, start+1, ...; each from (seed, step)."""

    def batches(start: int):
        step = start
        while True:
            g = torch.Generator().manual_seed(seed * 1_000_003 + step)
            clean = torch.rand(batch, 3, size, size, generator=g)
            clean = torch.nn.functional.avg_pool2d(clean, 3, 1, 1)  # some structure to learn
            noisy = clean + sigma * torch.randn(batch, 3, size, size, generator=g)
            yield noisy, clean
            step += 1

    return batches
