"""Torch datasets and the loader: random patches from packed stores, batches keyed by training step.

Reproducibility: every sample's randomness (crop position, flip/rotation, degradation) is a pure
function of (seed, epoch, index) (`derive_rng`, or `counter_ints` for the store's crops), never from the worker, the global numpy/torch RNG or the order
in which workers run. Shuffling uses a torch.Generator seeded from (seed, epoch). So the same seed gives
the same batches with any number of workers.

`step_loader` samples keys (epoch, index) rather than bare indices: the epoch travels with each key,
so persistent workers (which hold their own copy of the dataset) see the epoch of every item they
load. The dataset also accepts a bare int index (using its own `set_epoch`).

Tensors: float32, CHW, in [0, 1].
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from restorebench.data.store import Store
from restorebench.data.synth import open_store
from restorebench.degrade.rng import derive_rng


def to_tensor(img: np.ndarray, k: int = 0, *, uint8: bool = False) -> torch.Tensor:
    """HxWxC uint8 (0-255) or float ([0, 1]) -> float32 CHW tensor in [0, 1], with dihedral transform
    k (see `dihedral`) applied. uint8=True keeps a uint8 image as a uint8 CHW tensor (0-255).

    Copies the HWC crop row-wise, transposes to CHW in uint8, then rotates/flips in torch: about 3x
    faster than converting numpy's rotated views, whose copy loops run over the 3-channel axis.
    """
    t = torch.from_numpy(np.require(img, requirements=["C", "W"])).permute(2, 0, 1).contiguous()
    if k % 4:
        t = torch.rot90(t, k % 4, (1, 2))
    if k >= 4:
        t = t.flip(2)
    if img.dtype == np.uint8:
        return t if uint8 else t.float().div_(255.0)
    return t.float()


def dihedral(img: np.ndarray, k: int) -> np.ndarray:
    """One of the 8 flips/rotations of an HxWxC array: rotate by 90 * (k % 4) degrees, then flip
    left-right when k >= 4 (a view, no copy). Same result as `to_tensor(img, k)`, in HWC."""
    out = np.rot90(img, k % 4, axes=(0, 1))
    return out[:, ::-1] if k >= 4 else out


_M64 = (1 << 64) - 1


def _splitmix64(z: int) -> int:
    z = (z + 0x9E3779B97F4A7C15) & _M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return z ^ (z >> 31)


def counter_ints(seed: int, epoch: int, index: int, bounds: Sequence[int]) -> list[int]:
    """Integers in [0, b) for each b in `bounds`, a pure function of (seed, epoch, index).

    SplitMix64 (Steele et al. 2014) as a counter-based generator: ~1 us instead of the ~60 us of
    building a numpy Generator, which matters in the loader's hot loop (tens of thousands of patches/s
    per core). Modulo bias is below 2**-40 for the bounds used here (< 2**24).
    """
    state = _splitmix64(_splitmix64(_splitmix64(seed & _M64) ^ (epoch & _M64)) ^ (index & _M64))
    return [_splitmix64(state + k) % b for k, b in enumerate(bounds)]


def _key(index: Any, epoch: int) -> tuple[int, int]:
    if isinstance(index, tuple):
        return int(index[0]), int(index[1])
    return epoch, int(index)


class PairedPatchDataset(Dataset):
    """Random patch x patch crops (gt size) from a store's sub-images with the 8 dihedral augmentations.

    store: a Store or a store folder (with `task` for a degradation store, whose lq is synthesised per
    draw from (seed, item, task, epoch): restorebench.data.synth). For SR stores the lq crop is patch /
    scale at the matching position. Returns (lq, gt), or (lq, gt, label) with with_label=True.
    uint8=True returns uint8 CHW tensors (0-255) instead: 4x less memory traffic through collation and
    pinning; convert on the device with `.float().div_(255)`.
    """

    def __init__(
        self,
        store: Store | str | Path,
        patch: int,
        *,
        augment: bool = True,
        seed: int = 0,
        task: str | None = None,
        with_label: bool = False,
        uint8: bool = False,
    ):
        self.store = store if isinstance(store, Store) else open_store(store, task=task)
        gh, gw, _ = self.store.shapes[self.store.gt_name]
        lh, lw, _ = self.store.shapes[self.store.lq_name]
        self.scale = gh // lh
        if lh * self.scale != gh or lw * self.scale != gw:
            raise ValueError(f"{self.store.path}: gt {gh}x{gw} is not an integer multiple of lq {lh}x{lw}")
        if patch > gh or patch > gw:
            raise ValueError(
                f"patch={patch} is larger than the sub-images {gh}x{gw} of store {self.store.path}"
            )
        if patch < 1 or patch % self.scale:
            raise ValueError(f"patch={patch} must be a positive multiple of the scale {self.scale}")
        self.patch, self.augment, self.seed, self.with_label = patch, augment, seed, with_label
        self.uint8 = uint8
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.store)

    def __getitem__(self, index: int | tuple[int, int]) -> tuple:
        epoch, i = _key(index, self.epoch)
        s, lp = self.scale, self.patch // self.scale
        lh, lw, _ = self.store.shapes[self.store.lq_name]
        y, x, k = counter_ints(self.seed, epoch, i, (lh - lp + 1, lw - lp + 1, 8))
        # a synthesising store degrades this crop for this draw (epoch: a pretraining step)
        lq, gt, meta = self.store.get(i, seed=self.seed, draw=epoch, crop=(y * s, x * s, self.patch))
        k = k if self.augment else 0
        out = (to_tensor(lq, k, uint8=self.uint8), to_tensor(gt, k, uint8=self.uint8))
        return (*out, int(meta.get("label", -1))) if self.with_label else out


class StepBatches(Sampler):
    """Batches of (epoch, index) keys for steps start, start+1, ... of a run that walks through shuffled
    epochs: sample k of the run is position k % n of epoch k // n's permutation (seeded by (seed, epoch)).
    A batch therefore depends only on (seed, step): resuming at any step sees the same data. The one batch
    sampler of the project (finetuning, the loader benchmark)."""

    def __init__(self, n: int, batch: int, *, seed: int, start_step: int = 0, first_sample: int | None = None) -> None:
        if n < 1:
            raise ValueError("the training store is empty")
        self.n, self.batch, self.seed = n, batch, seed
        # the run's sample counter at the first batch (progressive stages start where the last stopped)
        self.first = start_step * batch if first_sample is None else first_sample
        self._perm: tuple[int, list[int]] | None = None

    def _order(self, epoch: int) -> list[int]:
        if self._perm is None or self._perm[0] != epoch:
            g = torch.Generator().manual_seed(int(derive_rng(self.seed, "epoch", epoch).integers(2**62)))
            self._perm = (epoch, torch.randperm(self.n, generator=g).tolist())
        return self._perm[1]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        k = self.first
        while True:
            keys = []
            for j in range(k, k + self.batch):
                epoch, pos = divmod(j, self.n)
                keys.append((epoch, self._order(epoch)[pos]))
            yield keys
            k += self.batch


class Items(Dataset):
    """The items `index` of a dataset keyed by (epoch, i): key (epoch, k) reads item index[k]."""

    def __init__(self, dataset: Dataset, index: np.ndarray) -> None:
        self.dataset, self.index = dataset, np.asarray(index)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, key: tuple[int, int]):
        epoch, k = key
        return self.dataset[(epoch, int(self.index[k]))]


def step_loader(
    dataset: Dataset,
    batch: int,
    *,
    seed: int,
    start_step: int = 0,
    first_sample: int | None = None,
    workers: int = 0,
    pin_memory: bool | None = None,
) -> Iterator:
    """Endless batches of `batch` items for steps start_step, start_step + 1, ... (StepBatches: a pure
    function of (seed, step), the same for any number of `workers` loader processes); `first_sample`
    starts at that sample of the run instead (progressive stages). pin_memory: None = when CUDA is
    available."""
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    loader = DataLoader(
        dataset,
        batch_sampler=StepBatches(len(dataset), batch, seed=seed, start_step=start_step, first_sample=first_sample),
        num_workers=workers,
        pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory,
        persistent_workers=workers > 0,
    )
    return iter(loader)
