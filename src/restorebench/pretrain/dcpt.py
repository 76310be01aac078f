"""DCPT pretraining (Hu et al., "Universal Image Restoration Pre-training via Degradation Classification",
ICLR 2025), for any model in MODELS.

Forward hooks collect the model's multi-scale decoder features (`decoder_features()`: the modules whose outputs
are the decoder's feature maps, coarse to fine). A light classifier (per scale: 1x1 projection and a
bottleneck block; global average pooling; one linear layer over the concatenation) predicts which
degradation an input carries, among `pretrain.dcpt.degradations` (tasks of the degrade store). Each step
adds, as the official DCPT model does, the pixel loss of reconstructing the clean image (the model fed the
clean image) and the cross-entropy of classifying the degraded one from the hooked features.

DCPT's motivating finding is that the decoder features of a randomly initialised restoration network
already separate degradation types; `knn_accuracy` measures that (cosine k-NN on pooled hooked features,
held-out images as queries) at initialisation and after pretraining, both reported as metrics.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from restorebench.config import Config
from restorebench.data.datasets import PairedPatchDataset
from restorebench.data.store import holdout_split, open_store
from restorebench.pretrain.runner import (
    Pretrainer,
    batch_rng,
    run_pretraining,
    stack,
    store_path,
)
from restorebench.train.loop import to_device


def _as_maps(output) -> list[Tensor]:
    """A hooked module's output as (N, C, H, W) maps: tensors pass, token sequences (seq, N, D) with a
    square seq become (N, D, g, g), pixel-decoder outputs give their multi-scale maps + mask features."""
    if hasattr(output, "multi_scale_features"):
        return [*output.multi_scale_features, output.mask_features]
    if isinstance(output, tuple | list):
        output = output[0]
    if output.ndim == 4:
        return [output]
    if output.ndim == 3:
        seq, n, d = output.shape
        g = int(round(seq**0.5))
        if g * g != seq:
            raise ValueError(f"token features of length {seq} are not a square grid")
        return [output.permute(1, 2, 0).reshape(n, d, g, g)]
    raise ValueError(f"cannot read decoder features of shape {tuple(output.shape)}")


class FeatureHooks:
    """Forward hooks on a model's decoder modules; `take()` returns (and clears) the maps of the last pass."""

    def __init__(self, model: nn.Module) -> None:
        self.names = []
        self._calls: list[tuple[int, list[Tensor]]] = []  # (id of the module, its maps)
        self._handles = []
        self.enabled = True
        for name, module in model.decoder_features():
            self.names.append(name)
            self._handles.append(module.register_forward_hook(self._hook))

    def _hook(self, module, inputs, output) -> None:
        if self.enabled:
            self._calls.append((id(module), _as_maps(output)))

    def take(self) -> list[Tensor]:
        """The maps of the last pass, in hook order. A module run more than once in a pass (IPT runs its body
        on chunks of tiles, as many as the batch size dictates) gives each of its maps once, the chunks
        concatenated along the batch dimension, so the count does not depend on the batch."""
        calls, self._calls = self._calls, []
        runs: dict[int, list[list[Tensor]]] = {}
        for key, maps in calls:
            runs.setdefault(key, []).append(maps)
        return [torch.cat(p) if len(p) > 1 else p[0] for r in runs.values() for p in zip(*r, strict=True)]

    def remove(self) -> None:
        for h in self._handles:
            h.remove()


def pooled(maps: Sequence[Tensor], batch: int) -> list[Tensor]:
    """Global average pool each map to (batch, C). A model that tiles its input (IPT) runs its decoder on
    tiles x batch items, tile-major; their pooled features are averaged back to one per image."""
    out = []
    for m in maps:
        p = m.float().mean(dim=(2, 3))
        if p.shape[0] != batch:
            if p.shape[0] % batch:
                raise ValueError(f"decoder features for {p.shape[0]} items, not a multiple of the batch {batch}")
            p = p.view(-1, batch, p.shape[1]).mean(0)
        out.append(p)
    return out


