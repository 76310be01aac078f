"""The data stages (fetch, validate, prepare) on a tiny sample in a throwaway project folder `work`, as the
stage commands lay it out (work/data/raw, manifests, validation, store). Child processes import these too
(tests/test_faults_data.py kills them midway), so they live here, not in a test file."""

from __future__ import annotations

from pathlib import Path

from restorebench.config import SampleConfig

# a sample of a few 32x48 GoPro frames and two 32x32 SIDD instances: every stage runs in well under a second
TINY = SampleConfig(gopro_train_sequences=1, gopro_test_sequences=1, gopro_frames=2, gopro_height=32,
                    gopro_width=48, gopro_average=3, sidd_instances=2, sidd_height=32, sidd_width=32,
                    sidd_val_images=1, sidd_val_blocks=2, sidd_val_block_size=16)  # fmt: skip


def fetch_tiny(dataset: str, source: str | Path, work: Path, seed: int = 0) -> dict:
    """`restorebench fetch` of `dataset` from `source` ("sample", a folder or an archive) into work/data."""
    from restorebench.data import fetch

    return fetch.fetch_and_index(dataset, str(source), work / "data/raw" / dataset,
                                 work / f"data/manifests/{dataset}.parquet", cache_dir=work / "cache", sample=TINY,
                                 seed=seed, min_free_bytes=0, expected_pairs={})  # fmt: skip


def validate_tiny(work: Path, dataset: str) -> None:
    """`restorebench validate` of a fetched dataset (no expected counts)."""
    from restorebench.data.validate import validate_stage

    validate_stage(dataset, root=work / "data", expected_pairs={}, expected_groups={}, workers=1)


def prepare_tiny(work: Path, dataset: str = "gopro", workers: int = 1) -> dict:
    """`restorebench prepare` of a validated dataset in 16x16 sub-images (step 16)."""
    from restorebench.data.prepare import prepare_dataset

    return prepare_dataset(dataset, root=work / "data", size=16, step=16, workers=workers)
