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

import numpy as np
import torch

from restorebench import io
from restorebench.config import TASK_DATASET, Config, StageConfig
from restorebench.data.datasets import Items, PairedPatchDataset, step_loader
from restorebench.data.store import holdout_split
from restorebench.data.synth import open_store
from restorebench.data.validate import require_valid
from restorebench.degrade.rng import derive_rng
from restorebench.errors import RestorebenchError
from restorebench.metrics import psnr_torch
from restorebench.train.cells import cell_kwargs, cell_model
from restorebench.train.loop import LoopConfig, to_device, use_deterministic
from restorebench.train.session import train_and_save
from restorebench.train.strategies import behaviour


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


def loop_config(cfg: Config, model: str, strategy: str, steps: int | None = None, task: str | None = None) -> LoopConfig:
    """The loop's settings for one cell: `model`'s recipe (with its `task` overrides) and the profile's
    operational settings."""
    t, r = cfg.train, cfg.train.recipe(model, task)
    return LoopConfig(
        steps=steps or r.total_steps(t.steps),
        lr=r.lr,
        strategy=strategy,
        min_lr=r.min_lr,
        schedule=r.schedule,
        power=r.power,
        constant=r.constant,
        warmup=r.warmup,
        warmup_ratio=r.warmup_ratio,
        weight_decay=r.weight_decay,
        no_decay=tuple(r.no_decay),
        betas=(float(r.betas[0]), float(r.betas[1])),
        loss=r.loss,
        grad_clip=r.grad_clip,
        ema_decay=t.ema_decay,
        accumulate=r.accumulate or t.accumulate,
        llrd_decay=t.llrd_decay,
        layer_decay=r.layer_decay,
        backbone_lr_mult=r.backbone_lr_mult,
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


def init_model(cfg: Config, model: str, task: str, *, scratch: bool = False) -> tuple[torch.nn.Module, str]:
    """The model a cell (or a DCPT run) starts from, before any restoration pretraining: the profile's
    checkpoint when `pretrained` names one, else a seeded random init, started at the identity where the model
    can (`start_at_identity_`) when the recipe's identity_start says so (the demo's short runs; the paper
    profile keeps the official initialisation). `scratch`: the control init, the same architecture from the
    seeded random init with the checkpoint not loaded (only for a model whose `pretrained` names one).
    Returns (model, init description)."""
    from restorebench.models.weights import WeightsError

    pretrained = cfg.pretrained.get(model)
    if scratch:
        if pretrained is None:
            raise RestorebenchError("--pretrain", f"scratch drops {model}'s checkpoint, but profiles.{cfg.profile}"
                                    f".pretrained.{model} is null (its plain cells already start from a seeded "
                                    "random init)", "use --pretrain none")  # fmt: skip
        pretrained = None
    try:
        net = cell_model(cfg, model, task, pretrained)
    except WeightsError as err:  # missing, cut, refused or mismatched: name the params key that chose it
        raise WeightsError(" ".join(str(err).split()), where=f"profiles.{cfg.profile}.pretrained.{model}",
                           hint="fix the path or hub id, or set it to null for a seeded random init") from None
    if pretrained is None and cfg.train.recipe(model, task).identity_start:
        net.start_at_identity_()
    init = pretrained or f"random(seed={cfg.seed})"
    return net, f"scratch: {init}, {cfg.pretrained[model]} not loaded" if scratch else init


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
    patch: int  # the first stage's crop
    holdout_images: int
    stages: list[StageConfig]
    train_images: int = 0  # the source images (pairs) the training crops come from, held-out ones excluded
    train_subimages: int = 0  # the packed sub-images drawn from


def mixup_batch(lq: torch.Tensor, gt: torch.Tensor, beta: float, rng: np.random.Generator):
    """Restormer's Mixing_Augment (basicsr/models/image_restoration_model.py, mixup with use_identity):
    with probability 1/2 the batch is left as it is; otherwise lam ~ Beta(beta, beta) and each pair is mixed
    with the pair of a random permutation: lam * x + (1 - lam) * x[perm], for lq and gt alike. uint8 batches
    become float in [0, 1]."""
    if rng.integers(2) == 1:  # random.randint(0, len(augments)) with use_identity: 1 = identity
        return lq, gt
    lq = lq.float().div(255.0) if lq.dtype == torch.uint8 else lq
    gt = gt.float().div(255.0) if gt.dtype == torch.uint8 else gt
    lam = float(rng.beta(beta, beta))
    perm = torch.as_tensor(rng.permutation(lq.shape[0]))
    return lam * lq + (1 - lam) * lq[perm], lam * gt + (1 - lam) * gt[perm]


def training_data(cfg: Config, task: str, model: str, accumulate: int | None = None) -> TrainingData:
    """The cell's data from TASK's packed training store: uint8 crops (4x less to copy; the loop converts
    to float on the device), `train.workers` loader processes, pinned memory on CUDA; whole source groups
    (scenes, sequences) held out per `train.holdout` (data.store.holdout_split).

    The recipe's stages (Restormer's progressive training: patch and global batch per stage) run one after
    the other; each stage draws its samples where the previous one stopped, so a batch still depends only on
    (seed, step). Flips/rotations and mixup follow the recipe. `accumulate`: micro-batches per step (default:
    the recipe's, else train.accumulate); the samples of a step are the same for any split."""
    store = open_store(Path(cfg.data.root) / "store" / TASK_DATASET[task] / "train")
    if store.meta.get("dataset"):  # packed from a fetched dataset (prepare): it must still pass its validation
        require_valid(Path(cfg.data.root), store.meta["dataset"], "finetune")
    recipe = cfg.train.recipe(model, task)
    stages = cfg.train.stages(model, task)
    accumulate = accumulate or recipe.accumulate or cfg.train.accumulate
    train_idx, held_idx = holdout_split(store, cfg.train.holdout, f"profiles.{cfg.profile}.train.holdout")
    augment = recipe.flip and recipe.rotate  # the 8 dihedral transforms (config.check_recipe: both or neither)
    datasets = {st.patch: Items(PairedPatchDataset(store, st.patch, augment=augment, seed=cfg.seed, uint8=True),
                                train_idx) for st in stages}  # fmt: skip
    held = Items(PairedPatchDataset(store, stages[0].patch, augment=False, seed=cfg.seed, uint8=True), held_idx)
    for i, st in enumerate(stages):
        if st.batch % accumulate:
            raise ValueError(f"train.models.{model}: stage {i} batch ({st.batch}) must be a multiple of "
                             f"accumulate ({accumulate})")

    def loader(stage: StageConfig, first_sample: int):
        per_step = stage.batch // accumulate
        return step_loader(datasets[stage.patch], per_step, seed=cfg.seed, first_sample=first_sample,
                           workers=cfg.train.workers)  # fmt: skip

    def batches(start: int):
        begin, sample = 0, 0
        for stage in stages:
            end = begin + stage.iters
            if end > start:
                first = max(start, begin)
                it = loader(stage, sample + (first - begin) * stage.batch)
                for step in range(first, end):
                    for micro in range(accumulate):
                        lq, gt = next(it)
                        if recipe.mixup > 0:
                            rng = derive_rng(cfg.seed, "mixup", step, micro)
                            lq, gt = mixup_batch(lq, gt, recipe.mixup, rng)
                        yield lq, gt
            sample += stage.iters * stage.batch
            begin = end

    holdout_images = len(set(store.index["image"][i] for i in held_idx))
    train_images = len(np.unique(np.asarray(store.index["image"])[train_idx]))
    return TrainingData(batches, held, stages[0].patch, holdout_images, stages, train_images, len(train_idx))


def _memory_record(memory, accumulate: int, batch: int) -> dict:
    """How a step's global batch ran (train.fit): chosen on CUDA, else the params' train.accumulate."""
    if memory is not None:
        return memory.to_dict()
    return {"batch": batch, "micro_batch": batch // accumulate, "accumulate": accumulate, "checkpointing": False,
            "source": "config"}  # fmt: skip


def finetune(
    cfg: Config, task: str, model: str, strategy: str, run_dir: Path, *, pretrain: str = "none", progress: bool = True
) -> dict:
    """Train one cell (from `pretrain`'s weights unless "none") and write its outputs; returns train.json."""
    if cfg.train.deterministic:
        use_deterministic(cfg.train.compile)
    torch.manual_seed(cfg.seed)  # the seeded init of everything not loaded from a checkpoint
    variant = cfg.variant(model, task)
    net, init = init_model(cfg, model, task, scratch=pretrain == "scratch")
    if pretrain not in ("none", "scratch"):
        init = load_pretrained_init(net, cfg, model, task, pretrain)
    from restorebench.train.fit import fit_to_device

    memory = fit_to_device(cfg, net, model, task, strategy)  # CUDA: micro-batches / checkpointing that fit
    data = training_data(cfg, task, model, accumulate=memory.accumulate if memory else None)
    loop_cfg = loop_config(cfg, model, strategy, task=task)
    if memory is not None:
        loop_cfg.accumulate = memory.accumulate
    started = time.time()
    params = {"task": task, "model": model, "variant": variant, "strategy": strategy, "pretrain": pretrain,
              "init": init, "seed": cfg.seed, "batch": data.stages[0].batch, "patch": data.patch,
              "stages": [[st.iters, st.patch, st.batch] for st in data.stages],
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
    config["memory"] = _memory_record(memory, loop_cfg.accumulate, data.stages[0].batch)
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
        # what the model card states (restorebench.card): the data, and the peak LR of this strategy's schedule
        "dataset": TASK_DATASET[task],
        "train_images": data.train_images,
        "train_subimages": data.train_subimages,
        "lr": loop_cfg.lr * behaviour(strategy).lr_scale,
        "lr_schedule": loop_cfg.schedule,
        "device": device,
        "gpus": cfg.train.gpus,
        "wall_seconds": time.time() - started,
        "params_hash": cfg.digest(),
        "profile": cfg.profile,  # evaluate names it when weights meet another profile's architecture
        "seed": cfg.seed,
        "loss": loop_cfg.loss,
        "memory": config["memory"],  # how the global batch ran: micro-batches, activation checkpointing
    }
    write_run_config(run_dir, config)
    io.write_json(run_dir / "train.json", summary)
    return summary
