"""One grid cell: finetune MODEL with STRATEGY on TASK's packed training store.

runs/finetune/{task}/{model}/{strategy}/ receives model.safetensors (the final weights, EMA when on),
train.json (what was run, how fast, from which init) and dvclive/ (curves); checkpoints/ sits beside
them, undeclared to either orchestrator, so a restarted job resumes instead of starting over.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from restorebench import io
from restorebench.config import TASK_DATASET, Config
from restorebench.data.datasets import Items, PairedPatchDataset, step_loader
from restorebench.data.store import holdout_split, open_store
from restorebench.metrics import psnr_torch
from restorebench.models import FINETUNE_KWARGS, build_model
from restorebench.train.loop import LoopConfig, to_device
from restorebench.train.session import train_and_save


@torch.no_grad()
def held_out_psnr(model: torch.nn.Module, held: Items, batch: int = 16) -> float:
    """Mean PSNR (dB, RGB, output clamped to [0, 1]) of `model` on the held-out crops (fixed, unaugmented)."""
    device = next(model.parameters()).device
    was = model.training
    model.eval()
    scores = []
    for start in range(0, len(held), batch):
        pairs = [held[(0, k)] for k in range(start, min(start + batch, len(held)))]
        lq = to_device(torch.stack([p[0] for p in pairs]), device)
        gt = to_device(torch.stack([p[1] for p in pairs]), device)
        scores.append(psnr_torch(model(lq).float().clamp(0, 1), gt, data_range=1.0))
    model.train(was)
    return float(torch.cat(scores).mean())


def loop_config(cfg: Config, model: str, strategy: str, steps: int | None = None) -> LoopConfig:
    t, r = cfg.train, cfg.train.recipe(model)
    return LoopConfig(
        steps=steps or t.steps,
        lr=r.lr,
        strategy=strategy,
        min_lr=r.min_lr,
        warmup=r.warmup,
        weight_decay=r.weight_decay,
        betas=(float(r.betas[0]), float(r.betas[1])),
        loss=r.loss,
        grad_clip=t.grad_clip,
        ema_decay=t.ema_decay,
        accumulate=t.accumulate,
        llrd_decay=t.llrd_decay,
        checkpoint_every=t.checkpoint_every,
        log_every=t.log_every,
        validate_every=t.validate_every,
        amp=t.amp,
        channels_last=t.channels_last,
        compile=t.compile,
        compile_mode=t.compile_mode,
        sync_every=t.sync_every,
    )


def pretrain_dir(method: str, model: str, task: str | None = None) -> Path:
    """Where a pretraining run writes: runs/pretrain/ipt/ipt/ (one multi-task run) and
    runs/pretrain/dcpt/{task}/{model}/ (DCPT pretrains the exact architecture each task finetunes)."""
    if method == "ipt":
        return Path("runs/pretrain/ipt/ipt")
    if method == "dcpt":
        if task is None:
            raise ValueError("DCPT pretraining is per task: pass the task whose architecture it pretrains")
        return Path("runs/pretrain/dcpt") / task / model
    raise ValueError(f"pretrain method {method!r} unknown; choose from ['ipt', 'dcpt']")


def cell_kwargs(cfg: Config, model: str, task: str) -> dict:
    """The architecture keywords a cell of TASK adds to the profile's variant: the model's own finetuning
    keywords (its module's `finetune_kwargs`; IPT: one same-size task named after the pretrained head it
    starts from, pretrain.ipt.heads). Recorded in the run's config.json, so the run rebuilds from it."""
    return FINETUNE_KWARGS[model](task, head=cfg.pretrain.ipt.heads.get(task))


def cell_model(cfg: Config, model: str, task: str, pretrained: str | None = None) -> torch.nn.Module:
    """The architecture a cell of TASK trains: the profile's variant with `cell_kwargs`."""
    return build_model(model, variant=cfg.variant(model, task), pretrained=pretrained,
                       **cell_kwargs(cfg, model, task))


def init_model(cfg: Config, model: str, task: str) -> tuple[torch.nn.Module, str]:
    """The model a cell (or a DCPT run) starts from, before any restoration pretraining: the profile's
    checkpoint when `pretrained` names one, else a seeded random init that starts at the identity where the
    model can (`start_at_identity_`). Returns (model, init description)."""
    from restorebench.models.weights import WeightsError

    pretrained = cfg.pretrained.get(model)
    try:
        net = cell_model(cfg, model, task, pretrained)
    except WeightsError as err:  # missing, cut, refused or mismatched: name the params key that chose it
        raise WeightsError(" ".join(str(err).split()), where=f"profiles.{cfg.profile}.pretrained.{model}",
                           hint="fix the path or hub id, or set it to null for a seeded random init") from None
    if pretrained is None:
        net.start_at_identity_()
    return net, pretrained or f"random(seed={cfg.seed})"


