"""One training run with its outputs: what finetuning a grid cell and pretraining share.

`train_and_save` starts the process group under torchrun (train.gpus > 1), trains through the loop with
dvclive curves on rank 0, and writes run_dir/model.safetensors and history.json atomically (rank 0 only).
Rank 0 holds run_dir/.lock for the whole session (a second run of the same cell fails at once), claims the
checkpoints for this run's fingerprint (checkpoint.claim_run: nothing is deleted), tidies them
(checkpoint.tidy: killed writes' temporary files removed, hashless checkpoints verified or set aside) and
trims the dvclive curves to the checkpoint it resumes from, so every step is logged once. The same run writes
the same bytes: model.safetensors's header metadata is sorted (io.sort_safetensors_metadata).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import TypeVar

import torch
import torch.nn as nn

from restorebench import io
from restorebench.errors import RestorebenchError
from restorebench.train import checkpoint, distributed
from restorebench.train.loop import Batches, LoopConfig, Objective, TrainResult, train

T = TypeVar("T")


def known_failure(err: BaseException, *, what: str, batch: int, patch: str, hint: str) -> RestorebenchError | None:
    """The one-line error for a way a training run (pretrain or finetune) ends early, or None for a bug.

    Out of GPU memory names the run's batch and patch, the allocator's first line and what to change
    (`hint`); a missing file or a bad value reached late is told with the run (`what`) it stopped."""
    if isinstance(err, RestorebenchError):
        return err
    if isinstance(err, RuntimeError) and "out of memory" in str(err).lower():
        return RestorebenchError(what, f"out of GPU memory at batch {batch}, patch {patch}: "
                                       f"{str(err).splitlines()[0]}", hint)  # fmt: skip
    if isinstance(err, ValueError | FileNotFoundError):
        return RestorebenchError(what, str(err))
    return None


def guarded(run: Callable[[], T], *, what: str, batch: int, patch: str, hint: str) -> T:
    """run(), with the known ways a training run ends early raised as one-line RestorebenchErrors
    (`known_failure`); anything else is a bug and propagates as it is."""
    try:
        return run()
    except Exception as err:
        known = known_failure(err, what=what, batch=batch, patch=patch, hint=hint)
        if known is None or known is err:
            raise
        raise known from err


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def train_and_save(
    net: nn.Module,
    batches: Batches,
    cfg: LoopConfig,
    *,
    run_dir: Path,
    params: dict,
    validate: Callable[[nn.Module], dict[str, float]] | None = None,
    objective: Objective | None = None,
    keep: Callable[[nn.Module], nn.Module] = lambda final: final,
    progress: bool = True,
    metadata: dict[str, str] | None = None,
) -> tuple[TrainResult, str] | None:
    """Train `net`; save keep(final weights) to run_dir/model.safetensors (with `metadata` in its header).
    Returns (result, device name) on rank 0 and None on the other ranks (which write nothing). A second run of the same run_dir while this
    one trains fails at once (RestorebenchError)."""
    info = distributed.setup()
    try:
        # a read-only or full runs folder is one line naming it (io.write_failure), not a traceback
        top = run_dir.parent if run_dir.is_absolute() else Path(run_dir.parts[0])  # runs/ for runs/finetune/...
        with io.refused_writes(run_dir, "the run folder", scope=top):
            run_dir.mkdir(parents=True, exist_ok=True)
        writes = io.refused_writes(run_dir, "the run's files")
        with writes, checkpoint.lock_run(run_dir) if info.is_main else nullcontext():
            return _session(
                net,
                batches,
                cfg,
                info,
                run_dir=run_dir,
                params=params,
                validate=validate,
                objective=objective,
                keep=keep,
                progress=progress,
                metadata=metadata,
            )
    finally:
        distributed.teardown()


def _session(net: nn.Module, batches: Batches, cfg: LoopConfig, info: distributed.DistInfo, *, run_dir: Path,
             params: dict, validate, objective, keep, progress: bool,
             metadata: dict[str, str] | None = None) -> tuple[TrainResult, str] | None:  # fmt: skip
    from dvclive import Live
    from safetensors.torch import save_file

    if info.is_main:  # before any rank looks for checkpoints to resume from
        checkpoint.claim_run(run_dir, checkpoint.fingerprint(net, cfg, params), params)
        checkpoint.tidy(run_dir / "checkpoints")  # killed writes' temporary files; hashless checkpoints
        # rows after the checkpoint the loop resumes from are logged again: keep each step once
        checkpoint.trim_curves(run_dir / "dvclive", checkpoint.resume_step(run_dir / "checkpoints"))
    if info.world_size > 1:
        torch.distributed.barrier()
    live_cm = (
        Live(dir=str(run_dir / "dvclive"), resume=True, save_dvc_exp=False, dvcyaml=None, report=None)
        if info.is_main
        else nullcontext(None)
    )
    with live_cm as live:
        if live is not None:
            live.log_params(params)
        final, result = train(
            net,
            batches,
            cfg,
            device=info.device,
            run_dir=run_dir,
            validate=validate,
            objective=objective,
            live=live,
            progress=progress and info.is_main,
        )
    if not info.is_main:
        return None
    tensors = {k: v.detach().cpu().contiguous() for k, v in keep(final).state_dict().items()}
    dest = run_dir / "model.safetensors"
    try:
        with io.atomic_path(dest, suffix=".safetensors") as tmp:
            save_file(tensors, str(tmp), metadata=metadata)
            io.sort_safetensors_metadata(tmp)  # safetensors writes its metadata in hash-map order
        io.write_json(run_dir / "history.json", result.history)
    except OSError as err:
        known = io.write_failure(run_dir, err, what=dest.name,
                                 needed=sum(t.numel() * t.element_size() for t in tensors.values()))
        if known is None:
            raise
        raise known from err
    return result, device_name(info.device)
