"""What IPT and DCPT pretraining share: the held-out split of the degrade store, step-keyed batches, a
wrapper that trains a model plus extra modules through the finetuning loop, and the run's outputs.

runs/pretrain/{method}/{model}/ receives model.safetensors (the pretrained model alone, EMA when on),
pretrain.json (what was run, how fast, the final metrics), history.json and dvclive/ (curves);
checkpoints/ sits beside them, as in finetuning, so a restarted job resumes. The final metrics are also
written to `metrics_path` (metrics/pretrain/..., a DVC metric).

Imports flow one way: ipt.py and dcpt.py import this module, never the reverse, and the CLI picks the
method's module; so a DCPT stage's code closure (restorebench.codepath) holds no IPT file.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset

from restorebench import io
from restorebench.config import Config, PretrainRunConfig
from restorebench.degrade.rng import derive_rng
from restorebench.train.loop import LoopConfig, Objective
from restorebench.train.session import guarded, train_and_save


def store_path(cfg: Config) -> Path:
    return Path(cfg.data.root) / "store" / "imagenet" / "train"


class StepBatch(Dataset):
    """Item k is the whole batch of training step k, built by `make(step)` from (seed, step) alone, so a
    resumed run sees the batches an uninterrupted one would, for any number of loader workers."""

    def __init__(self, make: Callable[[int], tuple]) -> None:
        self.make = make

    def __len__(self) -> int:  # steps are unbounded; the loop stops at its own step count
        return 2**62

    def __getitem__(self, step: int) -> tuple:
        return self.make(step)


def step_loader(make: Callable[[int], tuple], start: int, workers: int):
    """An iterator over the batches of steps start, start + 1, ... (prefetched by `workers` processes)."""
    loader = DataLoader(
        StepBatch(make),
        batch_size=None,
        sampler=itertools.count(start),
        num_workers=workers,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=workers > 0,
    )
    return iter(loader)


def batch_rng(seed: int, method: str, step: int) -> np.random.Generator:
    return derive_rng(seed, "pretrain", method, step)


class Pretrainer(nn.Module):
    """`model` plus the modules only pretraining needs (`extra`: e.g. DCPT's classifier).

    parameter_groups() keeps the model's own groups (names prefixed "model.") and puts the extra modules in
    "head", so the loop's optimizer, checkpoints and EMA cover both.
    """

    def __init__(self, model: nn.Module, extra: nn.Module | None = None) -> None:
        super().__init__()
        self.model = model
        self.extra = extra

    def parameter_groups(self) -> dict[str, list[tuple[str, nn.Parameter]]]:
        groups = {k: [(f"model.{n}", p) for n, p in v] for k, v in self.model.parameter_groups().items()}
        if self.extra is not None:
            groups.setdefault("head", []).extend((f"extra.{n}", p) for n, p in self.extra.named_parameters())
        return groups


def loop_config(cfg: Config, run: PretrainRunConfig) -> LoopConfig:
    t = cfg.train
    return LoopConfig(
        steps=run.steps,
        lr=run.lr,
        strategy="full",
        min_lr=run.min_lr,
        warmup=run.warmup,
        weight_decay=run.weight_decay,
        betas=(float(run.betas[0]), float(run.betas[1])),
        grad_clip=run.grad_clip,
        ema_decay=t.ema_decay,
        checkpoint_every=run.checkpoint_every,
        log_every=run.log_every,
        validate_every=run.validate_every,
        amp=t.amp,
        channels_last=t.channels_last,
        compile=t.compile,
        compile_mode=t.compile_mode,
        sync_every=t.sync_every,
        find_unused=True,  # IPT trains one task's head and tail per step
    )


def run_pretraining(
    cfg: Config,
    run: PretrainRunConfig,
    trainee: Pretrainer,
    *,
    method: str,
    model: str,
    make_batch: Callable[[int], tuple],
    objective: Objective,
    validate: Callable[[nn.Module], dict[str, float]],
    run_dir: Path,
    metrics_path: Path,
    params: dict,
    before: dict[str, float] | None = None,
    progress: bool = True,
) -> dict:
    """Train `trainee` with `objective` through the finetuning loop; write the run's outputs."""
    started = time.time()

    def batches(start: int):
        return step_loader(make_batch, start, run.workers)

    done = train_and_save(
        trainee,
        batches,
        loop_config(cfg, run),
        run_dir=run_dir,
        params={"method": method, "model": model, **params, "seed": cfg.seed, "batch": run.batch},
        validate=validate,
        objective=objective,
        keep=lambda final: final.model,  # the pretrained model alone (DCPT's classifier stays behind)
        progress=progress,
    )
    if done is None:  # not rank 0 of a DDP run
        return {}
    result, device = done
    final_metrics = {k: v for k, v in (result.history[-1] if result.history else {}).items() if k != "step"}
    summary = {
        "method": method,
        "model": model,
        **params,
        "steps": result.steps,
        "resumed_from": result.resumed_from,
        "train_seconds": result.seconds,
        "train_images_per_s": result.images_per_s,
        "last_loss": result.last_loss,
        "device": device,
        "wall_seconds": time.time() - started,
        "params_hash": cfg.digest(),
        "before": before or {},
        "after": final_metrics,
    }
    io.write_json(run_dir / "pretrain.json", summary)
    validation = {k.replace("/", "_"): v for k, v in final_metrics.items() if k.startswith("val")}
    io.write_json(metrics_path, {**(before or {}), **validation})
    return summary


def stack(items: Sequence[tuple]) -> tuple[torch.Tensor, ...]:
    """Collate same-shape (tensor, tensor, ...) items into batched tensors."""
    return tuple(torch.stack([item[k] for item in items]) for k in range(len(items[0])))


def guarded_stage(cfg: Config, run: Callable[[], dict], *, method: str, model: str, task: str | None, batch: int,
                  patch: int) -> dict:
    """run() (one method's `pretrain` stage), with the known ways it ends early (out of memory: with this
    run's `batch` and `patch`, the input side in pixels) raised as one-line RestorebenchErrors that name the
    profile's batch key. Returns run()'s summary ({} on DDP ranks other than 0)."""
    what = f"pretrain {method}/{model}" + (f" ({task})" if task else "")
    key = f"profiles.{cfg.profile}.pretrain.{method}"
    return guarded(run, what=what, batch=batch, patch=str(patch),
                   hint=f"lower {key}.batch (pretraining has no gradient accumulation)")  # fmt: skip
