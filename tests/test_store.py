"""Packed stores: sub-image positions, round trips against the PNGs, atomicity, degrade determinism."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from restorebench.data.manifest import ROWS
from restorebench.data.prepare import prepare_store
from restorebench.data.store import StoreWriter, crop_subimages, holdout_split, source_group
from restorebench.data.synth import open_store
from restorebench.degrade.stage import degrade_store

TASKS = {
    "dn30": [{"name": "gaussian_noise", "sigma": 30}],
    "sr2": [{"name": "bicubic_down", "scale": 2}],
    "sr3": [{"name": "bicubic_down", "scale": 3}],
    "blur": [{"name": "motion_blur", "size": 15}],
    "rain": [{"name": "rain_streaks"}],
}


def smooth_image(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([np.sin(xx / 7 + c) * np.cos(yy / 5 - c) for c in range(3)], -1)
    return np.clip(127 + 100 * base + rng.normal(0, 10, (h, w, 3)), 0, 255).astype(np.uint8)


@pytest.fixture()
def pngs(tmp_path: Path) -> list[tuple[str, Path, Path]]:
    rng = np.random.default_rng(0)
    pairs = []
    for i, (h, w) in enumerate([(100, 130), (64, 64), (90, 77)]):
        gt = smooth_image(rng, h, w)
        lq = np.clip(gt.astype(int) + rng.integers(-20, 21, gt.shape), 0, 255).astype(np.uint8)
        Image.fromarray(lq).save(tmp_path / f"lq{i}.png")
        Image.fromarray(gt).save(tmp_path / f"gt{i}.png")
        pairs.append((f"im{i}", tmp_path / f"lq{i}.png", tmp_path / f"gt{i}.png"))
    return pairs


def tree_digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def test_crop_subimages_positions_follow_basicsr():
    # BasicSR extract_subimages: arange(0, h - size + 1, step), plus h - size if the border is missed.
    assert crop_subimages((100, 130), 64, 48) == [(y, x) for y in (0, 36) for x in (0, 48, 66)]
    assert crop_subimages((64, 64), 64, 48) == [(0, 0)]
    assert crop_subimages((1024, 512), 512, 256) == [(0, 0), (256, 0), (512, 0)]
    sidd = crop_subimages((3000, 4000), 512, 384)
    assert {y for y, _ in sidd} == {*range(0, 3000 - 512 + 1, 384), 3000 - 512}
    with pytest.raises(ValueError, match=r"scene7: 50x80 is smaller than the sub-image size 64x64"):
        crop_subimages(np.zeros((50, 80, 3)), 64, 48, name="scene7")


@pytest.mark.parametrize("workers", [1, 2])
def test_prepare_round_trip_equals_png_crops(tmp_path, pngs, workers):
    out = tmp_path / "store" / "train"
    stats = prepare_store(pngs, out, size=64, step=48, workers=workers, progress=False)
    store = open_store(out)
    assert stats["subimages"] == len(store) == 6 + 1 + 4
    assert sorted(p.name for p in out.iterdir()) == ["gt.u8", "index.parquet", "lq.u8", "meta.json"]
    assert store.meta["arrays"] == {"lq": [64, 64, 3], "gt": [64, 64, 3]} and store.meta["step"] == 48
    files = {i: (np.asarray(Image.open(lq)), np.asarray(Image.open(gt))) for i, lq, gt in pngs}
    for k in range(len(store)):
        lq, gt, meta = store.get(k)
        src_lq, src_gt = files[meta["image"]]
        y, x = meta["y"], meta["x"]
        np.testing.assert_array_equal(lq, src_lq[y : y + 64, x : x + 64])
        np.testing.assert_array_equal(gt, src_gt[y : y + 64, x : x + 64])
    assert [store.get(k)[2]["image"] for k in range(len(store))] == ["im0"] * 6 + ["im1"] + ["im2"] * 4


@pytest.mark.parametrize("workers", [1, 2])
def test_corrupt_png_names_file_and_leaves_no_store(tmp_path, pngs, workers):
    bad = tmp_path / "broken.png"
    bad.write_bytes(Image.open(pngs[0][2]).tobytes()[:500])  # not a PNG at all
    pairs = [pngs[0], ("bad", pngs[1][1], bad), pngs[2]]
    out = tmp_path / "stores" / "train"
    with pytest.raises(ValueError, match="broken.png"):
        prepare_store(pairs, out, size=64, step=48, workers=workers, progress=False)
    assert not out.exists() and leftovers(out.parent) == []
    # an existing complete store survives a failed rebuild unchanged
    prepare_store(pngs, out, size=64, step=48, workers=1, progress=False)
    before = tree_digest(out)
    with pytest.raises(ValueError, match="broken.png"):
        prepare_store(pairs, out, size=64, step=48, workers=workers, progress=False)
    assert tree_digest(out) == before and leftovers(out.parent) == []


def test_writer_is_atomic_and_checks_shapes(tmp_path):
    target = tmp_path / "s"
    with pytest.raises(ValueError, match=r"array 'gt' is uint8 \(4, 4, 3\), expected uint8 \(8, 8, 3\)"):
        with StoreWriter(target, {"lq": (8, 8, 3), "gt": (8, 8, 3)}) as w:
            w.add(id="a", lq=np.zeros((8, 8, 3), np.uint8), gt=np.zeros((8, 8, 3), np.uint8))
            assert not target.exists()
            w.add(id="b", lq=np.zeros((8, 8, 3), np.uint8), gt=np.zeros((4, 4, 3), np.uint8))
    assert not target.exists() and leftovers(tmp_path) == []
    with StoreWriter(target, {"lq": (8, 8, 3), "gt": (8, 8, 3)}) as w:
        pass
    assert len(open_store(target)) == 0


def test_degrade_store_deterministic_and_seed_dependent(tmp_path, pngs):
    images = [(i, gt) for i, _, gt in pngs]
    a = degrade_store(
        images, tmp_path / "a", tasks=TASKS, patch=48, patches_per_image=2, seed=3, workers=1, progress=False
    )
    degrade_store(
        iter(images),
        tmp_path / "b",
        tasks=TASKS,
        patch=48,
        patches_per_image=2,
        seed=3,
        workers=2,
        progress=False,
    )
    degrade_store(
        images, tmp_path / "c", tasks=TASKS, patch=48, patches_per_image=2, seed=4, workers=1, progress=False
    )
    da, db, dc = (tree_digest(tmp_path / n) for n in "abc")
    assert da == db  # same seed: identical bytes in every file, whatever the worker count
    assert da["clean.u8"] != dc["clean.u8"]  # positions follow the seed
    # only the clean windows are stored (patch 48 + 2 x margin 24; margin rounded to the SR scales' lcm 6)
    assert sorted(da) == ["clean.u8", "index.parquet", "meta.json"]
    assert (tmp_path / "a" / "clean.u8").stat().st_size == 6 * 96 * 96 * 3
    assert a["patches"] == 6
    for task, label in zip(TASKS, range(len(TASKS)), strict=True):
        s = open_store(tmp_path / "a", task=task)
        lq, gt, meta = s.get(5)
        scale = {"sr2": 2, "sr3": 3}.get(task, 1)
        assert lq.shape == (48 // scale, 48 // scale, 3) and gt.shape == (48, 48, 3)
        assert meta["label"] == label and meta["image"] == "im2"
    # gt patches are the clean crops at the recorded positions (im1 is 64x64: its margin mirrors the border)
    s = open_store(tmp_path / "a", task="dn30")
    src = np.asarray(Image.open(pngs[0][2]))
    _, gt, meta = s.get(1)
    np.testing.assert_array_equal(gt, src[meta["y"] : meta["y"] + 48, meta["x"] : meta["x"] + 48])
    small = np.asarray(Image.open(pngs[1][2]))
    _, gt, meta = s.get(2)
    np.testing.assert_array_equal(gt, small[meta["y"] : meta["y"] + 48, meta["x"] : meta["x"] + 48])
    # 64 - 48 leaves room for 6 pixels of real context a side; the other 18 of the margin mirror it
    window = np.fromfile(tmp_path / "a" / "clean.u8", np.uint8).reshape(6, 96, 96, 3)[2]
    real = small[meta["y"] - 6 : meta["y"] + 54, meta["x"] - 6 : meta["x"] + 54]
    np.testing.assert_array_equal(window, np.pad(real, ((18, 18), (18, 18), (0, 0)), mode="symmetric"))
    with pytest.raises(ValueError, match=r"pass task=, one of \['blur', 'dn30', 'rain', 'sr2', 'sr3'\]"):
        open_store(tmp_path / "a")


def test_degraded_inputs_are_synthesised_per_seed_item_task_and_draw(tmp_path, pngs):
    from restorebench.degrade.chain import build_pipeline
    from restorebench.degrade.rng import derive_rng

    images = [(i, gt) for i, _, gt in pngs]
    degrade_store(images, tmp_path / "a", tasks=TASKS, patch=48, patches_per_image=2, seed=3, workers=1,
                  progress=False)  # fmt: skip
    window = np.fromfile(tmp_path / "a" / "clean.u8", np.uint8).reshape(6, 96, 96, 3)[5]
    for task in ("dn30", "sr3", "blur"):
        s = open_store(tmp_path / "a", task=task)
        lq, _, meta = s.get(5, seed=11, draw=7)
        # reference: the task's pipeline on the stored window with the (seed, item, task, draw) Generator,
        # the margin (24) cut away at the task's scale
        scale = {"sr3": 3}.get(task, 1)
        out = build_pipeline(TASKS[task])(window.astype(np.float32) / 255, derive_rng(11, "degrade", "im2/1", task, 7))
        want = np.floor(np.clip(out, 0, 1) * 255 + 0.5).astype(np.uint8)[24 // scale : 72 // scale, 24 // scale : 72 // scale]
        np.testing.assert_array_equal(lq, want)
        assert meta["id"] == "im2/1"
        # the same key gives the same input in any order and in a fresh reader (a worker, a resumed run)
        s.get(0, seed=11, draw=1)
        np.testing.assert_array_equal(open_store(tmp_path / "a", task=task).get(5, seed=11, draw=7)[0], lq)
        # a drawn crop: the crop of the clean patch, its input on the task's grid; the whole patch as a crop
        # is the full draw (the store's margin, 24, is all the context a crop sees)
        lq_c, gt_c, _ = s.get(5, seed=11, draw=7, crop=(6, 12, 24))
        np.testing.assert_array_equal(gt_c, window[30:54, 36:60])
        assert lq_c.shape == (24 // scale, 24 // scale, 3)
        np.testing.assert_array_equal(s.get(5, seed=11, draw=7, crop=(0, 0, 48))[0], lq)
    with pytest.raises(ValueError, match=r"crop \(1, 0, 24\) is not inside the 48-pixel patch on the x3 grid"):
        open_store(tmp_path / "a", task="sr3").get(0, crop=(1, 0, 24))
    s = open_store(tmp_path / "a", task="dn30")
    base = s.get(5, seed=11, draw=7)[0]
    assert not np.array_equal(s.get(5, seed=11, draw=8)[0], base)  # a new draw, a new noise
    assert not np.array_equal(s.get(5, seed=12, draw=7)[0], base)  # another seed


def test_degrade_store_errors(tmp_path, pngs):
    images = [(i, gt) for i, _, gt in pngs]
    with pytest.raises(ValueError, match=r"im1 .*64x64 is smaller than patch=96"):
        degrade_store(images, tmp_path / "x", tasks=TASKS, patch=96, seed=0, workers=1, progress=False)
    assert not (tmp_path / "x").exists() and leftovers(tmp_path) == []
    with pytest.raises(ValueError, match=r"tasks.sr3.*patch must be a multiple of the scale"):
        degrade_store(images, tmp_path / "x", tasks=TASKS, patch=50, seed=0, workers=1, progress=False)
    with pytest.raises(ValueError, match=r"tasks.dn\[0\] \(gaussian_noise\): sigma"):
        degrade_store(
            images, tmp_path / "x", tasks={"dn": [{"name": "gaussian_noise", "sigma": -1}]}, workers=1
        )


def write_index_store(path: Path, images: list[str], per_image: int = 2) -> Path:
    """A store of `per_image` tiny items per source image id, in the order given."""
    blank = np.zeros((2, 2, 3), np.uint8)
    with StoreWriter(path, {"lq": (2, 2, 3), "gt": (2, 2, 3)}) as w:
        for image in images:
            for k in range(per_image):
                w.add(id=f"{image}/{k}", image=image, lq=blank, gt=blank)
    return path


def split_images(store, fraction: float) -> tuple[set[str], set[str]]:
    train_idx, held_idx = holdout_split(store, fraction, "profiles.paper.train.holdout")
    assert len(train_idx) + len(held_idx) == len(store)
    images = store.index["image"]
    return {images[i] for i in train_idx}, {images[i] for i in held_idx}


def test_holdout_keeps_sequences_whole_near_the_fraction(tmp_path):
    # GoPro-like: 12 sequences of 4..14 frames, ids "{sequence}_{frame}" as the manifest writes them
    sizes = [4, 9, 14, 6, 11, 5, 8, 13, 7, 10, 12, 6]
    seqs = [f"GOPR{372 + g:04d}_11_00" for g in range(len(sizes))]
    frames = [f"{seq}_{f:06d}" for seq, n in zip(seqs, sizes, strict=True) for f in range(n)]
    store = open_store(write_index_store(tmp_path / "s", frames))
    for fraction in (0.1, 0.2, 0.35, 0.5, 0.8):
        train, held = split_images(store, fraction)
        train_seqs, held_seqs = {source_group(i) for i in train}, {source_group(i) for i in held}
        assert not train_seqs & held_seqs, f"{fraction}: sequences split: {sorted(train_seqs & held_seqs)}"
        assert held_seqs == set(seqs[len(seqs) - len(held_seqs) :])  # the last sequences in store order
        # within half a sequence of the asked share (consecutive choices differ by one sequence)
        assert abs(len(held) - fraction * len(frames)) <= max(sizes) / 2, fraction
        assert split_images(store, fraction) == (train, held)  # deterministic
    # a fraction below one sequence still holds one out; one always stays to train on
    assert split_images(store, 0.01)[1] == {f for f in frames if f.startswith(seqs[-1])}
    assert {source_group(i) for i in split_images(store, 0.99)[0]} == {seqs[0]}
    assert split_images(store, 0.0)[1] == set()


def test_holdout_falls_back_to_images_without_groups(tmp_path):
    ungrouped = [f"im{i}" for i in range(10)]  # no "_": every image a group of its own
    one_group = [f"seq_{i:06d}" for i in range(10)]  # a single sequence: nothing to keep together
    for name, images in (("ungrouped", ungrouped), ("one_group", one_group)):
        store = open_store(write_index_store(tmp_path / name, images))
        assert split_images(store, 0.3) == (set(images[:7]), set(images[7:])), name
        assert split_images(store, 0.01)[1] == {images[-1]}, name


def test_holdout_errors_name_the_params_key(tmp_path):
    store = open_store(write_index_store(tmp_path / "s", ["a_1", "b_1"]))
    for bad in (1.0, -0.1):
        with pytest.raises(ValueError, match=rf"profiles.paper.train.holdout: {bad} must be in \[0, 1\)"):
            holdout_split(store, bad, "profiles.paper.train.holdout")
    empty = open_store(write_index_store(tmp_path / "empty", []))
    with pytest.raises(ValueError, match=r"profiles.paper.train.holdout: .*empty has no items to train on"):
        holdout_split(empty, 0.1, "profiles.paper.train.holdout")


def test_source_group_is_the_manifest_group(tmp_path):
    """The store keeps manifest pair ids as `image`; source_group must give back the manifest's group (scene
    instance, sequence, class) for the real datasets' folder names."""
    files = [
        "SIDD_Medium_Srgb/Data/0001_001_S6_00100_00060_3200_L/0001_GT_SRGB_010.PNG",
        "SIDD_Medium_Srgb/Data/0001_001_S6_00100_00060_3200_L/0001_NOISY_SRGB_010.PNG",
        "SIDD_Medium_Srgb/Data/0001_001_S6_00100_00060_3200_L/0001_GT_SRGB_011.PNG",
        "SIDD_Medium_Srgb/Data/0001_001_S6_00100_00060_3200_L/0001_NOISY_SRGB_011.PNG",
        "SIDD_Medium_Srgb/Data/0187_009_IP_01600_02000_5500_N/0187_GT_SRGB_010.PNG",
        "SIDD_Medium_Srgb/Data/0187_009_IP_01600_02000_5500_N/0187_NOISY_SRGB_010.PNG",
        "GOPRO_Large/train/GOPR0372_07_00/blur/000047.png",
        "GOPRO_Large/train/GOPR0372_07_00/sharp/000047.png",
        "GOPRO_Large/train/GOPR0884_11_00/blur/000001.png",
        "GOPRO_Large/train/GOPR0884_11_00/sharp/000001.png",
        "train/n01440764/n01440764_10026.JPEG",
        "train/n15075141/n15075141_9993.JPEG",
    ]
    for f in files:
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f).touch()
    rows = [row for rows_of in ROWS.values() for row in rows_of(tmp_path)]
    assert len(rows) == 7  # 3 SIDD pairs, 2 GoPro frames, 2 ImageNet images
    assert {row["pair_id"]: source_group(row["pair_id"]) for row in rows} == {
        row["pair_id"]: row["group"] for row in rows
    }
