"""Datasets and loaders: paired crops and augmentation, errors, determinism across worker counts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from restorebench.data.datasets import (
    EvalDataset,
    OnlineDegradationDataset,
    PairedPatchDataset,
    dihedral,
    make_loader,
    to_tensor,
)
from restorebench.data.store import StoreWriter, degrade_store


@pytest.fixture()
def store(tmp_path: Path) -> Path:
    """12 sub-images of 32x32 where lq = 255 - gt (so a pair's alignment is checkable)."""
    rng = np.random.default_rng(0)
    with StoreWriter(tmp_path / "store", {"lq": (32, 32, 3), "gt": (32, 32, 3)}) as w:
        for i in range(12):
            gt = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
            w.add(id=f"s{i}", image=f"img{i // 4}", lq=255 - gt, gt=gt)
    return tmp_path / "store"


def batches(loader, epochs=(0, 1)) -> list[list[torch.Tensor]]:
    out = []
    for e in epochs:
        loader.sampler.set_epoch(e)
        out += [[t.clone() for t in b] for b in loader]
    return out


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
    runs = {w: batches(make_loader(ds, 4, workers=w, seed=7)) for w in (0, 1, 2)}
    assert len(runs[0]) == 6
    for w in (1, 2):
        for b0, bw in zip(runs[0], runs[w], strict=True):
            for t0, tw in zip(b0, bw, strict=True):
                torch.testing.assert_close(t0, tw)
    # epochs differ; another seed differs; global RNG state is irrelevant
    assert not torch.equal(runs[0][0][1], runs[0][3][1])
    torch.manual_seed(99)
    np.random.seed(99)
    again = batches(make_loader(ds, 4, workers=0, seed=7))
    torch.testing.assert_close(again[4][0], runs[0][4][0])
    other = batches(make_loader(ds, 4, workers=0, seed=8))
    assert not torch.equal(other[0][1], runs[0][0][1])


def test_make_loader_options(store):
    ds = PairedPatchDataset(store, 16)
    loader = make_loader(ds, 5, workers=0, shuffle=False, drop_last=True)
    assert loader.pin_memory == torch.cuda.is_available() and not loader.persistent_workers
    assert [len(b[0]) for b in loader] == [5, 5]
    assert [i for _, i in loader.sampler] == list(range(12))
    assert make_loader(ds, 2, workers=1).persistent_workers
    with pytest.raises(ValueError, match="batch_size"):
        make_loader(ds, 0)


def test_online_degradation_deterministic(tmp_path):
    imgs = [(np.random.default_rng(i).random((40, 50, 3)) * 255).astype(np.uint8) for i in range(3)]
    Image.fromarray(imgs[0]).save(tmp_path / "x.png")
    ds = OnlineDegradationDataset(
        [tmp_path / "x.png", *imgs[1:]], [{"name": "gaussian_noise", "sigma": 25}], 24, seed=1
    )
    a = ds[(0, 0)]
    torch.manual_seed(3)
    np.random.seed(3)
    b = ds[(0, 0)]
    torch.testing.assert_close(a, b)
    assert not torch.equal(a[0], ds[(1, 0)][0])
    assert a[0].shape == a[1].shape == (3, 24, 24)
    assert 20 < float((a[0] - a[1]).std()) * 255 < 30
    sr = OnlineDegradationDataset(imgs, [{"name": "bicubic_down", "scale": 2}], 24)
    assert sr[1][0].shape == (3, 12, 12)
    with pytest.raises(ValueError, match=r"images\[2\]: 40x50 is smaller than patch=48"):
        OnlineDegradationDataset(imgs, [{"name": "jpeg"}], 48)[2]
    with pytest.raises(ValueError, match="unknown degradation"):
        OnlineDegradationDataset(imgs, [{"name": "nosie"}], 16)


def test_eval_dataset_whole_images(tmp_path):
    lq = (np.random.default_rng(0).random((30, 45, 3)) * 255).astype(np.uint8)
    Image.fromarray(lq).save(tmp_path / "lq.png")
    ds = EvalDataset([("scene1", tmp_path / "lq.png", lq), ("scene2", lq, lq)])
    a, b, name = ds[0]
    assert a.shape == b.shape == (3, 30, 45) and name == "scene1"
    torch.testing.assert_close(a, b)
    batch = next(iter(make_loader(ds, 1, shuffle=False)))
    assert list(batch[2]) == ["scene1"]


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
