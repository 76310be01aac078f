"""Fit a run's global batch to the GPU it runs on, with nothing to edit.

On CUDA, before the first step: restorebench.estimate measures the model's step on the meta device (cached,
as `restorebench plan` does), and estimate.choose_micro_batch picks the fewest micro-batches (gradient
accumulation up to the recipe's global batch) and whether to checkpoint activations; then a probe runs one
forward + backward of the largest micro-batch on the device and, on out-of-memory, backs off to the next
split. The probe leaves no trace: weights, buffers (batch-norm statistics), gradients and RNG states are as
before it. The choice is recorded in the run's train.json and config.json (`memory`).

A CPU run, or a run whose params set train.accumulate (or the recipe's accumulate) above 1, keeps that
setting. Accumulation gives the same update as the whole batch for a model without batch statistics
(tests/test_fit.py); FIDELITY.md says what changes for the BatchNorm models.
"""

from __future__ import annotations

import logging
import os

import torch
import torch.nn as nn

from restorebench.config import Config
from restorebench.estimate import GIB, MemoryPlan, choose_micro_batch, divisors

log = logging.getLogger(__name__)


def _probe(net: nn.Module, patch: int, micro: int, device: torch.device, amp: bool) -> bool:
    """Whether one forward + backward of `micro` (3, patch, patch) images fits on `device`; leaves the
    model, its gradients and the RNG states as they were."""
    buffers = {k: v.clone() for k, v in net.named_buffers()}
    rng = torch.random.get_rng_state(), torch.cuda.get_rng_state(device)
    try:
        x = torch.rand(micro, 3, patch, patch, device=device)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            out = net(x)
        (out.float() - x).abs().mean().backward()
        return True
    except torch.cuda.OutOfMemoryError:
        return False
    finally:
        net.zero_grad(set_to_none=True)
        with torch.no_grad():
            for k, v in net.named_buffers():
                v.copy_(buffers[k])
        torch.random.set_rng_state(rng[0])
        torch.cuda.set_rng_state(rng[1], device)
        torch.cuda.empty_cache()


def fit_to_device(cfg: Config, net: nn.Module, model: str, task: str, strategy: str, *,
                  device: torch.device | None = None) -> MemoryPlan | None:  # fmt: skip
    """The run's MemoryPlan on CUDA (module docstring), with activation checkpointing switched on in `net`
    when chosen; None on a CPU or when the params fix the accumulation (then nothing changes)."""
    from restorebench.costs import BUDGET_SHARE, CostCache, stage_costs

    if device is None and torch.cuda.is_available():  # this rank's GPU (train.distributed.setup picks the same)
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    recipe = cfg.train.recipe(model, task)
    if device is None or device.type != "cuda" or (recipe.accumulate or cfg.train.accumulate) > 1:
        return None
    _, total = torch.cuda.mem_get_info(device)
    budget = total * BUDGET_SHARE
    stages = cfg.train.stages(model, task)
    per_device = cfg.train.gpus
    _, costs = stage_costs(CostCache(), cfg, model, task, strategy, [(s.iters, s.patch, s.batch) for s in stages],
                           budget)  # fmt: skip
    chosen = choose_micro_batch(costs, budget, batch_statistics=costs[0][1].batch_statistics, per_device=per_device)
    net.set_activation_checkpointing(chosen.checkpointing)
    net.to(device).train()
    # the probe: the stage with the most pixels per micro-batch, backing off one split at a time
    local = [max(1, s.batch // per_device) for s in stages]
    splits = [k for k in divisors(min(local)) if all(n % k == 0 for n in local) and k >= chosen.accumulate]
    worst = max(range(len(stages)), key=lambda i: local[i] * stages[i].patch**2)
    for k in splits:
        if _probe(net, stages[worst].patch, local[worst] // k, device, cfg.train.amp):
            if k != chosen.accumulate:
                log.warning("the estimate's %d micro-batches ran out of GPU memory; %d fit", chosen.accumulate, k)
                chosen = MemoryPlan(chosen.batch, chosen.batch // k, k, chosen.checkpointing,
                                    chosen.gpu_bytes, True, source="probe")  # fmt: skip
            break
    else:
        log.warning("no split of the batch fit in the probe; training with %d micro-batches", splits[-1])
        chosen = MemoryPlan(chosen.batch, chosen.batch // splits[-1], splits[-1], chosen.checkpointing,
                            chosen.gpu_bytes, False, source="probe")  # fmt: skip
    log.info("memory: global batch %d as %d x %d%s (estimate %.1f GiB of %.1f)", chosen.batch, chosen.accumulate,
             chosen.micro_batch, ", activation checkpointing" if chosen.checkpointing else "",
             chosen.gpu_bytes / GIB, total / GIB)  # fmt: skip
    return chosen
