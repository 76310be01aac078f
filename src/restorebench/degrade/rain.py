"""Synthetic rain streaks (IPT's deraining task was trained and tested on Rain100L-like data).

Recipe, as in the common streak synthesis (e.g. Garg & Nayar's streak appearance, the Rain100L
generator): sparse random seed points -> a slight Gaussian blur for drop width -> a line (motion) kernel
at the rain angle for streak length -> scale to the streak intensity -> added to the image, O = I + r
clipped to [0, 1], as IPT's rain model (and Rain100L's) composes them; "screen" blending is an option.
All streaks are achromatic (the same map on every channel).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from restorebench.degrade.blur import convolve, gaussian_kernel, rasterise
from restorebench.degrade.noise import check_image, pick


def line_kernel(length: float, angle: float) -> np.ndarray:
    """Anti-aliased straight line kernel: `length` pixels, `angle` degrees from vertical
    (positive = clockwise, rain falling to the right). Odd size, non-negative, sum 1."""
    length = max(float(length), 1.0)
    size = int(np.ceil(length)) + 2
    size += 1 - size % 2
    t = np.linspace(-length / 2, length / 2, max(2, int(4 * length)))
    a = np.deg2rad(angle)
    pts = t * np.sin(a) + 1j * t * np.cos(a)
    return rasterise(pts, size)


def rain_streaks(
    img: np.ndarray,
    rng: np.random.Generator,
    amount: float | None = None,
    amount_range: Sequence[float] | None = (0.002, 0.008),
    angle: float | None = None,
    angle_range: Sequence[float] | None = (-30.0, 30.0),
    length: float | None = None,
    length_range: Sequence[float] | None = (10.0, 30.0),
    intensity: float | None = None,
    intensity_range: Sequence[float] | None = (0.5, 0.9),
    width: float = 0.6,
    blend: str = "add",
) -> np.ndarray:
    """Add rain streaks to an HxWx3 float32 image in [0, 1].

    amount: fraction of pixels that seed a streak; angle: degrees from vertical; length: streak length
    in pixels; intensity: peak streak brightness in [0, 1]; width: Gaussian sigma (pixels) of the drop
    cross-section; blend: "add" (I + R clipped, IPT's; the default) or "screen" (1 - (1 - I)(1 - R)). Each of
    amount/angle/length/intensity is fixed when given, else drawn uniformly from its *_range; giving
    a fixed value overrides the default range.
    """
    img = check_image(img)
    if blend not in ("screen", "add"):
        raise ValueError(f"blend must be 'screen' or 'add', got {blend!r}")
    am = pick(rng, "amount", amount, None if amount is not None else amount_range, low=0.0, high=1.0)
    ang = pick(rng, "angle", angle, None if angle is not None else angle_range, low=-90.0, high=90.0)
    ln = pick(rng, "length", length, None if length is not None else length_range, low=1.0, high=1e4)
    it = pick(
        rng, "intensity", intensity, None if intensity is not None else intensity_range, low=0.0, high=1.0
    )
    if width < 0:
        raise ValueError(f"width must be >= 0, got {width!r}")
    h, w = img.shape[:2]
    seeds = (rng.random((h, w), dtype=np.float32) < am) * rng.uniform(0.6, 1.0, (h, w)).astype(np.float32)
    streak = seeds[:, :, None]
    if width > 0:
        streak = convolve(streak, gaussian_kernel(width))
    streak = convolve(streak, line_kernel(ln, ang))[:, :, 0]
    peak = float(streak.max())
    rain = (np.clip(streak / peak, 0.0, 1.0) * it if peak > 0 else streak)[:, :, None].astype(np.float32)
    out = 1.0 - (1.0 - img) * (1.0 - rain) if blend == "screen" else img + rain
    return np.clip(out, 0.0, 1.0).astype(np.float32)
