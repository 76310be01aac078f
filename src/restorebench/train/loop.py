"""The training loop, written out top to bottom.

Data comes as a function `batches(start_step)` returning an iterator of (lq, gt) batches for steps
start_step, start_step + 1, ...; the batch of a step depends only on (seed, step), so a resumed run sees
exactly the batches an uninterrupted one would. Together with the model, optimizer, scheduler, EMA and
RNG states in each checkpoint, a run killed at any point and restarted ends bit-identical (on CPU, in
deterministic mode).

Under torchrun (torch.distributed initialised, world size W > 1) every rank gets the same global batches
and trains on its contiguous 1/W of each (distributed.shard); the model runs wrapped in DDP, so the
gradient is the one of the whole global batch. Rank 0 alone writes checkpoints, logs and validates;
every rank resumes from the same checkpoint, and NaN losses and SIGTERM are agreed on by all ranks in
one small all_reduce at each host read (below), so all stop at the same step. One process runs exactly as
before.

The host does not wait for the device every step. Losses (and an objective's scalars) stay on the device
and are read in one transfer every `sync_every` steps, at every log, validation and checkpoint step, and
(one process) on SIGTERM. The NaN check then looks at every step since the last read and names the first
bad one; no checkpoint is written before the steps it holds were checked, so every checkpoint on disk is
good. Under DDP a SIGTERM is acted on at the next read, at most `sync_every` steps later.
"""

from __future__ import annotations

import logging
import math
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as torch_dist
import torch.nn as nn
import torch.nn.functional as F

from restorebench import logs
from restorebench.config import COMPILE_MODES
from restorebench.errors import RestorebenchError
from restorebench.schema import LOSS_NAMES
from restorebench.train import checkpoint, distributed, strategies
from restorebench.train.ema import EMA
from restorebench.train.schedule import lr_factor

log = logging.getLogger(__name__)
Batches = Callable[[int], Iterator[tuple]]

# objective(forward, batch, device) -> (loss, scalars to log); `forward` is the (compiled / DDP) model
Objective = Callable[[Callable, tuple, torch.device], tuple[torch.Tensor, dict[str, torch.Tensor | float]]]


def use_deterministic(compile: bool) -> None:
    """Deterministic kernels for a run. torch.use_deterministic_algorithms also sets the flag of the
    torch.compile backend (inductor), importing it: about 2 s of every training job's start on this CPU
    (benchmarks/NOTES.md, "what a job pays to start"). Without torch.compile nothing reads that flag, so
    only the kernel flag is set; with it, torch's own function sets both."""
    if compile:
        torch.use_deterministic_algorithms(True, warn_only=True)
    else:
        torch._C._set_deterministic_algorithms(True, warn_only=True)


# ---------------------------------------------------------------------------------------------- losses


def charbonnier(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    return torch.sqrt((pred - target) ** 2 + eps**2).mean()


def psnr_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """NAFNet's PSNR loss: -PSNR averaged over the batch, i.e. 10 * mean(log10(MSE per image))."""
    mse = ((pred - target) ** 2).flatten(1).mean(1)
    return 10.0 * torch.log10(mse + 1e-8).mean()


# The names are schema.LOSS_NAMES (what a recipe's `loss` is checked against); tests/test_vocabularies.py holds
# these keys equal to them.
LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "l1": F.l1_loss,
    "charbonnier": charbonnier,
    "psnr": psnr_loss,
}


def pixel_objective(loss: str, *, channels_last: bool = False, amp: bool = True,
                    aux_outputs: Callable[[], list[torch.Tensor]] | None = None) -> Objective:
    """The finetuning objective: restore lq, compare with gt under `loss` (l1, charbonnier, psnr).

    `aux_outputs()`, read after each forward, gives the images of the intermediate decoder layers when the
    model keeps them (deep supervision, a recipe's aux_loss): each adds `loss` against gt with weight 1, as
    Mask2Former sums its per-layer losses (the final layer's is the main loss); logged as `aux_loss`."""
    if loss not in LOSSES:
        raise ValueError(f"train.loss: {loss!r} unknown; choose from {list(LOSS_NAMES)}")
    loss_fn = LOSSES[loss]

    def objective(forward, batch, device):
        lq, gt = batch
        lq = to_device(lq, device, channels_last=channels_last)
        gt = to_device(gt, device)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda" and amp):
            out = forward(lq)
        main = loss_fn(out.float(), gt.float())
        aux = aux_outputs() if aux_outputs is not None else []
        if not aux:
            return main, {}
        extra = torch.stack([loss_fn(a.float(), gt.float()) for a in aux]).sum()
        return main + extra, {"aux_loss": extra.detach()}

    return objective


