"""Haze by the atmospheric scattering model (Koschmieder; McCartney 1976), as in RESIDE/DCPT:

    I = J * t + A * (1 - t),   t = exp(-beta * d)

J: the clean HxWx3 image in [0, 1]; d: a relative depth map in [0, 1] (here a smooth random field mixed
with a vertical gradient, far at the top, since no real depth is available); beta: scattering
coefficient per unit depth; A: airlight (global, grey) in [0, 1].
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from restorebench.degrade.noise import check_image, pick


def random_depth(
    shape: tuple[int, int], rng: np.random.Generator, gradient: float = 0.5, cells: int = 4
) -> np.ndarray:
    """A smooth HxW relative depth map in [0, 1]: `gradient` * (top far, bottom near) +
    (1 - gradient) * a random field (cells x cells Gaussian values, cubic-spline upsampled)."""
    if not 0 <= gradient <= 1:
        raise ValueError(f"gradient must lie in [0, 1], got {gradient!r}")
    h, w = shape
    coarse = rng.standard_normal((cells, cells))
    field = ndimage.zoom(coarse, (h / cells, w / cells), order=3, mode="nearest", grid_mode=True)
    field = field[:h, :w]
    span = np.ptp(field)
    field = (field - field.min()) / span if span > 0 else np.zeros_like(field)
    ramp = np.linspace(1.0, 0.0, h)[:, None] * np.ones((1, w))
    return (gradient * ramp + (1 - gradient) * field).astype(np.float32)


def haze(
    img: np.ndarray,
    rng: np.random.Generator,
    beta: float | None = None,
    beta_range: Sequence[float] | None = (0.6, 1.8),
    airlight: float | None = None,
    airlight_range: Sequence[float] | None = (0.7, 1.0),
    gradient: float = 0.5,
) -> np.ndarray:
    """Hazy HxWx3 float32 image in [0, 1]. beta >= 0 (per unit relative depth) and airlight in [0, 1]
    are fixed when given, else drawn uniformly (defaults follow RESIDE's ranges, beta 0.6-1.8,
    A 0.7-1.0). gradient: weight of the top-to-bottom depth ramp in the depth map."""
    img = check_image(img)
    b = pick(rng, "beta", beta, None if beta is not None else beta_range, low=0.0, high=1e3)
    a = pick(rng, "airlight", airlight, None if airlight is not None else airlight_range, low=0.0, high=1.0)
    d = random_depth(img.shape[:2], rng, gradient=gradient)
    t = np.exp(-b * d)[:, :, None].astype(np.float32)
    return np.clip(img * t + np.float32(a) * (1 - t), 0.0, 1.0).astype(np.float32)
