"""Several GPUs for one grid cell: DDP under torchrun, and per-job GPU pinning for Snakemake.

Semantics: `train.batch` is the global batch; with `train.gpus` = W each rank takes a contiguous 1/W of
every global batch, so per-GPU batch x GPUs = global batch and the gradient equals the single-process one.

    relaunch_under_torchrun(sys.argv[1:], gpus)   # gpus > 1 and not yet distributed: re-exec under torchrun
    dist = setup()                                # rank, world_size, local_rank, device
    ... train(..., device=dist.device) ...        # the loop sees torch.distributed and wraps in DDP
    teardown()

`pin_devices(n)` runs first in a job that Snakemake started with `resources: gpu=n` on a machine with more
GPUs: it claims n free devices with lock files and sets CUDA_VISIBLE_DEVICES before CUDA initialises.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import torch
import torch.distributed as torch_dist

from restorebench.errors import RestorebenchError

log = logging.getLogger(__name__)

# Lock files of the devices this process claimed; open for the process lifetime (closing releases them).
_HELD: list[IO] = []


# ------------------------------------------------------------------------------------------- torchrun


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(device: str = "auto") -> DistInfo:
    """Read torchrun's RANK / WORLD_SIZE / LOCAL_RANK; start the process group when WORLD_SIZE > 1.

    device: "auto" (cuda:LOCAL_RANK when CUDA is available, else cpu), "cuda" or "cpu". The backend is
    nccl on CUDA, gloo on the CPU. Without torchrun's variables this is one process, rank 0 of 1.
    """
    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    if device not in ("auto", "cuda", "cpu"):
        raise ValueError(f"device: {device!r} unknown; choose from ['auto', 'cpu', 'cuda']")
    cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if cuda:
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)  # before init: NCCL binds each rank to its own GPU
    else:
        dev = torch.device("cpu")
    if world > 1 and not torch_dist.is_initialized():
        torch_dist.init_process_group(backend="nccl" if cuda else "gloo", init_method="env://")
        log.info("rank %d of %d on %s", rank, world, dev)
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, device=dev)


def teardown() -> None:
    """End the process group (a no-op when none was started)."""
    if torch_dist.is_available() and torch_dist.is_initialized():
        torch_dist.destroy_process_group()


def world() -> tuple[int, int]:
    """(rank, world size) of the running process group; (0, 1) without one."""
    if torch_dist.is_available() and torch_dist.is_initialized():
        return torch_dist.get_rank(), torch_dist.get_world_size()
    return 0, 1


def shard(batch: Any, rank: int, world_size: int) -> Any:
    """This rank's contiguous slice of a global batch; tensors are split along dim 0, recursively
    through tuples, lists and dicts; anything else passes through unchanged."""
    if isinstance(batch, torch.Tensor):
        n = batch.shape[0]
        if n % world_size:
            raise ValueError(
                f"the global batch of {n} does not divide by {world_size} GPUs: "
                f"set train.batch (divided by train.accumulate) to a multiple of train.gpus"
            )
        per = n // world_size
        return batch[rank * per : (rank + 1) * per]
    if isinstance(batch, tuple | list):
        items = [shard(x, rank, world_size) for x in batch]
        return type(batch)(*items) if hasattr(batch, "_fields") else type(batch)(items)  # namedtuples too
    if isinstance(batch, dict):
        return {k: shard(v, rank, world_size) for k, v in batch.items()}
    return batch


def torchrun_command(argv: list[str], gpus: int) -> list[str]:
    """The command that runs `restorebench ARGV...` as `gpus` processes under torchrun on this machine."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={gpus}",
        "-m",
        "restorebench",
        *argv,
    ]


def relaunch_under_torchrun(argv: list[str], gpus: int) -> None:
    """Replace this process by torchrun running the same command on `gpus` processes.

    Returns (doing nothing) when gpus <= 1 or when already under torchrun (WORLD_SIZE set). Lock files
    claimed by pin_devices are kept across the exec, so the devices stay claimed while torchrun runs.
    """
    if gpus <= 1 or "WORLD_SIZE" in os.environ:
        return
    command = torchrun_command(list(argv), gpus)
    log.info("relaunching under torchrun: %s", " ".join(command))
    for handle in _HELD:
        os.set_inheritable(handle.fileno(), True)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(command[0], command)


# ---------------------------------------------------------------------------------------- GPU pinning