class Bottleneck(nn.Module):
    """ResNet bottleneck: 1x1 reduce, 3x3, 1x1 expand, residual; GroupNorm (batch-size independent)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        mid = max(width // 4, 1)
        self.body = nn.Sequential(
            nn.Conv2d(width, mid, 1, bias=False), nn.GroupNorm(1, mid), nn.ReLU(inplace=True),
            nn.Conv2d(mid, mid, 3, padding=1, bias=False), nn.GroupNorm(1, mid), nn.ReLU(inplace=True),
            nn.Conv2d(mid, width, 1, bias=False), nn.GroupNorm(1, width),
        )  # fmt: skip

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(x + self.body(x))


class DegradationClassifier(nn.Module):
    """Hooked maps (one per entry of `channels`) -> logits over `classes` degradation types."""

    def __init__(self, channels: Sequence[int], classes: int, width: int = 64) -> None:
        super().__init__()
        self.proj = nn.ModuleList(nn.Conv2d(c, width, 1) for c in channels)
        self.blocks = nn.ModuleList(Bottleneck(width) for _ in channels)
        self.fc = nn.Linear(width * len(channels), classes)

    def forward(self, maps: Sequence[Tensor], batch: int) -> Tensor:
        if len(maps) != len(self.proj):
            raise ValueError(f"classifier built for {len(self.proj)} feature maps, got {len(maps)}")
        feats = [block(proj(m.float())) for proj, block, m in zip(self.proj, self.blocks, maps, strict=True)]
        return self.fc(torch.cat(pooled(feats, batch), dim=1))


class DCPTTrainee(Pretrainer):
    """forward(lq, gt) -> (reconstruction of gt from gt, degradation logits of lq)."""

    def __init__(self, model: nn.Module, hooks: FeatureHooks, classifier: DegradationClassifier) -> None:
        super().__init__(model, classifier)
        self.hooks = hooks

    def forward(self, lq: Tensor, gt: Tensor) -> tuple[Tensor, Tensor]:
        self.hooks.enabled = False
        recon = self.model(gt)
        self.hooks.enabled = True
        self.hooks.take()
        self.model(lq)
        return recon, self.extra(self.hooks.take(), lq.shape[0])


def probe_channels(model: nn.Module, hooks: FeatureHooks, patch: int) -> list[int]:
    """Channels of each hooked map, from one forward pass on a blank patch."""
    p = next(model.parameters())
    was = model.training
    model.eval()  # a batch of one through BatchNorm (UperNet's pooling module) fails in training mode
    with torch.no_grad():
        hooks.take()
        model(torch.zeros(1, 3, patch, patch, device=p.device, dtype=p.dtype))
        maps = hooks.take()
    model.train(was)
    if not maps:
        raise ValueError(f"DCPT hooks on {hooks.names} saw no features")
    return [m.shape[1] for m in maps]


class DCPTBatches:
    """Step -> (lq, gt, label): `batch` items, each of a degradation type drawn from (seed, step)."""

    def __init__(self, path: Path, degradations: Sequence[str], patch: int, items: np.ndarray, batch: int,
                 seed: int, augment: bool = True) -> None:
        self.datasets = []
        for task in degradations:
            ds = PairedPatchDataset(path, patch, augment=augment, seed=seed, task=task, uint8=True)
            if ds.scale != 1:
                raise ValueError(f"pretrain.dcpt.degradations: {task!r} changes the image size (x1/{ds.scale})")
            self.datasets.append(ds)
        self.items, self.batch, self.seed = items, batch, seed

    def __call__(self, step: int) -> tuple[Tensor, Tensor, Tensor]:
        rng = batch_rng(self.seed, "dcpt", step)
        labels = rng.integers(len(self.datasets), size=self.batch)
        idx = rng.choice(self.items, size=self.batch, replace=len(self.items) < self.batch)
        lq, gt = stack([self.datasets[c][(step, int(i))] for c, i in zip(labels, idx, strict=True)])
        return lq, gt, torch.as_tensor(labels, dtype=torch.long)

    def labelled(self, items: np.ndarray) -> list[tuple[Tensor, Tensor, int]]:
        """Every (item, degradation) pair of `items` with a fixed crop: the k-NN / validation set."""
        return [(*ds[(0, int(i))], c) for c, ds in enumerate(self.datasets) for i in items]


def dcpt_objective(classify_weight: float, amp: bool = True):
    def objective(forward, batch, device):
        lq, gt, labels = batch
        lq, gt, labels = to_device(lq, device), to_device(gt, device), labels.to(device)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda" and amp):
            recon, logits = forward(lq, gt)
        pixel = F.l1_loss(recon.float(), gt.float())
        classify = F.cross_entropy(logits.float(), labels)
        accuracy = (logits.argmax(1) == labels).float().mean()
        return pixel + classify_weight * classify, {
            "pixel": pixel.detach(), "classify": classify.detach(), "accuracy": accuracy.detach(),
        }  # fmt: skip

    return objective


@torch.no_grad()
def hooked_features(model: nn.Module, hooks: FeatureHooks, items, batch: int = 32) -> tuple[Tensor, Tensor]:
    """Pooled, L2-normalised hooked features (N, D) of `items` [(lq, gt, label)] and their labels (N,)."""
    device = next(model.parameters()).device
    was = model.training
    model.eval()
    feats, labels = [], []
    for start in range(0, len(items), batch):
        chunk = items[start : start + batch]
        lq = to_device(torch.stack([c[0] for c in chunk]), device)
        hooks.take()
        model(lq)
        feats.append(torch.cat(pooled(hooks.take(), len(chunk)), dim=1).cpu())
        labels.extend(c[2] for c in chunk)
    model.train(was)
    return F.normalize(torch.cat(feats), dim=1), torch.as_tensor(labels)


def knn_accuracy(train_f: Tensor, train_y: Tensor, query_f: Tensor, query_y: Tensor, k: int) -> float:
    """Accuracy of a cosine k-NN vote (ties: the class whose voters are nearest in total similarity)."""
    k = min(k, len(train_f))
    sim = query_f @ train_f.T
    top, idx = sim.topk(k, dim=1)
    classes = int(max(train_y.max(), query_y.max())) + 1
    # float64: in float32, 1e-6 * similarity is below the resolution of a vote count, and ties go to class 0
    votes = torch.zeros(len(query_f), classes, dtype=torch.float64)
    votes.scatter_add_(1, train_y[idx], torch.ones_like(top, dtype=torch.float64))
    votes += 1e-6 * torch.zeros_like(votes).scatter_add_(1, train_y[idx], top.double())  # tie-break
    return float((votes.argmax(1) == query_y).float().mean())


def pretrain_dcpt(cfg: Config, model_name: str, task: str, run_dir: Path, *, progress: bool = True) -> dict:
    """DCPT pretraining of MODEL (TASK's variant and init) on the degrade store; writes
    runs/pretrain/dcpt/{task}/{model}/."""
    from restorebench.train.finetune import init_model

    if cfg.train.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    c = cfg.pretrain.dcpt
    if len(c.degradations) < 2:
        raise ValueError(f"profiles.{cfg.profile}.pretrain.dcpt.degradations: need at least two types")
    path = store_path(cfg)
    store = open_store(path, task=c.degradations[0])
    unknown = [t for t in c.degradations if t not in store.meta["tasks"]]
    if unknown:
        raise ValueError(
            f"profiles.{cfg.profile}.pretrain.dcpt.degradations: {unknown} not in the degrade store {path} "
            f"(tasks there: {sorted(store.meta['tasks'])}); add them to degrade.tasks"
        )
    train_idx, held_idx = holdout_split(store, cfg.pretrain.holdout, f"profiles.{cfg.profile}.pretrain.holdout")
    data = DCPTBatches(path, c.degradations, c.patch, train_idx, c.batch, cfg.seed)
    fixed = DCPTBatches(path, c.degradations, c.patch, train_idx, c.batch, cfg.seed, augment=False)
    rng = np.random.default_rng(cfg.seed)
    per_class = max(1, c.knn_max_train // len(c.degradations))
    ref_items = np.sort(rng.choice(train_idx, size=min(per_class, len(train_idx)), replace=False))
    reference = fixed.labelled(ref_items)
    queries = fixed.labelled(held_idx) if len(held_idx) else reference

    torch.manual_seed(cfg.seed)
    model, init = init_model(cfg, model_name, task)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)
    hooks = FeatureHooks(model)
    channels = probe_channels(model, hooks, c.patch)
    classifier = DegradationClassifier(channels, len(c.degradations), c.classifier_width)
    trainee = DCPTTrainee(model, hooks, classifier)

    def knn(t: DCPTTrainee) -> float:
        ref_f, ref_y = hooked_features(t.model, t.hooks, reference)
        q_f, q_y = hooked_features(t.model, t.hooks, queries)
        return knn_accuracy(ref_f, ref_y, q_f, q_y, c.knn_k)

    @torch.no_grad()
    def validate(t: DCPTTrainee) -> dict[str, float]:  # t: the trainee, or its EMA copy (own hooks)
        correct = 0
        was = t.training
        t.eval()
        for start in range(0, len(queries), 32):
            chunk = queries[start : start + 32]
            lq = to_device(torch.stack([q[0] for q in chunk]), next(t.parameters()).device)
            t.hooks.take()
            t.model(lq)
            logits = t.extra(t.hooks.take(), len(chunk))
            correct += int((logits.argmax(1).cpu() == torch.as_tensor([q[2] for q in chunk])).sum())
        t.train(was)
        return {"val/classifier_accuracy": correct / len(queries), "val/knn_accuracy": knn(t)}

    before = {"knn_accuracy_init": knn(trainee), "chance": 1.0 / len(c.degradations)}
    return run_pretraining(
        cfg,
        c,
        trainee,
        method="dcpt",
        model=model_name,
        make_batch=data,
        objective=dcpt_objective(c.classify_weight, amp=cfg.train.amp),
        validate=validate,
        run_dir=run_dir,
        metrics_path=Path("metrics/pretrain/dcpt") / task / f"{model_name}.json",
        params={"task": task, "variant": cfg.variant(model_name, task), "init": init,
                "degradations": list(c.degradations), "hooks": hooks.names, "channels": channels,
                "patch": c.patch, "classifier_width": c.classifier_width, "classify_weight": c.classify_weight},
        before=before,
        progress=progress,
    )
