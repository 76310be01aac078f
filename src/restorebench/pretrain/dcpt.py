"""DCPT pretraining (Hu et al., "Universal Image Restoration Pre-training via Degradation Classification",
ICLR 2025), for any model in MODELS.

Forward hooks collect the model's multi-scale decoder features (`decoder_features()`: the modules whose outputs
are the decoder's feature maps, coarse to fine). DCPT's released classifier (`DegradationClassifier`) fuses
them in sequence, finest first, and predicts which degradation an input carries, among
`pretrain.dcpt.degradations` (tasks of the degrade store, each degraded input synthesised for its draw from
(seed, item, task, step): restorebench.data.synth; the k-NN and validation sets use draw 0). Each step
adds, as the official DCPT model does, the pixel loss of reconstructing the clean image (the model fed the
clean image) and the cross-entropy of classifying the degraded one from the hooked features.

DCPT's motivating finding is that the decoder features of a randomly initialised restoration network
already separate degradation types; `knn_split_accuracy` measures it by the released procedure
(MILab-PKU/dcpt knn_gen.py, knn.py): the features just before the restoration head, flattened, Euclidean
k-NN with k=5, a 2:1 train/test split, mean over the release's five split seeds; at initialisation and after
pretraining, both reported as metrics.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from restorebench.config import Config
from restorebench.data.datasets import PairedPatchDataset
from restorebench.data.store import holdout_split
from restorebench.data.synth import open_store
from restorebench.pretrain.runner import (
    Pretrainer,
    batch_rng,
    guarded_stage,
    run_pretraining,
    stack,
    store_path,
)
from restorebench.train.loop import to_device, use_deterministic


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


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of (N, C, H, W) maps (eps 1e-6): the "LN" of DCPT's classifier."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        u = x.mean(1, keepdim=True)
        v = (x - u).pow(2).mean(1, keepdim=True)
        return self.weight[:, None, None] * (x - u) / torch.sqrt(v + self.eps) + self.bias[:, None, None]


class Bottleneck(nn.Module):
    """Detectron2's BottleneckBlock as DCPT's classifier builds it (MILab-PKU/dcpt
    basicsr/archs/degrad_classify_arch.py): 1x1 -> 3x3 -> 1x1 convolutions without bias, each followed by
    a channel LayerNorm, ReLU after the first two, the bottleneck twice as wide as the block
    (bottleneck_channels = 2 x width), identity shortcut, ReLU; MSRA fill (c2_msra_fill) init."""

    def __init__(self, width: int) -> None:
        super().__init__()
        mid = 2 * width
        self.conv1, self.norm1 = nn.Conv2d(width, mid, 1, bias=False), LayerNorm2d(mid)
        self.conv2, self.norm2 = nn.Conv2d(mid, mid, 3, padding=1, bias=False), LayerNorm2d(mid)
        self.conv3, self.norm3 = nn.Conv2d(mid, width, 1, bias=False), LayerNorm2d(width)
        for conv in (self.conv1, self.conv2, self.conv3):
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.norm1(self.conv1(x)))
        out = F.relu(self.norm2(self.conv2(out)))
        return F.relu(self.norm3(self.conv3(out)) + x)


def _pool_to(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Max-pool x to `size` (MaxPool2d(2, 2) when size is half of x's, as DCPT's maps are); a smaller x is
    resized up (nearest): decoders whose scales do not halve (IPT's equal-size token maps)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if x.shape[-2] >= size[0] and x.shape[-1] >= size[1]:
        return F.adaptive_max_pool2d(x, size)
    return F.interpolate(x, size=size, mode="nearest")


class DegradationClassifier(nn.Module):
    """DCPT's released degradation classifier (PromptIR_NoImg_DC in MILab-PKU/dcpt
    basicsr/archs/degrad_classify_arch.py), which fuses the hooked scales in sequence, finest first:

        state = 0
        for scale i (fine -> coarse):  state = down_i(blocks_i(state + softmax(w)_i * map_i))
        logits = fc(mean_hw(last_stage(state)))

    blocks_i: two bottlenecks at map i's width; down_i: 1x1 conv to the next map's width, max-pool 2, ReLU;
    last_stage: two bottlenecks; w: one learnt mixing weight per scale (softmax). The released model feeds
    the hooks' outputs reversed (the decoder runs coarse to fine; `hook_outputs[::-1]`), so `forward` takes
    the maps coarse to fine, as FeatureHooks gives them, and reverses them.

    width 0 keeps the maps' own widths (the release); width > 0 first projects every map to `width` with a
    1x1 conv (a lighter classifier: a deviation, for the demo's CPU budget).
    """

    def __init__(self, channels: Sequence[int], classes: int, width: int = 0, blocks: int = 2) -> None:
        super().__init__()
        fine_first = list(channels)[::-1]
        self.proj = nn.ModuleList(nn.Conv2d(c, width, 1) for c in fine_first) if width > 0 else None
        dims = [width] * len(fine_first) if width > 0 else fine_first
        self.stages = nn.ModuleList(nn.Sequential(*(Bottleneck(d) for _ in range(blocks))) for d in dims)
        nxt = [*dims[1:], dims[-1]]
        self.down = nn.ModuleList(nn.Conv2d(a, b, 1, bias=False) for a, b in zip(dims, nxt, strict=True))
        for conv in self.down:
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
        self.last_stage = nn.Sequential(*(Bottleneck(dims[-1]) for _ in range(blocks)))
        self.mixing_weights = nn.Parameter(torch.ones(len(dims)))
        self.fc = nn.Linear(dims[-1], classes)

    def forward(self, maps: Sequence[Tensor], batch: int) -> Tensor:
        """maps: the hooked maps coarse to fine, each (batch x tiles, C_i, H_i, W_i) -> logits (batch, classes).
        A model that tiles its input (IPT) gives tiles x batch items, tile-major: the pooled features are
        averaged over each image's tiles before the linear layer."""
        if len(maps) != len(self.stages):
            raise ValueError(f"classifier built for {len(self.stages)} feature maps, got {len(maps)}")
        maps = [m.float() for m in maps][::-1]
        if self.proj is not None:
            maps = [proj(m) for proj, m in zip(self.proj, maps, strict=True)]
        weights = torch.softmax(self.mixing_weights, dim=0)
        state: Tensor | float = 0.0
        for i, (stage, down, feature) in enumerate(zip(self.stages, self.down, maps, strict=True)):
            if isinstance(state, Tensor):
                state = _pool_to(state, tuple(feature.shape[-2:]))
            state = F.relu(down(stage(state + weights[i] * feature)))
            if i + 1 < len(maps):
                continue
            h, w = state.shape[-2:]
            state = F.max_pool2d(state, 2) if min(h, w) >= 2 else state
        pooled_state = self.last_stage(state).mean(dim=(2, 3))
        if pooled_state.shape[0] != batch:
            if pooled_state.shape[0] % batch:
                raise ValueError(f"features for {pooled_state.shape[0]} items, not a multiple of the batch {batch}")
            pooled_state = pooled_state.view(-1, batch, pooled_state.shape[1]).mean(0)
        return self.fc(pooled_state)


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
def knn_features(model: nn.Module, hooks: FeatureHooks, items, batch: int = 16) -> tuple[Tensor, Tensor]:
    """DCPT's k-NN features (MILab-PKU/dcpt knn_gen.py): the last hooked map, the decoder's output just
    before the restoration head, flattened per image (`reshape(1, -1)`), unnormalised. items: [(lq, _, label)];
    returns (N, D) float32 features and (N,) labels. A tiling model (IPT) gives each image its tiles' maps,
    concatenated in tile order."""
    device = next(model.parameters()).device
    was = model.training
    model.eval()
    feats, labels = [], []
    for start in range(0, len(items), batch):
        chunk = items[start : start + batch]
        lq = to_device(torch.stack([c[0] for c in chunk]), device)
        hooks.take()
        model(lq)
        last = hooks.take()[-1].float()
        n = len(chunk)
        if last.shape[0] != n:  # tile-major: (tiles * n, C, h, w) -> (n, tiles * C * h * w)
            last = last.view(-1, n, *last.shape[1:]).transpose(0, 1)
        feats.append(last.reshape(n, -1).cpu())
        labels.extend(c[2] for c in chunk)
    model.train(was)
    return torch.cat(feats), torch.as_tensor(labels)


def knn_accuracy(train_f: Tensor, train_y: Tensor, query_f: Tensor, query_y: Tensor, k: int) -> float:
    """Accuracy of scikit-learn's KNeighborsClassifier(n_neighbors=k) defaults: Euclidean distance, uniform
    votes among the k nearest, a tie between classes going to the smallest label (scipy's mode)."""
    k = min(k, len(train_f))
    dist = torch.cdist(query_f.double(), train_f.double())
    idx = dist.topk(k, dim=1, largest=False).indices
    classes = int(max(train_y.max(), query_y.max())) + 1
    votes = torch.zeros(len(query_f), classes, dtype=torch.long)
    votes.scatter_add_(1, train_y[idx], torch.ones_like(idx))
    # argmax returns the first maximum: the smallest label among tied classes
    return float((votes.argmax(1) == query_y).float().mean())


KNN_SEEDS = (0, 223, 929, 1234, 10086)  # MILab-PKU/dcpt knn.py: randoms = [0, 223, 929, 1234, 10086]


def knn_split_accuracy(features: Tensor, labels: Tensor, k: int = 5, test_size: float = 0.33,
                       seeds: Sequence[int] = KNN_SEEDS) -> float:
    """DCPT's k-NN finding (MILab-PKU/dcpt knn.py): for each seed, scikit-learn's train_test_split(test_size=
    0.33, random_state=seed) (a RandomState permutation; the first ceil(0.33 n) items are the test set),
    k-NN (k=5) fitted on the rest; the mean accuracy over the five seeds."""
    n = len(features)
    n_test = math.ceil(test_size * n)
    if n_test < 1 or n - n_test < 1:
        raise ValueError(f"k-NN split of {n} items leaves an empty side (test_size {test_size})")
    scores = []
    for seed in seeds:
        perm = torch.as_tensor(np.random.RandomState(seed).permutation(n))
        test, train = perm[:n_test], perm[n_test:]
        scores.append(knn_accuracy(features[train], labels[train], features[test], labels[test], k))
    return float(np.mean(scores))


def knn_items(data: DCPTBatches, pool: np.ndarray, per_class: int, seed: int) -> tuple[list, bool]:
    """`per_class` fixed (unaugmented) crops of each degradation, as DCPT's knn_gen.py takes 100 images of
    each degradation's own test set: the images of different degradations are disjoint when the pool holds
    enough (returns True), else drawn for each degradation independently (False)."""
    rng = np.random.default_rng([seed, 0x4B4E4E])
    classes = len(data.datasets)
    per_class = min(per_class, len(pool))
    disjoint = len(pool) >= classes * per_class
    order = rng.permutation(pool)
    out = []
    for c, ds in enumerate(data.datasets):
        chosen = order[c * per_class : (c + 1) * per_class] if disjoint else rng.choice(pool, per_class, replace=False)
        out.extend((*ds[(0, int(i))], c) for i in np.sort(chosen))
    return out, disjoint


def pretrain_dcpt(cfg: Config, model_name: str, task: str, run_dir: Path, *, progress: bool = True) -> dict:
    """DCPT pretraining of MODEL (TASK's variant and init) on the degrade store; writes
    runs/pretrain/dcpt/{task}/{model}/."""
    from restorebench.train.finetune import init_model

    if cfg.train.deterministic:
        use_deterministic(cfg.train.compile)
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
    pool = held_idx if len(held_idx) else train_idx
    knn_set, disjoint = knn_items(fixed, pool, c.knn_images, cfg.seed)
    queries = fixed.labelled(held_idx) if len(held_idx) else fixed.labelled(train_idx[: max(1, c.batch)])

    torch.manual_seed(cfg.seed)
    model, init = init_model(cfg, model_name, task)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)
    hooks = FeatureHooks(model)
    channels = probe_channels(model, hooks, c.patch)
    classifier = DegradationClassifier(channels, len(c.degradations), c.classifier_width)
    trainee = DCPTTrainee(model, hooks, classifier)

    def knn(t: DCPTTrainee) -> float:  # DCPT's released k-NN procedure (knn_split_accuracy)
        feats, labels = knn_features(t.model, t.hooks, knn_set)
        return knn_split_accuracy(feats, labels, c.knn_k)

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
                "patch": c.patch, "classifier_width": c.classifier_width, "classify_weight": c.classify_weight,
                "knn": {"images_per_degradation": c.knn_images, "items": len(knn_set), "disjoint_images": disjoint,
                        "k": c.knn_k, "test_size": 0.33, "seeds": list(KNN_SEEDS), "feature": hooks.names[-1]}},
        before=before,
        progress=progress,
    )


def pretrain_stage(cfg: Config, model: str, task: str, run_dir: Path) -> dict:
    """The `pretrain --method dcpt` stage: pretrain_dcpt, its out-of-memory end a one-line error."""
    c = cfg.pretrain.dcpt
    return guarded_stage(cfg, lambda: pretrain_dcpt(cfg, model, task, run_dir), method="dcpt", model=model,
                         task=task, batch=c.batch, patch=c.patch)  # fmt: skip
