"""Manifests and validation: the sample passes; each kind of broken file fails, naming the file."""

from __future__ import annotations

import json
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from restorebench.config import SampleConfig
from restorebench.data.manifest import COLUMNS, build_manifest, read_manifest, write_manifest
from restorebench.data.samples import expected_counts, make_sample, mat_bytes
from restorebench.data.validate import validate_dataset, validate_stage, write_report
from restorebench.errors import RestorebenchError

SMALL = SampleConfig(
    sidd_instances=2,
    sidd_height=48,
    sidd_width=64,
    sidd_val_images=2,
    sidd_val_blocks=2,
    sidd_val_block_size=16,
    gopro_train_sequences=1,
    gopro_test_sequences=1,
    gopro_frames=3,
    gopro_height=40,
    gopro_width=64,
    gopro_average=3,
)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """All three datasets at the demo profile's default sizes."""
    root = tmp_path_factory.mktemp("raw")
    for dataset in ("sidd", "gopro", "imagenet"):
        make_sample(dataset, root / dataset, SampleConfig(), seed=0)
    return root


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("small")
    for dataset in ("sidd", "gopro"):
        make_sample(dataset, root / dataset, SMALL, seed=0)
    return root


def run(dataset: str, raw: Path, cfg: SampleConfig = SMALL, workers: int = 1, **expected: dict) -> dict:
    pairs, groups = expected_counts(dataset, cfg)
    report = validate_dataset(
        dataset,
        build_manifest(dataset, raw, workers=workers),
        raw,
        expected_pairs=expected.get("pairs", pairs),
        expected_groups=expected.get("groups", groups),
        workers=workers,
    )
    json.dumps(report)  # JSON-able
    return report


@pytest.mark.parametrize("dataset", ["sidd", "gopro", "imagenet"])
def test_demo_sample_passes_with_demo_counts(demo: Path, dataset: str, tmp_path: Path) -> None:
    report = run(dataset, demo / dataset, SampleConfig(), workers=2)
    assert report["success"], report["failures"]
    pairs, groups = expected_counts(dataset, SampleConfig())
    assert report["counts"] == pairs and report["groups"] == groups
    assert report["failures"] == [] and all(e["success"] for e in report["expectations"])
    assert report["images_per_second"] > 0
    write_report(report, tmp_path / "v" / f"{dataset}.json")
    assert json.loads((tmp_path / "v" / f"{dataset}.json").read_text())["success"] is True


def test_manifest_rows_and_parquet_round_trip(demo: Path, tmp_path: Path) -> None:
    df = build_manifest("sidd", demo / "sidd", workers=1)
    assert list(df.columns) == COLUMNS and df["pair_id"].is_unique
    train, val = df[df["split"] == "train"], df[df["split"] == "val"]
    assert len(train) == 12 and len(val) == 16
    first = train.iloc[0]
    assert first["gt_path"].startswith("SIDD_Medium_Srgb/Data/") and first["gt_path"].endswith(
        "_GT_SRGB_010.PNG"
    )
    assert (demo / "sidd" / first["lq_path"]).is_file() and len(first["sha256"]) == 64
    assert (first["height"], first["width"], first["channels"], first["dtype"]) == (192, 256, 3, "uint8")
    assert val.iloc[0]["pair_id"] == "val_0000_00" and val.iloc[-1]["pair_id"] == "val_0003_03"
    assert set(val["gt_path"]) == {"ValidationGtBlocksSrgb.mat"} and (val["bytes"] == 64 * 64 * 3).all()
    assert df.equals(build_manifest("sidd", demo / "sidd", workers=2))  # order does not depend on workers
    write_manifest(df, tmp_path / "m" / "sidd.parquet")
    assert read_manifest(tmp_path / "m" / "sidd.parquet").equals(df)
    assert [p.name for p in (tmp_path / "m").iterdir()] == ["sidd.parquet"]

    imagenet = build_manifest("imagenet", demo / "imagenet", workers=1)
    assert (imagenet["lq_path"] == "").all() and imagenet["lq_height"].isna().all()
    gopro = build_manifest("gopro", demo / "gopro", workers=1)
    assert (
        gopro["lq_path"].str.contains("/blur/").all() and gopro["alt_path"].str.contains("/blur_gamma/").all()
    )


# --------------------------------------------------------------------------------- broken files


def png16(path: Path, h: int, w: int) -> None:
    rows = (
        np.random.default_rng(0)
        .integers(0, 65535, size=(h, w * 3), dtype=np.uint16)
        .astype(">u2")
        .view(np.uint8)
    )
    raw = np.concatenate([np.zeros((h, 1), np.uint8), rows], axis=1).tobytes()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    )


def corrupt(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 16] = b"\xff" * 16
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def crop(path: Path) -> None:
    Image.fromarray(np.asarray(Image.open(path))[:-2]).save(path)


