"""One grid cell: finetune MODEL with STRATEGY on TASK's packed training store.

runs/finetune/{task}/{model}/{strategy}/ receives model.safetensors (the final weights, EMA when on),
train.json (what was run, how fast, from which init) and dvclive/ (curves); checkpoints/ sits beside
them, undeclared to either orchestrator, so a restarted job resumes instead of starting over.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Sampler

from restorebench import io
from restorebench.config import TASK_DATASET, Config
from restorebench.data.datasets import PairedPatchDataset
from restorebench.data.store import open_store
from restorebench.degrade.pipeline import derive_rng
from restorebench.models import build_model
from restorebench.train.loop import TrainConfig, train

# From a random init, the restoration baselines start at the identity as the head-based models do: their
# last conv (residual branch) is zeroed, so output = input at step 0. A pretrained init is left untouched.
ZERO_INIT_OUTPUT = {"nafnet": "ending", "restormer": "output"}


def start_at_identity(model: torch.nn.Module, name: str) -> None:
    attr = ZERO_INIT_OUTPUT.get(name)
    if attr is None:
        return
    layer = getattr(model, attr)
    with torch.no_grad():
        for p in layer.parameters():
            p.zero_()


class StepBatches(Sampler):
    """Batches of (epoch, index) keys for steps start, start+1, ... of a run that walks through shuffled
    epochs: sample k of the run is position k % n of epoch k // n's permutation (seeded by (seed, epoch)).
    A batch therefore depends only on (seed, step): resuming at any step sees the same data."""

    def __init__(self, n: int, batch: int, *, seed: int, start_step: int = 0) -> None:
        if n < 1:
            raise ValueError("the training store is empty")
        self.n, self.batch, self.seed, self.start = n, batch, seed, start_step
        self._perm: tuple[int, list[int]] | None = None

    def _order(self, epoch: int) -> list[int]:
        if self._perm is None or self._perm[0] != epoch:
            g = torch.Generator().manual_seed(int(derive_rng(self.seed, "epoch", epoch).integers(2**62)))
            self._perm = (epoch, torch.randperm(self.n, generator=g).tolist())
        return self._perm[1]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        k = self.start * self.batch
        while True:
            keys = []
            for j in range(k, k + self.batch):
                epoch, pos = divmod(j, self.n)
                keys.append((epoch, self._order(epoch)[pos]))
            yield keys
            k += self.batch


def loop_config(cfg: Config, model: str, strategy: str, steps: int | None = None) -> TrainConfig:
    t, r = cfg.train, cfg.train.recipe(model)
    return TrainConfig(
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
        amp=t.amp,
        channels_last=t.channels_last,
        compile=t.compile,
    )


def finetune(cfg: Config, task: str, model: str, strategy: str, run_dir: Path, *, progress: bool = True) -> dict:
    """Train one cell and write its outputs; returns the train.json contents."""
    from dvclive import Live
    from safetensors.torch import save_file

    if cfg.train.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    torch.manual_seed(cfg.seed)  # the seeded init of everything not loaded from a checkpoint
    pretrained = cfg.pretrained.get(model)
    variant = cfg.variant(model, task)
    net = build_model(model, variant=variant, pretrained=pretrained)
    if pretrained is None:
        start_at_identity(net, model)
    store = open_store(Path(cfg.data.root) / "store" / TASK_DATASET[task] / "train")
    # uint8 batches (4x less to copy); the loop converts to float on the device
    dataset = PairedPatchDataset(store, cfg.train.patch, augment=True, seed=cfg.seed, uint8=True)
    per_step = cfg.train.batch // cfg.train.accumulate
    if per_step < 1 or per_step * cfg.train.accumulate != cfg.train.batch:
        raise ValueError(
            f"train.batch ({cfg.train.batch}) must be a multiple of train.accumulate ({cfg.train.accumulate})"
        )

    def batches(start: int):
        sampler = StepBatches(len(dataset), per_step, seed=cfg.seed, start_step=start * cfg.train.accumulate)
        loader = DataLoader(
            dataset,
            batch_sampler=sampler,
            num_workers=cfg.train.workers,
            pin_memory=torch.cuda.is_available(),
            persistent_workers=cfg.train.workers > 0,
        )
        return iter(loader)

    device = "cuda" if torch.cuda.is_available() else "cpu"
    run_dir.mkdir(parents=True, exist_ok=True)
    loop_cfg = loop_config(cfg, model, strategy)
    started = time.time()
    with Live(dir=str(run_dir / "dvclive"), resume=True, save_dvc_exp=False, dvcyaml=None, report=None) as live:
        live.log_params({"task": task, "model": model, "variant": variant, "strategy": strategy,
                         "init": pretrained or f"random(seed={cfg.seed})"})
        final, result = train(net, batches, loop_cfg, device=device, run_dir=run_dir, live=live, progress=progress)
    weights = {k: v.detach().cpu().contiguous() for k, v in final.state_dict().items()}
    with io.atomic_path(run_dir / "model.safetensors", suffix=".safetensors") as tmp:
        save_file(weights, str(tmp))
    summary = {
        "task": task,
        "model": model,
        "variant": variant,
        "strategy": strategy,
        "pretrain": "none",
        "init": pretrained or f"random(seed={cfg.seed})",
        "steps": result.steps,
        "resumed_from": result.resumed_from,
        "train_seconds": result.seconds,
        "train_images_per_s": result.images_per_s,
        "last_loss": result.last_loss,
        "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
        "wall_seconds": time.time() - started,
        "params_hash": cfg.digest(),
    }
    io.write_json(run_dir / "train.json", summary)
    io.write_json(run_dir / "history.json", result.history)
    return summary
