"""Measured step costs of a grid's training runs, cached on disk: shared by `restorebench plan` and by a
training run fitting its batch to its GPU (restorebench.train.fit), so both see the same figures.

A cost is restorebench.estimate.measure_step of the cell's architecture (train.cells.cell_model) at one
crop, for the strategy's trainable parameters, with or without mixed precision and activation
checkpointing. The cache is keyed by those and by a digest of the model and estimator sources and the torch
version, so a change to either measures again.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
from pathlib import Path

from restorebench import io
from restorebench.config import Config
from restorebench.estimate import StepCost, measure_step

BUDGET_SHARE = 0.92  # of the GPU's memory a step may fill (the CUDA context and allocator fragmentation)


def cache_path() -> Path:
    """Where measured step costs are kept: $RESTOREBENCH_CACHE, else ~/.cache/restorebench."""
    root = os.environ.get("RESTOREBENCH_CACHE") or Path.home() / ".cache" / "restorebench"
    return Path(root) / "step_costs.json"


@functools.cache
def _code_digest() -> str:
    """The model and estimator sources: a change to either measures again."""
    src = Path(__file__).parent
    h = hashlib.sha256()
    for path in sorted([*src.glob("models/*.py"), src / "estimate.py"]):
        h.update(path.read_bytes())
    import torch

    h.update(torch.__version__.encode())
    return h.hexdigest()[:16]


def _strategy(name: str, model) -> None:
    from restorebench.train import strategies

    strategies.prepare(model, name)
    strategies.train_mode(model, name)


class CostCache:
    """Step costs by (architecture, crop, strategy, precision, checkpointing), on disk between plans."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or cache_path()
        try:
            self.data = json.loads(self.path.read_text()) if self.path.is_file() else {}
        except (OSError, json.JSONDecodeError):
            self.data = {}

    def get(self, cfg: Config, model: str, task: str, patch: int, *, frozen: bool, amp: bool,
            checkpointing: bool) -> StepCost:  # fmt: skip
        from restorebench.train.cells import cell_kwargs, cell_model

        key = json.dumps([_code_digest(), model, cfg.variant(model, task), cell_kwargs(cfg, model, task), patch,
                          frozen, amp, checkpointing], sort_keys=True, default=str)  # fmt: skip
        if key not in self.data:
            cost = measure_step(functools.partial(cell_model, cfg, model, task), patch, amp=amp,
                                trainable=functools.partial(_strategy, "frozen" if frozen else "full"),
                                checkpointing=checkpointing)  # fmt: skip
            self.data[key] = cost.to_dict()
            io.write_json(self.path, self.data)
        return StepCost(**self.data[key])


def _attention(cfg: Config, model: str, task: str) -> str | None:
    """The model's kind of attention (models/restorer.py), from a build on the meta device."""
    import torch

    from restorebench.train.cells import cell_model

    with torch.device("meta"):
        return getattr(cell_model(cfg, model, task), "attention", None)


def interpolate(a: StepCost, b: StepCost, patch_a: int, patch_b: int, patch: int) -> StepCost:
    """The cost at `patch` on the line through the costs at patch_a and patch_b, in pixels per image: exact
    for a model whose saved tensors and FLOPs are a constant plus a term linear in the pixel count
    (convolutions, channel attention: Restormer; tests/test_plan.py holds it against a measurement)."""
    t = (patch**2 - patch_a**2) / (patch_b**2 - patch_a**2)

    def mix(x: float, y: float) -> float:
        return x + t * (y - x)

    return dataclasses.replace(a, per_image_bytes=int(mix(a.per_image_bytes, b.per_image_bytes)),
                               transient_bytes=int(mix(a.transient_bytes, b.transient_bytes)),
                               flops_per_image=mix(a.flops_per_image, b.flops_per_image))  # fmt: skip


def stage_costs(cache: CostCache, cfg: Config, model: str, task: str, strategy: str,
                stages: list[tuple[int, int, int]], budget: float):  # fmt: skip
    """(cost(patch, checkpointing), [(global batch, cost, cost with checkpointing or None)] per stage) of a
    run's (iters, patch, batch) stages; checkpointing is measured only where a stage's whole per-device
    batch does not fit without it. A progressive recipe of a model without token attention (Restormer's six
    crops) is measured at its smallest and largest crop and interpolated between them (`interpolate`)."""
    frozen, per_device = strategy == "frozen", cfg.train.gpus
    patches = sorted({patch for _, patch, _ in stages})
    linear = len(patches) > 2 and _attention(cfg, model, task) != "token"

    @functools.cache
    def cost(patch: int, ckpt: bool) -> StepCost:
        if linear and patch not in (patches[0], patches[-1]):
            return interpolate(cost(patches[0], ckpt), cost(patches[-1], ckpt), patches[0], patches[-1], patch)
        return cache.get(cfg, model, task, patch, frozen=frozen, amp=cfg.train.amp, checkpointing=ckpt)

    plain = [cost(patch, False) for _, patch, _ in stages]
    need = any(c.gpu_bytes(b // per_device) > budget for c, (_, _, b) in zip(plain, stages, strict=True))
    return cost, [(b, c, cost(patch, True) if need else None) for c, (_, patch, b) in zip(plain, stages, strict=True)]