def gray(path: Path) -> None:
    Image.open(path).convert("L").save(path)


def sixteen_bit(path: Path) -> None:
    with Image.open(path) as im:
        png16(path, im.height, im.width)


# (mutation, which file of the first GoPro pair it hits, the reason's key words)
CASES = {
    "corrupted": (corrupt, "lq", "corrupted"),
    "truncated": (truncate, "lq", "truncated"),
    "missing_gt": (lambda p: p.unlink(), "gt", "missing file"),
    "size_mismatch": (crop, "lq", "size mismatch"),
    "grayscale": (gray, "lq", "grayscale"),
    "sixteen_bit": (sixteen_bit, "gt", "16-bit"),
    "lq_is_gt": (None, "lq", "identical to gt"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_broken_file_fails_naming_it(small: Path, tmp_path: Path, case: str) -> None:
    raw = shutil.copytree(small / "gopro", tmp_path / "gopro")
    first = build_manifest("gopro", raw, workers=1).iloc[0]
    mutate, role, words = CASES[case]
    target = first["lq_path"] if role == "lq" else first["gt_path"]
    if mutate is None:
        shutil.copy(raw / first["gt_path"], raw / first["lq_path"])
    else:
        mutate(raw / target)
    report = run("gopro", raw)
    assert not report["success"]
    mine = [f for f in report["failures"] if f["file"] == target]
    assert mine and words in mine[0]["reason"], report["failures"]


def test_the_stage_fails_in_one_line_naming_the_file(small: Path, tmp_path: Path) -> None:
    root = tmp_path / "data"
    raw = shutil.copytree(small / "gopro", root / "raw" / "gopro")
    first = build_manifest("gopro", raw, workers=1).iloc[0]
    truncate(raw / first["lq_path"])  # before the manifest: its hash matches, the decode fails
    write_manifest(build_manifest("gopro", raw, workers=1), root / "manifests" / "gopro.parquet")
    pairs, groups = expected_counts("gopro", SMALL)
    with pytest.raises(RestorebenchError) as caught:
        validate_stage("gopro", root=root, expected_pairs=pairs, expected_groups=groups, workers=1)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{root / 'validation' / 'gopro.json'}: gopro failed validation")
    assert f"{first['lq_path']}: " in message and "truncated" in message, message
    assert json.loads((root / "validation" / "gopro.json").read_text())["success"] is False


def test_file_changed_after_manifest_and_duplicate_pairs(small: Path, tmp_path: Path) -> None:
    raw = shutil.copytree(small / "gopro", tmp_path / "gopro")
    df = build_manifest("gopro", raw, workers=1)
    a, b = df.iloc[0], df.iloc[1]
    for col in ("lq_path", "gt_path", "alt_path"):
        shutil.copy(raw / a[col], raw / b[col])  # pair b is now a copy of pair a
    report = validate_dataset("gopro", df, raw, expected_pairs={}, expected_groups={}, workers=1)
    assert {
        "file": b["gt_path"],
        "reason": "sha256 differs from the manifest (file changed after the manifest was built)",
    } in report["failures"]
    report = run("gopro", raw)
    assert any(f["file"] == b["gt_path"] and "duplicate pair" in f["reason"] for f in report["failures"])


def test_wrong_counts_fail_with_the_split_named(small: Path) -> None:
    report = run("gopro", small / "gopro", pairs={"train": 4, "test": 3}, groups={"train": 1, "test": 2})
    assert not report["success"]
    reasons = " | ".join(f["reason"] for f in report["failures"])
    assert "train: 4 pairs" in reasons and "observed 3" in reasons and "test: 2 groups" in reasons
    assert report["counts"] == {"train": 3, "test": 3}


def test_sidd_missing_gt_and_bad_validation_blocks(small: Path, tmp_path: Path) -> None:
    raw = shutil.copytree(small / "sidd", tmp_path / "sidd")
    assert run("sidd", raw)["success"]
    gt = next((raw / "SIDD_Medium_Srgb" / "Data").glob("*/*_GT_SRGB_011.PNG"))
    gt.unlink()
    noisy = scipy.io.loadmat(raw / "ValidationNoisyBlocksSrgb.mat")["ValidationNoisyBlocksSrgb"]
    clean = scipy.io.loadmat(raw / "ValidationGtBlocksSrgb.mat")["ValidationGtBlocksSrgb"]
    noisy[1, 0] = clean[1, 0]
    (raw / "ValidationNoisyBlocksSrgb.mat").write_bytes(mat_bytes("ValidationNoisyBlocksSrgb", noisy))
    report = run("sidd", raw)
    assert not report["success"]
    rel = gt.relative_to(raw).as_posix()
    assert {"file": rel, "reason": "missing file"} in report["failures"]
    assert {
        "file": "ValidationNoisyBlocksSrgb.mat",
        "reason": "block [1, 0] identical to gt (no degradation)",
    } in report["failures"]