def to_device(x: torch.Tensor, device: torch.device, *, channels_last: bool = False) -> torch.Tensor:
    """Move a batch to the device; uint8 (0-255) becomes float in [0, 1] there, float passes through."""
    x = x.to(device, non_blocking=True)
    x = x.float().div_(255.0) if x.dtype == torch.uint8 else x
    if channels_last and device.type == "cuda" and x.ndim == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


class TrainingDiverged(RestorebenchError, RuntimeError):
    """The loss became NaN or inf; the last good checkpoint is kept."""


class Preempted(RestorebenchError, RuntimeError):
    """SIGTERM arrived; a checkpoint was written and the run can resume. The CLI exits 143 (128 + SIGTERM),
    as a process killed by the signal would."""

    exit_code = 143


@dataclass
class LoopConfig:
    """What one run of the loop does: params.yaml's train section (restorebench.config.TrainConfig) merged with
    one model's recipe and the strategy (train.finetune.loop_config, pretrain.runner.loop_config)."""

    steps: int
    lr: float
    strategy: str = "full"
    min_lr: float = 1e-7
    # the recipe's schedule (restorebench.train.schedule.lr_factor): cosine | poly | constant_then_cosine
    schedule: str = "cosine"
    power: float = 1.0
    constant: int = 0
    warmup: int = 0
    warmup_ratio: float = 0.0
    weight_decay: float = 0.0
    no_decay: tuple[str, ...] = ("1d",)  # weight-decay exemptions (strategies.optimizer_groups)
    betas: tuple[float, float] = (0.9, 0.9)
    loss: str = "l1"
    grad_clip: float = 0.0  # max global gradient L2 norm (torch clip_grad_norm_ over every parameter); 0: off
    ema_decay: float = 0.0  # 0: off
    accumulate: int = 1
    llrd_decay: float = 0.9  # the llrd strategy's rate where the recipe has no layer_decay of its own
    layer_decay: float = 0.0  # the recipe's own layer-wise decay (every strategy); 0: none
    backbone_lr_mult: float = 1.0
    checkpoint_every: int = 100
    validate_every: int = 0  # 0: only at the end
    log_every: int = 10
    amp: bool = True  # bf16 autocast on CUDA; ignored on CPU (fp32)
    channels_last: bool = False
    compile: bool = False
    compile_mode: str = "default"  # torch.compile mode; "reduce-overhead" adds CUDA graphs
    fused: bool = True  # fused AdamW on CUDA
    sync_every: int = 10  # steps between host reads of the loss (NaN check, DDP agreement); 1: every step
    find_unused: bool = False  # DDP: some parameters may get no gradient in a step (e.g. per-task heads)


def schedule_factor(cfg: LoopConfig, step: int) -> float:
    """The multiplier every parameter group's LR gets at `step` (the floor is min_lr / lr, so full_lowlr's
    LR / 10 divides the floor by 10 too)."""
    return lr_factor(step, total=cfg.steps, schedule=cfg.schedule, floor=cfg.min_lr / cfg.lr if cfg.lr > 0 else 0.0,
                     power=cfg.power, constant=cfg.constant, warmup=cfg.warmup, warmup_ratio=cfg.warmup_ratio)


def make_optimizer(model: nn.Module, cfg: LoopConfig, *, fused: bool = False, last_step: int = -1):
    """AdamW over the strategy's parameter groups of the recipe, and its LR schedule (a LambdaLR of
    `schedule_factor`); last_step >= 0 positions the schedule after that step (the LR of step last_step + 1
    is then current), as a resumed run's does."""
    groups = strategies.optimizer_groups(
        model, cfg.strategy, lr=cfg.lr, weight_decay=cfg.weight_decay, llrd_decay=cfg.llrd_decay,
        layer_decay=cfg.layer_decay, backbone_lr_mult=cfg.backbone_lr_mult, no_decay=cfg.no_decay,
    )
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, fused=fused or None)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: schedule_factor(cfg, s), last_epoch=last_step)
    return optimizer, schedule


@dataclass
class TrainResult:
    steps: int
    seconds: float
    images: int
    images_per_s: float
    last_loss: float
    resumed_from: int
    history: list[dict] = field(default_factory=list)
    data_wait: float = 0.0  # fraction of this session's wall time the host spent waiting for batches


