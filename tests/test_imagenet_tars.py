"""ImageNet kept as its class tars: fetch keeps them, the manifest indexes each JPEG member by offset, and
validation and the degrade stage read one image in place, without extracting anything."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from restorebench.config import SampleConfig
from restorebench.data.fetch import fetch_dataset
from restorebench.data.manifest import build_manifest, read_image_bytes, write_manifest
from restorebench.data.synth import open_store
from restorebench.data.validate import validate_dataset, validate_stage
from restorebench.degrade.stage import degrade_imagenet
from restorebench.errors import RestorebenchError

CLASSES = ("n01440764", "n01443537", "n01484850")


def jpeg(rng: np.random.Generator, h: int = 40, w: int = 52) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


@pytest.fixture()
def ilsvrc(tmp_path: Path) -> tuple[Path, dict[str, bytes]]:
    """An ILSVRC2012_img_train.tar look-alike: one uncompressed tar per class, three JPEGs in each."""
    rng = np.random.default_rng(0)
    images: dict[str, bytes] = {}
    outer = tmp_path / "ILSVRC2012_img_train.tar"
    with tarfile.open(outer, "w") as tf:
        for wnid in CLASSES:
            inner = tmp_path / f"{wnid}.tar"
            with tarfile.open(inner, "w") as it:
                for k in (1, 2, 3):
                    name, data = f"{wnid}_{k}.JPEG", jpeg(rng)
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    it.addfile(info, io.BytesIO(data))
                    images[name] = data
            tf.add(inner, arcname=inner.name)
            inner.unlink()
    return outer, images


def fetched(tmp_path: Path, source: Path) -> Path:
    return fetch_dataset("imagenet", str(source), tmp_path / "raw" / "imagenet", cache_dir=tmp_path, sample=SampleConfig(),
                         seed=0, min_free_bytes=0)  # fmt: skip


def test_fetch_keeps_class_tars_and_manifest_reads_members_in_place(tmp_path, ilsvrc):
    outer, images = ilsvrc
    raw = fetched(tmp_path, outer)
    # one file per class, not one per image
    assert sorted(p.name for p in (raw / "train").iterdir()) == [f"{w}.tar" for w in CLASSES]
    df = build_manifest("imagenet", raw, workers=1)
    assert len(df) == 9 and (df["offset"] >= 0).all()
    assert df["gt_path"].iloc[0] == "train/n01440764.tar!n01440764_1.JPEG"
    assert list(df["group"].unique()) == list(CLASSES) and df["pair_id"].iloc[4] == "n01443537_2"
    for row in df.itertuples():
        name = row.gt_path.split("!")[1]
        data = read_image_bytes(raw, row.gt_path, row.offset, row.bytes)
        assert data == images[name]
        assert row.sha256 == hashlib.sha256(images[name]).hexdigest()
        assert (row.height, row.width, row.channels) == (40, 52, 3)
    report = validate_dataset("imagenet", df, raw, expected_pairs={"train": 9}, expected_groups={"train": 3},
                              workers=1)  # fmt: skip
    assert report["success"], report["failures"]
    assert report["files_checked"] == 9


def test_validation_names_the_member_whose_bytes_changed(tmp_path, ilsvrc):
    outer, _ = ilsvrc
    raw = fetched(tmp_path, outer)
    df = build_manifest("imagenet", raw, workers=1)
    row = df.iloc[4]
    tar = (raw / "train" / "n01443537.tar").resolve()
    with open(tar, "r+b") as f:  # flip one byte inside the member's data
        f.seek(int(row.offset) + 200)
        byte = f.read(1)
        f.seek(int(row.offset) + 200)
        f.write(bytes([byte[0] ^ 0xFF]))
    report = validate_dataset("imagenet", df, raw, expected_pairs={}, expected_groups={}, workers=1)
    assert not report["success"]
    assert report["failures"] == [{"file": "train/n01443537.tar!n01443537_2.JPEG",
                                   "reason": "sha256 differs from the manifest (file changed after the manifest "
                                             "was built)"}]  # fmt: skip
    # a tar cut inside a member: that member and the ones after it fail, named
    with open(tar, "r+b") as f:
        f.truncate(int(row.offset) + 10)
    report = validate_dataset("imagenet", df, raw, expected_pairs={}, expected_groups={}, workers=1)
    named = [f["file"] for f in report["failures"]]
    assert named == [f"train/n01443537.tar!n01443537_{k}.JPEG" for k in (2, 3)]
    assert "cut short" in report["failures"][0]["reason"]


def test_folder_of_class_tars_is_linked_and_degrade_reads_members(tmp_path, ilsvrc):
    outer, images = ilsvrc
    folder = tmp_path / "imagenet_tars"
    with tarfile.open(outer) as tf:
        tf.extractall(folder / "train", filter="data")
    raw = fetched(tmp_path, folder)
    assert (raw / "train").is_symlink()
    root = tmp_path
    write_manifest(build_manifest("imagenet", raw, workers=1), root / "manifests" / "imagenet.parquet")
    validate_stage("imagenet", root=root, expected_pairs={}, expected_groups={}, workers=1)  # degrade reads only validated data
    stats = degrade_imagenet(root=root, tasks={"dn": [{"name": "gaussian_noise", "sigma": 25}]}, patch=32,
                             patches_per_image=1, margin=4, seed=0, workers=1)  # fmt: skip
    assert stats["images"] == 9 and stats["bytes"] == 9 * 40 * 40 * 3
    store = open_store(root / "store" / "imagenet" / "train", task="dn")
    for i in range(9):
        _, gt, meta = store.get(i)
        src = np.asarray(Image.open(io.BytesIO(images[f"{meta['image']}.JPEG"])).convert("RGB"))
        np.testing.assert_array_equal(gt, src[meta["y"] : meta["y"] + 32, meta["x"] : meta["x"] + 32])


def test_folder_without_classes_is_refused(tmp_path):
    (tmp_path / "empty" / "train").mkdir(parents=True)
    with pytest.raises(RestorebenchError, match=r"class tars nXXXXXXXX.tar or class folders"):
        fetched(tmp_path, tmp_path / "empty")
