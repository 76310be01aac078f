"""MATLAB-compatible bicubic `imresize` and the super-resolution degradation built on it.

The SR convention of EDSR and IPT: LR = imresize(HR, 1/s) with MATLAB's default bicubic kernel and
antialiasing, HR first cropped to a multiple of s. Reimplemented from the algorithm MATLAB documents in
`imresize.m` (function `contributions`):

- cubic kernel with a = -0.5 (Keys 1981);
- when shrinking (scale < 1) with antialiasing, the kernel is stretched by 1/scale:
  h(x) = scale * cubic(scale * x), width 4 / scale;
- output pixel x (1-based) maps to input coordinate u = x / scale + 0.5 * (1 - 1 / scale);
- taps left = floor(u - width / 2) + (0 .. ceil(width) + 1), weights normalised to sum 1;
- indices outside [1, n] are mirrored symmetrically (1 2 .. n n .. 2 1), taps with zero weight in every
  row are dropped;
- output length ceil(n * scale); dimensions resized one at a time, the one with the smaller scale first
  (rows first on ties).

On uint8 input MATLAB rounds (half away from zero) and saturates to uint8 after each dimension; this is
reproduced for uint8 input. Float input is kept in float throughout (no rounding).
"""

from __future__ import annotations

import math

import numpy as np


def cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.5 (MATLAB imresize's "bicubic")."""
    ax = np.abs(x)
    ax2, ax3 = ax**2, ax**3
    return (1.5 * ax3 - 2.5 * ax2 + 1) * (ax <= 1) + (-0.5 * ax3 + 2.5 * ax2 - 4 * ax + 2) * (
        (ax > 1) & (ax <= 2)
    )


def contributions(
    in_len: int, out_len: int, scale: float, antialias: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """MATLAB's weights (out_len x P) and 0-based input indices (out_len x P) along one dimension."""
    width = 4.0
    if scale < 1 and antialias:

        def h(x: np.ndarray) -> np.ndarray:
            return scale * cubic(scale * x)

        width = width / scale
    else:
        h = cubic
    x = np.arange(1, out_len + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(u - width / 2)
    taps = int(math.ceil(width)) + 2
    ind = left[:, None] + np.arange(taps)[None, :]  # 1-based
    w = h(u[:, None] - ind)
    w = w / w.sum(axis=1, keepdims=True)
    mirror = np.concatenate([np.arange(in_len), np.arange(in_len)[::-1]])  # 0-based 1..n n..1
    ind = mirror[np.mod(ind.astype(np.int64) - 1, 2 * in_len)]
    keep = np.any(w != 0, axis=0)
    return w[:, keep], ind[:, keep]


def resize_matrix(in_len: int, out_len: int, scale: float, antialias: bool = True) -> np.ndarray:
    """Dense out_len x in_len matrix M with out = M @ in along one dimension."""
    w, ind = contributions(in_len, out_len, scale, antialias)
    m = np.zeros((out_len, in_len), dtype=np.float64)
    rows = np.repeat(np.arange(out_len), w.shape[1])
    np.add.at(m, (rows, ind.ravel()), w.ravel())
    return m


def _round_u8(x: np.ndarray) -> np.ndarray:
    # MATLAB converts double -> uint8 by rounding half away from zero and saturating.
    return np.clip(np.floor(x + 0.5), 0, 255).astype(np.uint8)


def imresize(img: np.ndarray, scale: float, antialias: bool = True) -> np.ndarray:
    """MATLAB `imresize(img, scale)` with the default bicubic kernel.

    img: HxW or HxWxC, float (any range, kept in float32) or uint8 (MATLAB's uint8 path, rounded after
    each dimension). scale > 0: the same factor for both axes; output ceil(H * scale) x ceil(W * scale).
    """
    if not scale > 0:
        raise ValueError(f"scale must be > 0, got {scale!r}")
    arr = np.asarray(img)
    if arr.ndim not in (2, 3):
        raise ValueError(f"img: expected HxW or HxWxC, got shape {arr.shape}")
    is_u8 = arr.dtype == np.uint8
    out = arr.astype(np.float64)
    for axis in (0, 1):  # equal scales: MATLAB's stable sort keeps rows first
        n = out.shape[axis]
        m = resize_matrix(n, int(math.ceil(n * scale)), scale, antialias)
        out = np.moveaxis(np.tensordot(m, out, axes=([1], [axis])), 0, axis)
        if is_u8:
            out = _round_u8(out).astype(np.float64)
    return out.astype(np.uint8) if is_u8 else out.astype(np.float32)


def bicubic_down(img: np.ndarray, rng: np.random.Generator | None = None, scale: int = 2) -> np.ndarray:
    """The SR degradation: LR = imresize(HR, 1/scale), HR first cropped to a multiple of `scale`.

    img: HxWx3 float32 in [0, 1]; scale: 2, 3 or 4; returns (H // s) x (W // s) x 3 float32 clipped to
    [0, 1]. `rng` is unused (deterministic) and accepted for the common degradation signature. The
    matching HR is `img[: H // s * s, : W // s * s]` (see `crop_to_multiple`).
    """
    if scale not in (2, 3, 4):
        raise ValueError(f"scale must be 2, 3 or 4, got {scale!r}")
    arr = np.asarray(img)
    if arr.shape[0] < scale or arr.shape[1] < scale:
        raise ValueError(f"img: {arr.shape[0]}x{arr.shape[1]} is smaller than the scale {scale}")
    hr = crop_to_multiple(arr, scale)
    return np.clip(imresize(hr, 1.0 / scale), 0.0, 1.0).astype(np.float32)


def crop_to_multiple(img: np.ndarray, scale: int) -> np.ndarray:
    """Crop the bottom/right so height and width are multiples of `scale` (EDSR/IPT convention)."""
    h, w = img.shape[:2]
    return img[: h - h % scale, : w - w % scale]
