"""JPEG compression artefacts: encode/decode in memory with Pillow (libjpeg)."""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from PIL import Image

from restorebench.degrade.noise import check_image
from restorebench.images import to_uint8


def jpeg(
    img: np.ndarray,
    rng: np.random.Generator,
    quality: int | None = None,
    quality_range: Sequence[int] | None = (10, 50),
) -> np.ndarray:
    """JPEG round trip of an HxWx3 float32 image in [0, 1] at integer `quality` 1-100 (Pillow scale;
    fixed when given, else drawn uniformly from the inclusive `quality_range`). The image is rounded to
    uint8 first; Pillow's defaults otherwise (4:2:0 chroma subsampling, standard tables)."""
    img = check_image(img)
    if quality is not None:
        q = quality
    else:
        if quality_range is None:
            raise ValueError("quality (or quality_range) is required")
        try:
            lo, hi = (int(v) for v in quality_range)
        except (TypeError, ValueError):
            raise ValueError(f"quality_range must be a pair [low, high], got {quality_range!r}") from None
        if not 1 <= lo <= hi <= 100:
            raise ValueError(f"quality_range must satisfy 1 <= low <= high <= 100, got {quality_range!r}")
        q = int(rng.integers(lo, hi + 1))
    if int(q) != q or not 1 <= q <= 100:
        raise ValueError(f"quality must be an integer in [1, 100], got {quality!r}")
    u8 = to_uint8(img, half_up=True)
    mode_img = Image.fromarray(u8[:, :, 0] if u8.shape[2] == 1 else u8)
    buf = io.BytesIO()
    mode_img.save(buf, format="JPEG", quality=int(q))
    buf.seek(0)
    out = np.asarray(Image.open(buf).convert(mode_img.mode), dtype=np.float32) / 255.0
    return out.reshape(img.shape)
