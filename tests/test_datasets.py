"""Datasets and loaders: paired crops and augmentation, errors, determinism across worker counts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from restorebench.data.datasets import (
    Items,
    PairedPatchDataset,
    StepBatches,
    dihedral,
    step_loader,
    to_tensor,
)
from restorebench.data.store import StoreWriter
from restorebench.degrade.stage import degrade_store


@pytest.fixture()
def store(tmp_path: Path) -> Path:
    """12 sub-images of 32x32 where lq = 255 - gt (so a pair's alignment is checkable)."""
    rng = np.random.default_rng(0)
    with StoreWriter(tmp_path / "store", {"lq": (32, 32, 3), "gt": (32, 32, 3)}) as w:
        for i in range(12):
            gt = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
            w.add(id=f"s{i}", image=f"img{i // 4}", lq=255 - gt, gt=gt)
    return tmp_path / "store"


def batches(loader, steps: int = 6) -> list[list[torch.Tensor]]:
    return [[t.clone() for t in next(loader)] for _ in range(steps)]


def test_dihedral_gives_eight_distinct_views():
    a = np.arange(12).reshape(3, 4, 1)
    views = {dihedral(a, k).tobytes() + bytes(dihedral(a, k).shape) for k in range(8)}
    assert len(views) == 8


def test_paired_patches_aligned_and_augmented(store):
    ds = PairedPatchDataset(store, 16, seed=1)
    seen = set()
    for i in range(len(ds)):
        for epoch in range(4):
            lq, gt = ds[(epoch, i)]
            assert lq.shape == gt.shape == (3, 16, 16) and lq.dtype == torch.float32
            assert 0 <= gt.min() and gt.max() <= 1
            torch.testing.assert_close(lq, 1 - gt)  # same crop, same flip/rotation
            seen.add(gt.numpy().tobytes())
    assert len(seen) >= 4 * len(ds) - 2  # positions/augmentations differ across epochs (rare repeats)
    a, b = PairedPatchDataset(store, 16, seed=1)[(2, 3)], PairedPatchDataset(store, 16, seed=1)[(2, 3)]
    torch.testing.assert_close(a, b)


def test_patch_larger_than_subimage_names_sizes(store):
    with pytest.raises(ValueError, match=r"patch=48 is larger than the sub-images 32x32 of store .*store"):
        PairedPatchDataset(store, 48)


def test_sr_store_patches_keep_scale(tmp_path):
    img = (np.random.default_rng(0).random((80, 80, 3)) * 255).astype(np.uint8)
    Image.fromarray(img).save(tmp_path / "a.png")
    tasks = {"sr4": [{"name": "bicubic_down", "scale": 4}], "dn": [{"name": "gaussian_noise", "sigma": 50}]}
    degrade_store(
        [("a", tmp_path / "a.png")],
        tmp_path / "deg",
        tasks=tasks,
        patch=48,
        patches_per_image=3,
        seed=0,
        workers=1,
        progress=False,
    )
    ds = PairedPatchDataset(tmp_path / "deg", 32, task="sr4", with_label=True)
    lq, gt, label = ds[0]
    assert lq.shape == (3, 8, 8) and gt.shape == (3, 32, 32) and label == 0
    assert PairedPatchDataset(tmp_path / "deg", 32, task="dn", with_label=True)[0][2] == 1


def test_loader_same_batches_for_any_worker_count(store):
    ds = PairedPatchDataset(store, 16, seed=5)
    runs = {w: batches(step_loader(ds, 4, seed=7, workers=w)) for w in (0, 1, 2)}  # 12 items: 3 steps an epoch
    for w in (1, 2):
        for b0, bw in zip(runs[0], runs[w], strict=True):
            for t0, tw in zip(b0, bw, strict=True):
                torch.testing.assert_close(t0, tw)
    # epochs differ; another seed differs; global RNG state is irrelevant
    assert not torch.equal(runs[0][0][1], runs[0][3][1])
    torch.manual_seed(99)
    np.random.seed(99)
    again = batches(step_loader(ds, 4, seed=7))
    torch.testing.assert_close(again[4][0], runs[0][4][0])
    other = batches(step_loader(ds, 4, seed=8))
    assert not torch.equal(other[0][1], runs[0][0][1])
    # a resumed run (start_step 4) sees the batches an uninterrupted one saw at steps 4, 5
    resumed = batches(step_loader(ds, 4, seed=7, start_step=4), steps=2)
    for got, want in zip(resumed, runs[0][4:], strict=True):
        torch.testing.assert_close(got[0], want[0])


def test_step_batches_walk_whole_shuffled_epochs(store):
    sampler = iter(StepBatches(12, 5, seed=0))
    keys = [k for _ in range(6) for k in next(sampler)]  # 30 keys: epochs 0, 1 and half of 2
    for epoch in (0, 1):
        assert sorted(i for e, i in keys if e == epoch) == list(range(12))  # each item once an epoch
    assert [i for e, i in keys if e == 0] != [i for e, i in keys if e == 1]
    items = Items(PairedPatchDataset(store, 16), np.array([3, 7]))
    assert len(items) == 2 and torch.equal(items[(0, 1)][1], PairedPatchDataset(store, 16)[(0, 7)][1])
    with pytest.raises(ValueError, match="batch must be >= 1"):
        step_loader(items, 0, seed=0)
    with pytest.raises(ValueError, match="the training store is empty"):
        StepBatches(0, 1, seed=0)


def test_to_tensor_applies_the_same_dihedral_transform():
    img = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    for k in range(8):
        expected = torch.from_numpy(dihedral(img, k).transpose(2, 0, 1).astype(np.float32) / 255)
        torch.testing.assert_close(to_tensor(img, k), expected)


def test_uint8_output_matches_float(store):
    f = PairedPatchDataset(store, 16, seed=2)[(1, 3)]
    u = PairedPatchDataset(store, 16, seed=2, uint8=True)[(1, 3)]
    assert u[0].dtype == torch.uint8
    torch.testing.assert_close(u[1].float() / 255, f[1])


def test_synthesised_inputs_same_batches_for_any_worker_count_and_after_resume(tmp_path):
    """A degrade store's inputs are synthesised per draw: the batches still depend only on (seed, step)."""
    img = (np.random.default_rng(3).random((90, 100, 3)) * 255).astype(np.uint8)
    Image.fromarray(img).save(tmp_path / "a.png")
    degrade_store([("a", tmp_path / "a.png"), ("b", tmp_path / "a.png")], tmp_path / "deg",
                  tasks={"dn": [{"name": "gaussian_noise", "sigma": 50}]}, patch=48, patches_per_image=3, seed=0,
                  workers=1, progress=False)  # fmt: skip
    ds = PairedPatchDataset(tmp_path / "deg", 32, task="dn", seed=5, uint8=True)
    runs = {w: batches(step_loader(ds, 4, seed=7, workers=w), steps=4) for w in (0, 2)}
    for b0, b2 in zip(runs[0], runs[2], strict=True):
        for t0, t2 in zip(b0, b2, strict=True):
            torch.testing.assert_close(t0, t2)
    resumed = batches(step_loader(ds, 4, seed=7, start_step=2), steps=2)
    for got, want in zip(resumed, runs[0][2:], strict=True):
        torch.testing.assert_close(got[0], want[0])
    # the same item and crop (the whole patch, no augmentation) drawn again: another noise, the same target
    whole = PairedPatchDataset(tmp_path / "deg", 48, task="dn", seed=5, augment=False)
    (lq0, gt0), (lq1, gt1) = whole[(0, 1)], whole[(1, 1)]
    torch.testing.assert_close(gt0, gt1)
    assert not torch.equal(lq0, lq1)
    torch.testing.assert_close(whole[(0, 1)][0], lq0)