def count_gpus() -> int:
    """GPUs on this machine, from `nvidia-smi -L`, without initialising CUDA; 0 without nvidia-smi."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return 0
    try:
        out = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in out.splitlines() if line.startswith("GPU "))


def lock_dir() -> Path:
    """Where the per-device lock files live: $RESTOREBENCH_GPU_LOCKS, else a folder in the temp dir."""
    default = Path(tempfile.gettempdir()) / "restorebench-gpu-locks"
    return Path(os.environ.get("RESTOREBENCH_GPU_LOCKS") or default)


@dataclass
class Claim:
    """Devices held through open, flock'ed lock files; release() (or process exit) frees them."""

    devices: list[int]
    handles: list[IO]

    def release(self) -> None:
        for handle in self.handles:
            handle.close()  # closing the file drops its flock
        self.handles.clear()


class NoFreeGpu(RestorebenchError, RuntimeError):
    """The GPUs a job asks for do not exist or stay claimed by other jobs."""


def claim_devices(
    n: int,
    *,
    count: int,
    directory: Path | None = None,
    timeout: float = 3600.0,
    poll: float = 5.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Claim:
    """Claim n of the `count` device indices, waiting (polling) up to `timeout` seconds for them to free.

    A device is claimed by an exclusive, non-blocking flock on `directory/gpu{i}.lock`; the lock lives
    as long as the file stays open, so a crashed job never leaves a stale claim. `clock` and `sleep`
    (seconds) are injectable so tests control the wait.
    """
    if n < 1:
        raise ValueError(f"train.gpus must be >= 1, got {n}")
    if n > count:
        raise NoFreeGpu("train.gpus", f"{n}, but this machine has {count} GPU(s)", f"set it to {count} or less")
    directory = directory or lock_dir()
    directory.mkdir(parents=True, exist_ok=True)
    deadline = clock() + timeout
    waited = False
    while True:
        devices, handles = [], []
        for i in range(count):
            handle = open(directory / f"gpu{i}.lock", "a")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            devices.append(i)
            handles.append(handle)
            if len(devices) == n:
                if waited:
                    log.info("got GPU(s) %s", devices)
                return Claim(devices, handles)
        for handle in handles:  # fewer than n free: hold none while waiting, so two jobs cannot deadlock
            handle.close()
        if clock() >= deadline:
            raise NoFreeGpu(
                directory,
                f"no {n} free GPU(s) of {count} after waiting {timeout:.0f} s: all are claimed by other "
                f"restorebench jobs (lock files here)",
                "lower the number of parallel GPU jobs (snakemake --resources gpu=N) or set CUDA_VISIBLE_DEVICES",
            )
        if not waited:
            log.warning("waiting for %d free GPU(s) of %d (lock files in %s)", n, count, directory)
            waited = True
        sleep(min(poll, max(deadline - clock(), 0.0)))


def pin_devices(
    n: int,
    *,
    count: int | None = None,
    directory: Path | None = None,
    timeout: float = 3600.0,
    poll: float = 5.0,
) -> list[int] | None:
    """Give this job n GPUs of its own by setting CUDA_VISIBLE_DEVICES; call before CUDA initialises.

    Does nothing (returns None) when CUDA_VISIBLE_DEVICES is already set (Slurm, the user) or the
    machine has no GPU. `count` overrides the GPU count (default: `nvidia-smi -L`). The claim is held
    until the process exits.
    """
    if "CUDA_VISIBLE_DEVICES" in os.environ:
        if os.environ["CUDA_VISIBLE_DEVICES"]:
            log.info("using GPU(s) %s (CUDA_VISIBLE_DEVICES, set outside)", os.environ["CUDA_VISIBLE_DEVICES"])
        return None
    count = count_gpus() if count is None else count
    if count == 0:
        return None
    claim = claim_devices(n, count=count, directory=directory, timeout=timeout, poll=poll)
    _HELD.extend(claim.handles)
    os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, claim.devices))
    log.info("pinned to GPU(s) %s", os.environ["CUDA_VISIBLE_DEVICES"])
    return claim.devices


def release_devices() -> None:
    """Free the devices pin_devices claimed (process exit does this too); unsets CUDA_VISIBLE_DEVICES."""
    for handle in _HELD:
        handle.close()
    if _HELD:
        os.environ.pop("CUDA_VISIBLE_DEVICES", None)
    _HELD.clear()
