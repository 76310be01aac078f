"""IPT pretraining (Chen et al., "Pre-Trained Image Processing Transformer", CVPR 2021, Sec. 3.2).

The degrade stage's store holds the clean ImageNet patches; each task's degraded input is synthesised when
an item is drawn, from (seed, item, task, step) (restorebench.data.synth). Each training step is one task,
drawn from (seed, step): its batch goes through that task's head, the shared body with
that task's decoder query, and that task's tail, so only those get gradients. The loss is

    L = L1(output, clean) + lambda * L_contrastive,

where L_contrastive is a supervised contrastive loss (Khosla et al. 2020) over the body's decoder output
tokens: each token is the feature of one patch_dim x patch_dim patch of an input image, the other patches
of the same image are its positives and the patches of every other image in the batch its negatives, the
denominator summing over those negatives only, as IPT's eq. 4 (cosine similarity over temperature tau;
lambda 0.1 and tau 0.07 in params.yaml as IPT uses). IPT feeds
patch_size x patch_size inputs to every task, so an x s SR task reads clean crops of s * patch_size.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from restorebench.config import Config
from restorebench.data.datasets import PairedPatchDataset
from restorebench.data.store import holdout_split
from restorebench.data.synth import open_store
from restorebench.metrics import psnr_torch
from restorebench.models import build_model
from restorebench.models.ipt import variant_patch_size
from restorebench.pretrain.runner import (
    Pretrainer,
    batch_rng,
    guarded_stage,
    run_pretraining,
    stack,
    store_path,
)
from restorebench.train.loop import to_device, use_deterministic


def supervised_contrastive(features: Tensor, labels: Tensor, temperature: float) -> Tensor:
    """IPT's contrastive loss (Chen et al. 2021, eq. 4): for an anchor patch a of image j and a positive p,
    another patch of image j,  -log( exp(s_ap / t) / sum_{n: patches of images k != j} exp(s_an / t) ),
    s = cosine similarity; the denominator sums over patches of *other* images only (no same-image terms,
    no positive). The mean over anchors of the mean over their positives. features (N, D), labels (N,)
    (the image of each patch). Zero (with a graph) when no anchor has both a positive and a negative."""
    z = F.normalize(features.float(), dim=1)
    n = z.shape[0]
    self_mask = torch.eye(n, dtype=torch.bool, device=z.device)
    logits = z @ z.T / temperature
    same = labels[:, None] == labels[None, :]
    positives = same & ~self_mask
    negatives = ~same
    has = (positives.sum(1) > 0) & (negatives.sum(1) > 0)
    if not bool(has.any()):
        return features.sum() * 0.0
    log_denominator = torch.logsumexp(logits.masked_fill(~negatives, float("-inf")), dim=1, keepdim=True)
    pair = (log_denominator - logits).masked_fill(~positives, 0.0)  # -log(exp(s_ap) / denominator)
    per_anchor = pair.sum(1) / positives.sum(1).clamp(min=1)
    return per_anchor[has].mean()


def select_tokens(tokens: Tensor, k: int) -> Tensor:
    """(B, seq, D) -> (B, k, D): k evenly spaced tokens per image (all of them when k is 0 or >= seq)."""
    seq = tokens.shape[1]
    if k <= 0 or k >= seq:
        return tokens
    idx = torch.linspace(0, seq - 1, k, device=tokens.device).round().long()
    return tokens[:, idx]


class IPTTrainee(Pretrainer):
    """forward(lq in [0, 1], task index) -> (restored in ~[0, 1], decoder tokens (B, seq, D))."""

    def forward(self, lq: Tensor, task: int) -> tuple[Tensor, Tensor]:
        ipt = self.model
        out, tokens = ipt.forward_patch(lq * ipt.rgb_range, task, con=True)
        return out / ipt.rgb_range, tokens


class IPTBatches:
    """Step -> (lq, gt, task index): one task per step and `batch` training items, from (seed, step)."""

    def __init__(self, path: Path, tasks: list[str], patch_size: int, items: np.ndarray, batch: int, seed: int,
                 augment: bool = True) -> None:
        self.datasets = []
        for task in tasks:
            store = open_store(path, task=task)
            lq_side = store.shapes[store.lq_name][0]
            scale = store.shapes["gt"][0] // lq_side
            if lq_side < patch_size:
                raise ValueError(
                    f"{path}: task {task!r} has {lq_side}x{lq_side} inputs, smaller than IPT's patch_size "
                    f"{patch_size}; raise degrade.patch to at least {patch_size * scale}"
                )
            self.datasets.append(PairedPatchDataset(store, patch_size * scale, augment=augment, seed=seed, uint8=True))
        self.scales = [ds.scale for ds in self.datasets]
        self.items, self.batch, self.seed = items, batch, seed

    def __call__(self, step: int) -> tuple[Tensor, Tensor, Tensor]:
        rng = batch_rng(self.seed, "ipt", step)
        t = int(rng.integers(len(self.datasets)))
        idx = rng.choice(self.items, size=self.batch, replace=len(self.items) < self.batch)
        lq, gt = stack([self.datasets[t][(step, int(i))] for i in idx])
        return lq, gt, torch.tensor(t)


def ipt_objective(weight: float, temperature: float, tokens_per_image: int, amp: bool = True):
    def objective(forward, batch, device):
        lq, gt, task = batch
        lq, gt = to_device(lq, device), to_device(gt, device)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda" and amp):
            out, tokens = forward(lq, int(task))
        l1 = F.l1_loss(out.float(), gt.float())
        feats = select_tokens(tokens.float(), tokens_per_image)
        b, k, d = feats.shape
        labels = torch.arange(b, device=feats.device).repeat_interleave(k)
        con = supervised_contrastive(feats.reshape(b * k, d), labels, temperature)
        return l1 + weight * con, {"l1": l1.detach(), "contrastive": con.detach()}

    return objective


@torch.no_grad()
def held_out_psnr(trainee: IPTTrainee, data: IPTBatches, items: np.ndarray, names: list[str],
                  batch: int = 32) -> dict[str, float]:
    """PSNR (dB, RGB, [0, 1]) of every task on the held-out items (fixed crops, no augmentation)."""
    ipt = trainee.model
    device = next(ipt.parameters()).device
    was_training = ipt.training
    ipt.eval()
    out: dict[str, float] = {}
    for t, (name, ds) in enumerate(zip(names, data.datasets, strict=True)):
        scores = []
        for start in range(0, len(items), batch):
            lq, gt = stack([ds[(0, int(i))] for i in items[start : start + batch]])
            lq, gt = to_device(lq, device), to_device(gt, device)
            pred = (ipt.forward_patch(lq * ipt.rgb_range, t) / ipt.rgb_range).clamp(0, 1)
            scores.append(psnr_torch(pred.float(), gt.float(), data_range=1.0))
        out[f"val/psnr_{name}"] = float(torch.cat(scores).mean())
    out["val/psnr_mean"] = float(np.mean(list(out.values())))
    ipt.train(was_training)
    return out


def pretrain_ipt(cfg: Config, run_dir: Path, *, progress: bool = True) -> dict:
    """IPT's multi-task pretraining on the degrade store; writes runs/pretrain/ipt/ipt/."""
    if cfg.train.deterministic:
        use_deterministic(cfg.train.compile)
    c = cfg.pretrain.ipt
    if not c.tasks:
        raise ValueError(f"profiles.{cfg.profile}.pretrain.ipt.tasks: empty; map IPT tasks to degrade tasks")
    names, store_tasks = list(c.tasks), list(c.tasks.values())
    path = store_path(cfg)
    store = open_store(path, task=store_tasks[0])
    unknown = [t for t in store_tasks if t not in store.meta["tasks"]]
    if unknown:
        raise ValueError(
            f"profiles.{cfg.profile}.pretrain.ipt.tasks: {unknown} not in the degrade store {path} "
            f"(tasks there: {sorted(store.meta['tasks'])}); add them to degrade.tasks"
        )
    scales = tuple(int(store.meta["tasks"][t]["scale"]) for t in store_tasks)
    train_idx, held_idx = holdout_split(store, cfg.pretrain.holdout, f"profiles.{cfg.profile}.pretrain.holdout")
    torch.manual_seed(cfg.seed)
    ipt = build_model("ipt", variant=c.variant, tasks=tuple(names), scales=scales, num_queries=len(names))
    ipt.start_at_identity_()  # with image_residual (demo): each task starts as its input (bicubic for SR)
    data = IPTBatches(path, store_tasks, ipt.patch_size, train_idx, c.batch, cfg.seed)
    held = IPTBatches(path, store_tasks, ipt.patch_size, held_idx, c.batch, cfg.seed, augment=False)
    trainee = IPTTrainee(ipt)

    def validate(model) -> dict[str, float]:
        return held_out_psnr(model, held, held_idx, names) if len(held_idx) else {}

    return run_pretraining(
        cfg,
        c,
        trainee,
        method="ipt",
        model="ipt",
        make_batch=data,
        objective=ipt_objective(c.contrastive_weight, c.temperature, c.tokens_per_image, amp=cfg.train.amp),
        validate=validate,
        run_dir=run_dir,
        metrics_path=Path("metrics/pretrain/ipt/ipt.json"),
        # task_names and scales in the order of the heads (JSON objects are written with sorted keys)
        params={"variant": c.variant, "tasks": dict(c.tasks), "task_names": names, "scales": data.scales,
                "contrastive_weight": c.contrastive_weight, "temperature": c.temperature,
                "tokens_per_image": c.tokens_per_image},
        progress=progress,
    )


def pretrain_stage(cfg: Config, run_dir: Path) -> dict:
    """The `pretrain --method ipt` stage: pretrain_ipt, its out-of-memory end a one-line error. IPT trains on
    inputs of its variant's tile size."""
    c = cfg.pretrain.ipt
    return guarded_stage(cfg, lambda: pretrain_ipt(cfg, run_dir), method="ipt", model="ipt", task=None,
                         batch=c.batch, patch=variant_patch_size(c.variant))  # fmt: skip