def load_pretrained_init(net: torch.nn.Module, cfg: Config, model: str, task: str, pretrain: str) -> str:
    """Load a restoration-pretrained init into `net`: the run's state mapped by the model itself
    (`adapt_pretrained`: IPT keeps one task's head and tail), then every tensor of `net` from it,
    shape-checked. Returns the init description recorded in train.json and the metrics."""
    import json

    from restorebench.models.weights import read_state_dict

    run = pretrain_dir(pretrain, model, task)
    path = run / "model.safetensors"
    if not path.exists():
        hint = "--method ipt" if pretrain == "ipt" else f"--method dcpt --task {task} --model {model}"
        raise FileNotFoundError(f"{path}: no pretrained weights; run `restorebench pretrain {hint}` first")
    meta_path = run / "pretrain.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    state = read_state_dict(path)  # a cut file: WeightsError naming it
    state = net.adapt_pretrained(state, task=task, head=cfg.pretrain.ipt.heads.get(task), meta=meta)
    own = net.state_dict()
    wrong = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in state.items()
             if k in own and v.shape != own[k].shape]
    unknown = [k for k in state if k not in own]
    missing = [k for k in own if k not in state]
    if wrong or unknown or missing:
        raise ValueError(
            f"{path} does not fit {model} (variant {cfg.variant(model, task)}): shape mismatches {wrong[:3]}, "
            f"unexpected {unknown[:3]}, missing {missing[:3]}; pretrain and finetune the same variant"
        )
    net.load_state_dict(state)
    logging.getLogger(__name__).info("loaded %s: %d tensors, 0 missing, 0 unexpected", path, len(state))
    return f"{pretrain}:{path} (sha256 {io.sha256_file(path)[:16]})"


@dataclass
class TrainingData:
    """A cell's training batches (`batches(start_step)`, as the loop takes them) and its held-out crops."""

    batches: Callable[[int], Iterator]
    held: Items
    patch: int
    holdout_images: int


def training_data(cfg: Config, task: str, model: str) -> TrainingData:
    """The cell's data from TASK's packed training store: uint8 crops (4x less to copy; the loop converts
    to float on the device), `train.workers` loader processes, pinned memory on CUDA; whole source groups
    (scenes, sequences) held out per `train.holdout` (data.store.holdout_split)."""
    store = open_store(Path(cfg.data.root) / "store" / TASK_DATASET[task] / "train")
    patch = cfg.train.crop(model)
    train_idx, held_idx = holdout_split(store, cfg.train.holdout, f"profiles.{cfg.profile}.train.holdout")
    dataset = Items(PairedPatchDataset(store, patch, augment=True, seed=cfg.seed, uint8=True), train_idx)
    held = Items(PairedPatchDataset(store, patch, augment=False, seed=cfg.seed, uint8=True), held_idx)
    per_step = cfg.train.batch // cfg.train.accumulate
    if per_step < 1 or per_step * cfg.train.accumulate != cfg.train.batch:
        raise ValueError(
            f"train.batch ({cfg.train.batch}) must be a multiple of train.accumulate ({cfg.train.accumulate})"
        )

    def batches(start: int):
        return step_loader(dataset, per_step, seed=cfg.seed, start_step=start * cfg.train.accumulate,
                           workers=cfg.train.workers)  # fmt: skip

    holdout_images = len(set(store.index["image"][i] for i in held_idx))
    return TrainingData(batches, held, patch, holdout_images)


def finetune(
    cfg: Config, task: str, model: str, strategy: str, run_dir: Path, *, pretrain: str = "none", progress: bool = True
) -> dict:
    """Train one cell (from `pretrain`'s weights unless "none") and write its outputs; returns train.json."""
    if cfg.train.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    torch.manual_seed(cfg.seed)  # the seeded init of everything not loaded from a checkpoint
    variant = cfg.variant(model, task)
    net, init = init_model(cfg, model, task)
    if pretrain != "none":
        init = load_pretrained_init(net, cfg, model, task, pretrain)
    data = training_data(cfg, task, model)
    loop_cfg = loop_config(cfg, model, strategy)
    started = time.time()
    params = {"task": task, "model": model, "variant": variant, "strategy": strategy, "pretrain": pretrain,
              "init": init, "seed": cfg.seed, "batch": cfg.train.batch, "patch": data.patch,
              "holdout_images": data.holdout_images}  # fmt: skip
    held = data.held
    validate = (lambda m: {"val/psnr": held_out_psnr(m, held)}) if len(held) else None
    from restorebench.card import run_config, safetensors_metadata, write_run_config
    from restorebench.evaluate import git_revision

    # config.json and the same fields in the weights' header: build_model(pretrained=run_dir) rebuilds the cell
    config = run_config(model=model, variant=variant, kwargs=cell_kwargs(cfg, model, task), task=task,
                        cell=run_dir.name, strategy=strategy, pretrain=pretrain, seed=cfg.seed, init=init,
                        loss=loop_cfg.loss, profile=cfg.profile, params_hash=cfg.digest(),
                        git_revision=git_revision())  # fmt: skip
    done = train_and_save(net, data.batches, loop_cfg, run_dir=run_dir, params=params, validate=validate,
                          progress=progress, metadata=safetensors_metadata(config))
    if done is None:  # not rank 0 of a DDP run
        return {}
    result, device = done
    summary = {
        "task": task,
        "model": model,
        "variant": variant,
        "strategy": strategy,
        "pretrain": pretrain,
        "init": init,
        "steps": result.steps,
        "resumed_from": result.resumed_from,
        "train_seconds": result.seconds,
        "train_images_per_s": result.images_per_s,
        "data_wait": result.data_wait,  # share of the wall time the loop waited for the loader
        "last_loss": result.last_loss,
        "val_psnr": (result.history[-1].get("val/psnr") if result.history else None),
        "holdout_images": params["holdout_images"],
        "device": device,
        "gpus": cfg.train.gpus,
        "wall_seconds": time.time() - started,
        "params_hash": cfg.digest(),
        "profile": cfg.profile,  # evaluate names it when weights meet another profile's architecture
        "seed": cfg.seed,
        "loss": loop_cfg.loss,
    }
    write_run_config(run_dir, config)
    io.write_json(run_dir / "train.json", summary)
    return summary