def train(
    model: nn.Module,
    batches: Batches,
    cfg: LoopConfig,
    *,
    device: str | torch.device = "cpu",
    run_dir: Path,
    validate: Callable[[nn.Module], dict[str, float]] | None = None,
    objective: Objective | None = None,
    live=None,
    progress: bool = True,
    clock: Callable[[], float] = time.perf_counter,
) -> tuple[nn.Module, TrainResult]:
    """Train `model` in place for cfg.steps; return the weights to keep (EMA when on) and a summary.

    `objective` computes the loss of one batch (default: the pixel loss cfg.loss on (lq, gt) pairs;
    pretraining passes its own). `validate(model)` runs every cfg.validate_every steps and at the end.
    `clock` (seconds) times the run, images/s and the data wait; tests pass a controllable one.
    """
    objective = objective or pixel_objective(cfg.loss, channels_last=cfg.channels_last, amp=cfg.amp,
                                             aux_outputs=lambda: getattr(model, "aux_outputs", []))
    if cfg.accumulate < 1:
        raise ValueError(f"train.accumulate must be >= 1, got {cfg.accumulate}")
    if cfg.sync_every < 1:
        raise ValueError(f"train.sync_every must be >= 1, got {cfg.sync_every}")
    if cfg.compile_mode not in COMPILE_MODES:
        raise ValueError(f"train.compile_mode: {cfg.compile_mode!r} unknown; choose from {', '.join(COMPILE_MODES)}")
    device = torch.device(device)
    cuda = device.type == "cuda"
    rank, world = distributed.world()
    ddp, main = world > 1, rank == 0
    if not main:
        live, progress = None, False
    model.to(device)
    if cfg.channels_last and cuda:
        model.to(memory_format=torch.channels_last)
    optimizer, schedule = make_optimizer(model, cfg, fused=cuda and cfg.fused)
    ema = EMA(model, cfg.ema_decay) if cfg.ema_decay > 0 else None
    ckpt_dir = run_dir / "checkpoints"

    start = 0
    # what earlier sessions of this run did (restored on resume, so the history and totals are whole)
    history: list[dict] = []
    before = {"seconds": 0.0, "images": 0}
    found = checkpoint.load_latest(ckpt_dir)
    if found is not None:
        path, state = found
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
        checkpoint.set_rng_state(state["rng"])
        start = int(state["step"])
        history = list(state.get("history", []))
        before = dict(state.get("totals", before))
        log.info("resumed from %s at step %d of %d", path, start, cfg.steps)
    net: nn.Module = model
    if ddp:  # after the resume: every rank holds the same weights; DDP checks that and syncs gradients
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if cuda else None, find_unused_parameters=cfg.find_unused
        )
    step_fn = torch.compile(net, mode=cfg.compile_mode) if cfg.compile else net

    def save(step: int) -> Path:
        if ddp:  # rank 0 writes; the others wait so no rank runs ahead of a checkpoint on disk
            path = ckpt_dir / f"step_{step:08d}.pt"
            if main:
                path = checkpoint.save(ckpt_dir, step, state_to_save(step))
            torch_dist.barrier()
            return path
        return checkpoint.save(ckpt_dir, step, state_to_save(step))

    def state_to_save(step: int) -> dict:
        state = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "schedule": schedule.state_dict(),
            "rng": checkpoint.rng_state(),
            "step": step,
            "history": list(history),
            "totals": {"seconds": before["seconds"] + clock() - t0, "images": before["images"] + images},
        }
        if ema is not None:
            state["ema"] = ema.state_dict()
        return state

    stop = {"signal": None}
    previous = signal.getsignal(signal.SIGTERM)

    def on_term(signum, frame):  # cluster preemption: finish the step, checkpoint, exit
        stop["signal"] = signum

    in_main = _in_main_thread()
    if in_main:
        signal.signal(signal.SIGTERM, on_term)
    images = 0
    waited = 0.0  # seconds the host spent in next(data)
    loss_value = history[-1]["loss"] if history else float("nan")
    window: list[tuple[int, torch.Tensor, dict]] = []  # (step, loss, scalars) on the device, not read yet
    t0 = clock()
    bar = _progress(range(start, cfg.steps), cfg.steps, start, progress)
    data = batches(start)
    try:
        for step in bar:
            strategies.train_mode(model, cfg.strategy)
            optimizer.zero_grad(set_to_none=True)
            total: torch.Tensor | float = 0.0
            scalars: dict = {}
            for micro in range(cfg.accumulate):
                t_wait = clock()
                batch = next(data)
                waited += clock() - t_wait
                images += batch[0].shape[0]  # the global batch
                if ddp:
                    batch = distributed.shard(batch, rank, world)
                # DDP: sum gradients locally until the last micro-batch, then all-reduce once
                sync = nullcontext() if not ddp or micro == cfg.accumulate - 1 else net.no_sync()
                with sync:
                    loss, extra = objective(step_fn, batch, device)
                    (loss / cfg.accumulate).backward()
                total = total + loss.detach() / cfg.accumulate  # stays on the device
                for key, value in extra.items():
                    value = value.detach() if isinstance(value, torch.Tensor) else value
                    scalars[key] = scalars.get(key, 0.0) + value / cfg.accumulate
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            schedule.step()
            if ema is not None:
                ema.update(model)
            window.append((step, total, scalars))
            done = step + 1
            validating = validate is not None and (
                done == cfg.steps or (cfg.validate_every > 0 and done % cfg.validate_every == 0)
            )
            logging_now = validating or done % cfg.log_every == 0 or done == cfg.steps
            checkpointing = done % cfg.checkpoint_every == 0 or done == cfg.steps
            stopping = stop["signal"] is not None
            # every rank reaches the same read points (DDP agrees there); one process also reads on SIGTERM
            if not (logging_now or checkpointing or done % cfg.sync_every == 0 or (stopping and not ddp)):
                continue
            losses, scalars, stopping = _read(window, stopping, device, world if ddp else 1)
            for (bad_step, _, _), value in zip(window, losses, strict=True):
                if not math.isfinite(value):
                    last = checkpoint.list_checkpoints(ckpt_dir)
                    raise TrainingDiverged(
                        run_dir,
                        f"loss is {value} at step {bad_step}; last good checkpoint: {last[-1] if last else 'none'}",
                        "lower the learning rate or set train.grad_clip; check the data with `restorebench validate`",
                    )
            window.clear()
            loss_value = losses[-1]
            if logging_now:
                elapsed = max(clock() - t0, 1e-9)
                row = {"step": done, "loss": loss_value, "lr": optimizer.param_groups[0]["lr"],
                       "images_per_s": images / elapsed, "data_wait": waited / elapsed}
                row.update(scalars)
                if validating and main:
                    row.update(validate(ema.shadow if ema is not None else model))
                history.append(row)
                _log_live(live, row)
                if hasattr(bar, "set_postfix"):
                    bar.set_postfix(loss=f"{loss_value:.4f}", ips=f"{row['images_per_s']:.1f}")
                elif progress:  # not a terminal: one timestamped line per log step
                    log.info("%s", logs.train_line(row, cfg.steps))
            if checkpointing:
                save(done)
            if stopping:
                path = save(done)
                raise Preempted(run_dir, f"SIGTERM at step {done}; checkpoint {path}",
                                "rerun the same command to resume")
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous)
    seconds = clock() - t0
    data_wait = waited / max(seconds, 1e-9)
    final = ema.shadow if ema is not None else model
    seconds, images = before["seconds"] + seconds, before["images"] + images  # whole-run totals
    result = TrainResult(
        steps=cfg.steps,
        seconds=seconds,
        images=images,
        images_per_s=images / max(seconds, 1e-9),
        last_loss=loss_value,
        resumed_from=start,
        history=history,
        data_wait=data_wait,
    )
    return final, result


