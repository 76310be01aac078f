"""The embedded sample: real folder layouts, camera-like degradations, byte-identical rebuilds."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from restorebench.config import SampleConfig
from restorebench.data.samples import camera_noise, expected_counts, make_sample, png_bytes

SMALL = SampleConfig(
    sidd_instances=2,
    sidd_height=48,
    sidd_width=64,
    sidd_val_images=2,
    sidd_val_blocks=3,
    sidd_val_block_size=16,
    gopro_train_sequences=1,
    gopro_test_sequences=1,
    gopro_frames=2,
    gopro_height=40,
    gopro_width=64,
    gopro_average=5,
    imagenet_classes=2,
    imagenet_per_class=2,
    imagenet_size=48,
)
DATASETS = ("sidd", "gopro", "imagenet")


def digests(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def load(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.mode == "RGB", f"{path}: {im.mode}"
        return np.asarray(im)


@pytest.mark.parametrize("dataset", DATASETS)
def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path, dataset: str) -> None:
    a = make_sample(dataset, tmp_path / "a" / dataset, SMALL, seed=7)
    b = make_sample(dataset, tmp_path / "b" / dataset, SMALL, seed=7)
    c = make_sample(dataset, tmp_path / "c" / dataset, SMALL, seed=8)
    da, db, dc = digests(a), digests(b), digests(c)
    assert da and da == db
    assert set(da.values()).isdisjoint(dc.values())
    # nothing but the dataset folder is left behind (the temporary build folder was renamed)
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [dataset]


def test_sidd_layout_noise_and_validation_blocks(tmp_path: Path) -> None:
    root = make_sample("sidd", tmp_path / "sidd", SMALL, seed=0)
    instances = sorted((root / "SIDD_Medium_Srgb" / "Data").iterdir())
    assert len(instances) == SMALL.sidd_instances
    for inst in instances:
        assert re.fullmatch(r"\d{4}_\d{3}_(GP|IP|S6|N6|G4)_\d{5}_\d{5}_\d{4}_[LNH]", inst.name), inst.name
        i = inst.name[:4]
        names = sorted(p.name for p in inst.iterdir())
        assert names == sorted(f"{i}_{kind}_SRGB_{k}.PNG" for kind in ("GT", "NOISY") for k in ("010", "011"))
        gt, noisy = load(inst / f"{i}_GT_SRGB_010.PNG"), load(inst / f"{i}_NOISY_SRGB_010.PNG")
        assert gt.shape == noisy.shape == (SMALL.sidd_height, SMALL.sidd_width, 3)
        mse = np.mean((gt.astype(float) - noisy) ** 2)
        assert 15 < 10 * np.log10(255**2 / mse) < 50
        assert not np.array_equal(gt, load(inst / f"{i}_GT_SRGB_011.PNG"))
    for name in ("ValidationNoisyBlocksSrgb", "ValidationGtBlocksSrgb"):
        mat = scipy.io.loadmat(root / f"{name}.mat")
        assert mat["__header__"].startswith(b"MATLAB 5.0 MAT-file") and b"Created on" not in mat["__header__"]
        arr = mat[name]
        assert arr.dtype == np.uint8
        assert arr.shape == (SMALL.sidd_val_images, SMALL.sidd_val_blocks, 16, 16, 3)


def test_camera_noise_grows_with_signal_and_iso() -> None:
    rng = np.random.default_rng(0)
    dark, bright = np.full((64, 64, 3), 0.05), np.full((64, 64, 3), 0.6)
    assert camera_noise(bright, 800, rng).std() > camera_noise(dark, 800, rng).std()  # shot noise
    assert camera_noise(bright, 3200, rng).std() > camera_noise(bright, 100, rng).std()  # gain


def test_gopro_layout_and_blur(tmp_path: Path) -> None:
    root = make_sample("gopro", tmp_path / "gopro", SMALL, seed=0)
    seqs = sorted((root / "GOPRO_Large").glob("*/*"))
    assert [s.parent.name for s in seqs].count("train") == 1 and len(seqs) == 2
    for seq in seqs:
        assert re.fullmatch(r"GOPR0\d{3}_11_0\d", seq.name), seq.name
        frames = {
            sub: sorted(p.name for p in (seq / sub).iterdir()) for sub in ("blur", "blur_gamma", "sharp")
        }
        assert frames["blur"] == frames["blur_gamma"] == frames["sharp"]
        assert len(frames["sharp"]) == SMALL.gopro_frames and re.fullmatch(r"\d{6}\.png", frames["sharp"][0])
        name = frames["sharp"][0]
        sharp, blur, blur_gamma = (load(seq / sub / name) for sub in ("sharp", "blur", "blur_gamma"))
        assert sharp.shape == (SMALL.gopro_height, SMALL.gopro_width, 3)
        assert not np.array_equal(blur, sharp) and not np.array_equal(blur, blur_gamma)
        # averaging frames smooths: the blurred frame has less high-frequency energy than the sharp one
        grad = lambda x: np.abs(np.diff(x.astype(float), axis=1)).mean()  # noqa: E731
        assert grad(blur) < grad(sharp)


def test_imagenet_layout_and_plain_jpegs(tmp_path: Path) -> None:
    root = make_sample("imagenet", tmp_path / "imagenet", SMALL, seed=0)
    files = sorted((root / "train").glob("*/*"))
    assert len(files) == SMALL.imagenet_classes * SMALL.imagenet_per_class
    for f in files:
        assert re.fullmatch(r"(n\d{8})_\d+\.JPEG", f.name) and f.name.startswith(f.parent.name + "_")
        with Image.open(f) as im:
            assert im.format == "JPEG" and im.mode == "RGB" and min(im.size) == SMALL.imagenet_size
            assert not im.getexif() and "icc_profile" not in im.info


def test_expected_counts_match_what_is_built(tmp_path: Path) -> None:
    pairs, groups = expected_counts("gopro", SMALL)
    assert pairs == {"train": 2, "test": 2} and groups == {"train": 1, "test": 1}
    pairs, groups = expected_counts("sidd", SampleConfig())
    assert pairs == {"train": 12, "val": 16} and groups == {"train": 6, "val": 4}
    with pytest.raises(ValueError, match="unknown dataset 'mnist'"):
        expected_counts("mnist", SMALL)
    with pytest.raises(ValueError, match="unknown dataset 'mnist'"):
        make_sample("mnist", tmp_path / "x", SMALL, seed=0)


def test_png_writer_round_trips() -> None:
    img = np.random.default_rng(1).integers(0, 256, size=(7, 5, 3), dtype=np.uint8)
    import io

    with Image.open(io.BytesIO(png_bytes(img))) as im:
        assert im.mode == "RGB" and np.array_equal(np.asarray(im), img)
