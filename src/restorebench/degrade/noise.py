"""Noise: additive white Gaussian noise (IPT's denoising tasks) and Poisson-Gaussian camera noise.

Every function maps an HxWx3 float32 image in [0, 1] to a new HxWx3 float32 image and draws all its
randomness from the `numpy.random.Generator` it is given (never the global numpy or torch RNG).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def check_image(img: np.ndarray, name: str = "img") -> np.ndarray:
    """Return `img` as float32 HxWxC; raise naming the shape when it is not an image."""
    arr = np.asarray(img)
    if arr.ndim != 3 or arr.shape[2] not in (1, 3):
        raise ValueError(f"{name}: expected an HxWx3 (or HxWx1) array, got shape {arr.shape}")
    if arr.dtype == np.uint8:
        raise ValueError(f"{name}: expected float32 in [0, 1], got uint8 (divide by 255 first)")
    return arr.astype(np.float32, copy=False)


def check_nonneg(key: str, value: float) -> float:
    """Raise ValueError naming `key` when `value` is negative or not finite."""
    v = float(value)
    if not np.isfinite(v) or v < 0:
        raise ValueError(f"{key} must be a finite number >= 0, got {value!r}")
    return v


def pick(
    rng: np.random.Generator,
    key: str,
    value: float | None,
    value_range: Sequence[float] | None,
    *,
    default: float | None = None,
    log: bool = False,
    low: float = 0.0,
    high: float = np.inf,
) -> float:
    """One parameter value: `value` if given, else uniform (log-uniform if `log`) in `value_range`.

    Errors name `key` (or `key_range`): both or neither given, a range that is not [lo, hi] with lo <= hi,
    values outside [low, high].
    """
    if value is not None and value_range is not None:
        raise ValueError(f"give either {key} or {key}_range, not both")
    if value is None and value_range is None:
        if default is None:
            raise ValueError(f"{key} (or {key}_range) is required")
        value = default
    if value is not None:
        v = float(value)
        if not (np.isfinite(v) and low <= v <= high):
            raise ValueError(f"{key} must lie in [{low}, {high}], got {value!r}")
        return v
    try:
        lo, hi = (float(x) for x in value_range)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise ValueError(f"{key}_range must be a pair [low, high], got {value_range!r}") from None
    if not (low <= lo <= hi <= high):
        raise ValueError(f"{key}_range must satisfy {low} <= low <= high <= {high}, got {value_range!r}")
    if log:
        if lo <= 0:
            raise ValueError(f"{key}_range must be > 0 for log-uniform sampling, got {value_range!r}")
        return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
    return float(rng.uniform(lo, hi))


def gaussian_noise(
    img: np.ndarray,
    rng: np.random.Generator,
    sigma: float | None = None,
    sigma_range: Sequence[float] | None = None,
    clip: bool = True,
) -> np.ndarray:
    """Additive white Gaussian noise, i.i.d. per pixel and channel.

    img: HxWx3 float32 in [0, 1]. sigma: standard deviation on the 0-255 scale (IPT: 30 and 50); or
    sigma_range [lo, hi] to draw sigma uniformly per call. clip: clamp the result to [0, 1]. IPT's
    official code clamps after adding noise (`(noise + hr).clamp(0, 255)`, Pretrained-IPT trainer.py)
    and does not quantise, so clip=True is the default; clipping lowers the measured std near 0 and 1.
    """
    img = check_image(img)
    s = pick(rng, "sigma", sigma, sigma_range, low=0.0)
    out = img + rng.standard_normal(img.shape, dtype=np.float32) * np.float32(s / 255.0)
    return np.clip(out, 0.0, 1.0) if clip else out


def srgb_to_linear(x: np.ndarray) -> np.ndarray:
    """Inverse sRGB transfer (IEC 61966-2-1) on [0, 1] values."""
    x = np.clip(x, 0.0, 1.0)
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4).astype(np.float32)


def linear_to_srgb(x: np.ndarray) -> np.ndarray:
    """sRGB transfer (IEC 61966-2-1) on [0, 1] linear values."""
    x = np.clip(x, 0.0, 1.0)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * x ** (1 / 2.4) - 0.055).astype(np.float32)


def poisson_gaussian(
    lin: np.ndarray, rng: np.random.Generator, shot: float, read: float, poisson: bool = False
) -> np.ndarray:
    """Poisson-Gaussian noise (Foi et al. 2008) on linear intensities `lin` in [0, 1], unclipped.

    Variance per pixel = shot * lin + read**2: `shot` is the signal-dependent variance per unit
    intensity (one photo-electron = `shot` intensity units), `read` the signal-independent std.
    poisson=True draws the exact Poisson count Poisson(lin / shot) * shot, then Gaussian read noise
    (the same draws, in the same order, as the embedded SIDD sample's `camera_noise`); poisson=False
    uses the heteroscedastic Gaussian approximation (faster, as in Brooks et al. 2019).
    """
    lin = np.clip(lin, 0.0, None)
    if poisson:
        signal = rng.poisson(lin / shot) * shot if shot > 0 else lin
        return (signal + rng.normal(0.0, read, size=lin.shape)).astype(np.float32)
    var = np.float32(shot) * lin + np.float32(read) ** 2
    return (lin + np.sqrt(var) * rng.standard_normal(lin.shape, dtype=np.float32)).astype(np.float32)


def to_linear(img: np.ndarray, gamma: float | str) -> np.ndarray:
    """Gamma-encoded [0, 1] -> linear: x ** gamma, or the sRGB curve when gamma == "srgb"."""
    if gamma == "srgb":
        return srgb_to_linear(img)
    g = check_nonneg("gamma", gamma)  # type: ignore[arg-type]
    if g == 0:
        raise ValueError("gamma must be > 0")
    return (np.clip(img, 0.0, 1.0) ** np.float32(g)).astype(np.float32)


def from_linear(lin: np.ndarray, gamma: float | str) -> np.ndarray:
    """Inverse of `to_linear`."""
    if gamma == "srgb":
        return linear_to_srgb(lin)
    return (np.clip(lin, 0.0, 1.0) ** np.float32(1.0 / float(gamma))).astype(np.float32)


def camera_noise(
    img: np.ndarray,
    rng: np.random.Generator,
    shot: float | None = None,
    read: float | None = None,
    shot_range: Sequence[float] | None = None,
    read_range: Sequence[float] | None = None,
    gamma: float | str = 2.2,
    poisson: bool = True,
) -> np.ndarray:
    """Realistic sensor noise: inverse gamma -> Poisson-Gaussian noise -> clip -> gamma.

    img: HxWx3 float32 gamma-encoded in [0, 1]; returns the noisy image in [0, 1] (not quantised).
    shot: variance per unit linear intensity (default 0.004, ~ISO 400 in the SIDD sample's scale
    a = 1e-3 * ISO / 100); read: read-noise std in linear units (default 0.0016, b = 4e-4 * ISO / 100).
    shot_range / read_range draw log-uniformly (Brooks et al. 2019, "Unprocessing", sample shot noise
    log-uniformly in about [1e-4, 1.2e-2]). gamma: 2.2 as the embedded SIDD sample (and GoPro), or
    "srgb". poisson: exact Poisson shot noise (default) or its Gaussian approximation.
    """
    img = check_image(img)
    s = pick(rng, "shot", shot, shot_range, default=0.004, log=shot_range is not None)
    r = pick(rng, "read", read, read_range, default=0.0016, log=read_range is not None)
    lin = to_linear(img, gamma)
    noisy = np.clip(poisson_gaussian(lin, rng, s, r, poisson=poisson), 0.0, 1.0)
    return from_linear(noisy, gamma)