def _read(
    window: list[tuple[int, torch.Tensor, dict]], stopping: bool, device: torch.device, world: int
) -> tuple[list[float], dict[str, float], bool]:
    """The window's per-step losses, its last step's scalars and the stop flag, in one device-to-host read.

    With world > 1 they are first summed over the ranks in one all_reduce (losses and scalars then divided
    by world: the mean; the stop flag is set when any rank got SIGTERM). A NaN on any rank makes the mean
    NaN, so every rank stops on it at the same step.
    """
    last = window[-1][2]
    keys = sorted(last)  # every rank's objective returns the same keys
    values = [torch.as_tensor(t, dtype=torch.float64, device=device).reshape(1) for _, t, _ in window]
    values.append(torch.tensor([float(stopping)], dtype=torch.float64, device=device))
    values.extend(torch.as_tensor(last[k], dtype=torch.float64, device=device).reshape(1) for k in keys)
    flat = torch.cat(values)
    if world > 1:
        torch_dist.all_reduce(flat)
    host = flat.tolist()
    n = len(window)
    losses = [v / world for v in host[:n]]
    scalars = {k: v / world for k, v in zip(keys, host[n + 1 :], strict=True)}
    return losses, scalars, host[n] > 0


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _progress(it, total: int, start: int, enabled: bool):
    """A tqdm bar on a terminal; elsewhere the loop writes one log line per log step instead."""
    if not enabled or not logs.interactive():
        return it
    from tqdm.auto import tqdm

    return tqdm(it, total=total, initial=start, desc="train", unit="step", dynamic_ncols=True)


def _log_live(live, row: dict) -> None:
    if live is None:
        return
    live.step = row["step"]
    for key, value in row.items():
        if key != "step":
            live.log_metric(key if key.startswith("val") else f"train/{key}", value)
    live.make_summary()
