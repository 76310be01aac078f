"""Tiny packed training stores, written as the prepare stage lays them out."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from restorebench.data.store import StoreWriter

# the source images of write_sidd_store, in the order holdout_split sees them
SIDD_IMAGES = [f"0{i}_pair" for i in range(5)]


def write_sidd_store(root: Path, size: int = 24) -> Path:
    """root/data/store/sidd/train: 5 source images x 2 sub-images each (size x size uint8), noisy = clean +
    N(0, 20/255)."""
    rng = np.random.default_rng(0)
    path = root / "data" / "store" / "sidd" / "train"
    path.parent.mkdir(parents=True)
    with StoreWriter(path, {"lq": (size, size, 3), "gt": (size, size, 3)}) as w:
        for image in SIDD_IMAGES:
            for k in range(2):
                gt = rng.uniform(40, 215, (size, size, 3))
                lq = np.clip(gt + rng.normal(0, 20, gt.shape), 0, 255)
                w.add(id=f"{image}_s{k}", image=image, y=0, x=k * size, lq=lq.astype(np.uint8), gt=gt.astype(np.uint8))
    return path
