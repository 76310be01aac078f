"""Low-light synthesis, LOL-style (Lv et al. 2018 MBLLEN; Wei et al. 2018 LOL synthetic pairs):
gamma darkening, an exposure scale, then Poisson-Gaussian sensor noise:

    y = scale * x ** gamma + noise,  var(noise) = shot * y + read ** 2

img: HxWx3 float32 in [0, 1]; output in [0, 1] (clipped, not quantised).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from restorebench.degrade.noise import check_image, pick, poisson_gaussian


def low_light(
    img: np.ndarray,
    rng: np.random.Generator,
    gamma: float | None = None,
    gamma_range: Sequence[float] | None = (2.0, 3.5),
    scale: float | None = None,
    scale_range: Sequence[float] | None = (0.5, 1.0),
    shot: float | None = None,
    shot_range: Sequence[float] | None = (1e-4, 2e-3),
    read: float | None = None,
    read_range: Sequence[float] | None = (1e-3, 1e-2),
) -> np.ndarray:
    """Darken and add noise. gamma >= 1 darkens (x ** gamma); scale in (0, 1] multiplies the exposure;
    shot: noise variance per unit intensity; read: read-noise std (both in [0, 1] units, drawn
    log-uniformly from their ranges unless fixed). A fixed value overrides the default range."""
    img = check_image(img)
    g = pick(rng, "gamma", gamma, None if gamma is not None else gamma_range, low=0.0, high=100.0)
    s = pick(rng, "scale", scale, None if scale is not None else scale_range, low=0.0, high=1.0)
    sh = pick(
        rng,
        "shot",
        shot,
        None if shot is not None else shot_range,
        low=0.0,
        high=1.0,
        log=shot is None and shot_range is not None,
    )
    rd = pick(
        rng,
        "read",
        read,
        None if read is not None else read_range,
        low=0.0,
        high=1.0,
        log=read is None and read_range is not None,
    )
    dark = np.float32(s) * np.clip(img, 0.0, 1.0) ** np.float32(g)
    return np.clip(poisson_gaussian(dark, rng, sh, rd), 0.0, 1.0).astype(np.float32)
