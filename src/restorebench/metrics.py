"""PSNR and SSIM by the field's published protocols (docs/ARCHITECTURE.md, "Protocol facts").

Two implementations that agree to 1e-4 dB / 1e-5 SSIM (tests/test_metrics.py checks it):

* NumPy/SciPy reference on one HxWxC image: `psnr`, `ssim`, `ssim_conventions`. float64 throughout.
* Batched torch version on (B,C,H,W) tensors for GPU evaluation: `psnr_torch`, `ssim_torch`,
  `ssim_conventions_torch`. Computed in float64 on the tensors' device whatever the input dtype
  (the work is a few element-wise passes, memory-bound, so float64 costs little next to the model),
  giving the reference numbers up to float64 round-off (~1e-12). On CPU use the NumPy version: it is
  ~3x faster there (benchmarks/metrics.py).

Evaluating both SSIM conventions: call `ssim_conventions` (one filtering pass, ~0.3 s CPU time per
1280x720x3 image) rather than `ssim` twice (~0.2 s each).

Conventions
-----------
``data_range`` always describes the *input* values: 1 for floats in [0, 1], 255 for uint8 (or floats
on the 0-255 scale). Inputs outside [0, data_range] are an error, not a silently wrong number.

SSIM ``convention="basicsr"`` (BasicSR ``calculate_ssim``, used for GoPro/SR tables): per channel an
11x11 Gaussian window, sigma 1.5, normalised (BasicSR builds it with ``cv2.getGaussianKernel(11, 1.5)``
and filters with ``cv2.filter2D(...)[5:-5, 5:-5]``), so only the *valid* region is kept: 5 pixels lost
per side; the SSIM map is averaged per channel, then over channels.

SSIM ``convention="matlab3d"`` (MATLAB ``ssim(A, ref)`` on an HxWx3 array, as used for SIDD by
Restormer/NAFNet): MATLAB treats a 3-D array as a volume (its help text: "All 3D arrays are considered
3D volumetric images. RGB images will also be processed as 3D volumetric images"). Its
``getGaussianWeightingFilter`` uses ``filtRadius = ceil(3*radius)`` (radius = sigma = 1.5 -> 5), so
``filtSize = 2*filtRadius + 1 = 11``, and a 3-D Gaussian applied with ``imfilter(..., 'conv',
'replicate')`` (MathWorks ssim.m, "Copyright 2013-2014", as vendored in
github.com/rwenqi/GFN-dehazing/blob/master/ssim.m). Later releases are documented to compute the same
Gaussian-weighted statistics (via ``imgaussfilt``/``imgaussfilt3`` with 'replicate' padding); we have not
read their source, so the 2014 code is the reference here. The isotropic 3-D
Gaussian is separable, so we filter along rows, columns and channels with the same 11-tap kernel and
edge replication, then average the full map. (MATLAB also zeroes kernel taps below eps*max; for sigma
1.5 and radius 5 the smallest 3-D tap is exp(-75/4.5) ~ 6e-8, so none is zeroed.)

Y channel (``y_channel=True``, BT.601 as in BasicSR ``rgb2ycbcr``/``to_y_channel``): the RGB input
(channel order R, G, B) is scaled to [0, 1] by ``data_range``, then
``Y = 16 + 65.481 R + 128.553 G + 24.966 B`` on the 0-255 scale (not rounded), and the metric is taken
with L = 255, exactly as BasicSR does. So PSNR-Y of uint8 input (data_range 255) equals PSNR-Y of the
same image as floats in [0, 1] (data_range 1).

``crop_border`` removes that many pixels from each of the four sides before anything else.
"""

from __future__ import annotations

import math
from numbers import Real

import numpy as np
import torch
from scipy import ndimage

CONVENTIONS: tuple[str, ...] = ("basicsr", "matlab3d")
SIGMA = 1.5
RADIUS = 5  # ceil(3 * 1.5): MATLAB's filter radius; BasicSR's 11-tap window has the same radius
K1, K2 = 0.01, 0.03  # Wang et al. 2004; C1 = (K1 L)^2, C2 = (K2 L)^2 in both conventions
# BT.601 "studio swing" luma on the 0-255 scale from [0, 1] RGB (BasicSR rgb2ycbcr, y_only=True)
Y_WEIGHTS = (65.481, 128.553, 24.966)
Y_OFFSET = 16.0
Y_RANGE = 255.0
# Floats may exceed [0, data_range] by this fraction of data_range (float32 round-off of x/255 etc.)
RANGE_TOL = 1e-5


def gaussian_kernel_1d(sigma: float = SIGMA, radius: int = RADIUS) -> np.ndarray:
    """Normalised 1-D Gaussian taps exp(-x^2 / (2 sigma^2)), x = -radius..radius; float64, sums to 1."""
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-(x * x) / (2.0 * sigma * sigma))
    return k / k.sum()


def _replicate_mix_matrix(n: int, kernel: np.ndarray) -> np.ndarray:
    """n x n matrix M with (M @ v) = 1-D correlation of v with `kernel` under edge replication.

    Used for filtering along the (short) channel axis in the matlab3d convention: with C=3 channels an
    11-tap filter with replicate padding is just a 3x3 linear mix.
    """
    r = len(kernel) // 2
    m = np.zeros((n, n), dtype=np.float64)
    for i in range(n):
        for t, w in enumerate(kernel):
            m[i, min(max(i + t - r, 0), n - 1)] += w
    return m


# --------------------------------------------------------------------------- input checks (NumPy)


def _check_data_range(data_range: float) -> float:
    if isinstance(data_range, bool) or not isinstance(data_range, Real):
        raise ValueError(f"data_range must be a positive number (1 or 255), got {data_range!r}")
    value = float(data_range)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"data_range must be a positive finite number (1 or 255), got {data_range!r}")
    return value


def _check_image(img: np.ndarray, name: str, data_range: float) -> None:
    if not isinstance(img, np.ndarray):
        raise TypeError(f"{name} must be a numpy array of shape HxWxC or HxW, got {type(img).__name__}")
    if img.ndim not in (2, 3):
        raise ValueError(f"{name} must have shape HxWxC or HxW, got shape {img.shape}")
    if img.ndim == 3 and img.shape[2] > 4:
        raise ValueError(
            f"{name} must have shape HxWxC with C <= 4 channels, got shape {img.shape}"
            " (channels-first? transpose to HxWxC)"
        )
    if img.dtype == np.uint8:
        if data_range != 255:
            raise ValueError(
                f"{name} is uint8, so data_range must be 255, got {data_range:g}"
                " (for [0, 1] data pass floats, e.g. img / 255.0)"
            )
        return
    if not np.issubdtype(img.dtype, np.floating):
        raise ValueError(f"{name} must be uint8 or a float array, got dtype {img.dtype}")
    lo, hi = float(np.min(img)), float(np.max(img))
    if math.isnan(lo) or math.isnan(hi):
        raise ValueError(f"{name} contains NaN")
    tol = RANGE_TOL * data_range
    if lo < -tol or hi > data_range + tol:
        raise ValueError(
            f"{name} values must lie in [0, data_range] = [0, {data_range:g}], got [{lo:.6g}, {hi:.6g}]"
            " (clamp the output, or pass the data_range of the input's scale)"
        )


def _prepare(
    pred: np.ndarray, target: np.ndarray, data_range: float, crop_border: int, y_channel: bool
) -> tuple[np.ndarray, np.ndarray, float]:
    """Validate, crop, optionally convert to Y; returns float64 HxWxC arrays and the metric's L."""
    data_range = _check_data_range(data_range)
    _check_image(pred, "pred", data_range)
    _check_image(target, "target", data_range)
    if pred.shape != target.shape:
        raise ValueError(f"pred and target must have the same shape, got {pred.shape} and {target.shape}")
    if isinstance(crop_border, bool) or not isinstance(crop_border, int | np.integer) or crop_border < 0:
        raise ValueError(f"crop_border must be a non-negative int, got {crop_border!r}")
    h, w = pred.shape[:2]
    if 2 * crop_border >= min(h, w):
        raise ValueError(f"crop_border={crop_border} leaves no pixels of a {h}x{w} image")
    x = pred.astype(np.float64)
    y = target.astype(np.float64)
    if x.ndim == 2:
        x, y = x[..., None], y[..., None]
    if crop_border:
        c = int(crop_border)
        x, y = x[c:-c, c:-c], y[c:-c, c:-c]
    if y_channel:
        if x.shape[2] != 3:
            raise ValueError(f"y_channel=True needs RGB images (HxWx3), got shape {pred.shape}")
        return _rgb_to_y(x, data_range), _rgb_to_y(y, data_range), Y_RANGE
    return x, y, data_range


def _rgb_to_y(img: np.ndarray, data_range: float) -> np.ndarray:
    """HxWx3 RGB on [0, data_range] -> HxWx1 BT.601 Y on the 0-255 scale (16..235), float64."""
    r, g, b = (img[..., i] / data_range for i in range(3))
    return (Y_OFFSET + Y_WEIGHTS[0] * r + Y_WEIGHTS[1] * g + Y_WEIGHTS[2] * b)[..., None]


def _check_convention(convention: str) -> None:
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown SSIM convention {convention!r}; choose from {list(CONVENTIONS)}")


# --------------------------------------------------------------------------- NumPy reference


def psnr(
    pred: np.ndarray,
    target: np.ndarray,
    *,
    data_range: float,
    crop_border: int = 0,
    y_channel: bool = False,
) -> float:
    """Peak signal-to-noise ratio in dB, 10*log10(L^2 / MSE), MSE over all pixels and channels.

    pred, target: HxWxC (or HxW) arrays, uint8 (data_range 255) or float in [0, data_range].
    Returns inf for identical images. With y_channel, L = 255 (see module docstring).
    """
    x, y, peak = _prepare(pred, target, data_range, crop_border, y_channel)
    mse = float(np.mean((x - y) ** 2))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(peak * peak / mse)


def _ssim_map_(mx, my, sum_sq, cross, c1: float, c2: float):
    """SSIM map from Gaussian-weighted moments, computed IN PLACE (the inputs are overwritten).

    mx, my: local means; sum_sq: local E[x^2] + E[y^2]; cross: local E[xy]; NumPy arrays or torch
    tensors (views are fine). Only sigma_x^2 + sigma_y^2 enters SSIM, so x^2 + y^2 is filtered as one
    map (4 filter passes instead of 5). In-place arithmetic avoids ~10 image-sized temporaries, which
    on a 1280x720 image is most of the cost after filtering.
    SSIM = (2 mx my + C1)(2 cov + C2) / ((mx^2 + my^2 + C1)(var_x + var_y + C2)).
    """
    mxy = mx * my
    mx *= mx
    my *= my
    mx += my  # mx^2 + my^2
    cross -= mxy
    cross *= 2.0
    cross += c2  # 2 cov + C2
    mxy *= 2.0
    mxy += c1
    mxy *= cross  # numerator
    sum_sq -= mx
    sum_sq += c2  # var_x + var_y + C2
    mx += c1
    mx *= sum_sq  # denominator
    mxy /= mx
    return mxy


def _moments_np(x: np.ndarray, y: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Spatially filtered moments, array (4, C, H, W): mu_x, mu_y, E[x^2+y^2], E[xy].

    Edge replication ('nearest') at the image border: that is MATLAB's padding, and the interior
    [5:-5, 5:-5] touches no padding, which is BasicSR's valid region. So one pass serves both.
    """
    h, w, c = x.shape
    # channels-first makes the row/column passes run along contiguous memory
    st = np.empty((4, c, h, w), dtype=np.float64)
    st[0] = np.moveaxis(x, -1, 0)
    st[1] = np.moveaxis(y, -1, 0)
    np.multiply(st[0], st[0], out=st[2])
    np.multiply(st[1], st[1], out=st[3])
    st[2] += st[3]
    np.multiply(st[0], st[1], out=st[3])
    tmp = _correlate_rows_replicate(st.reshape(4 * c, h, w), kernel).reshape(st.shape)
    return ndimage.correlate1d(tmp, kernel, axis=3, mode="nearest", output=tmp)


def _correlate_rows_replicate(a: np.ndarray, kernel: np.ndarray, block: int = 48) -> np.ndarray:
    """Correlate each (H, W) plane of a (P, H, W) array with a symmetric kernel along H, 'nearest' edges.

    Same numbers as ``ndimage.correlate1d(a, kernel, axis=1, mode="nearest")`` (same pairing of the
    symmetric taps), ~1.5x faster on 1280x720: ndimage walks the strided H axis column by column,
    while these shifted sums over blocks of rows stay in cache and in contiguous memory.
    """
    p, h, w = a.shape
    r = len(kernel) // 2
    out = np.empty_like(a)
    rows = np.clip(np.arange(-r, h + r), 0, h - 1)  # replicate padding
    tmp = np.empty((block, w), dtype=a.dtype)
    for i in range(p):
        padded = a[i].take(rows, axis=0)
        for r0 in range(0, h, block):
            n = min(h, r0 + block) - r0
            o, t = out[i, r0 : r0 + n], tmp[:n]
            np.multiply(padded[r0 + r : r0 + r + n], kernel[r], out=o)
            for j in range(r):  # taps j and 2r - j share a weight
                np.add(padded[r0 + j : r0 + j + n], padded[r0 + 2 * r - j : r0 + 2 * r - j + n], out=t)
                t *= kernel[j]
                o += t
    return out


def _ssim_from_moments(mom: np.ndarray, convention: str, peak: float) -> float:
    """SSIM from `_moments_np` output. basicsr works in place on `mom`: call it last."""
    c1, c2 = (K1 * peak) ** 2, (K2 * peak) ** 2
    if convention == "basicsr":
        r = RADIUS
        smap = _ssim_map_(*mom[:, :, r:-r, r:-r], c1, c2)
        return float(np.mean(smap.mean(axis=(1, 2))))  # per channel, then over channels
    mix = _replicate_mix_matrix(mom.shape[1], gaussian_kernel_1d())
    # filter along the channel axis: (C,C) @ (4,C,H*W); ~4x faster than the equivalent einsum
    mixed = np.matmul(mix, mom.reshape(mom.shape[0], mom.shape[1], -1)).reshape(mom.shape)
    return float(np.mean(_ssim_map_(*mixed, c1, c2)))


def _check_ssim_size(x: np.ndarray, conventions: tuple[str, ...]) -> None:
    h, w = x.shape[:2]
    if "basicsr" in conventions and min(h, w) <= 2 * RADIUS:
        raise ValueError(
            f"SSIM basicsr needs images larger than {2 * RADIUS}x{2 * RADIUS} after crop_border "
            f"(the valid region loses {RADIUS} pixels per side), got {h}x{w}"
        )


def ssim(
    pred: np.ndarray,
    target: np.ndarray,
    *,
    data_range: float,
    crop_border: int = 0,
    y_channel: bool = False,
    convention: str = "basicsr",
) -> float:
    """Structural similarity (mean of the SSIM map), in [-1, 1]; 1 for identical images.

    pred, target: HxWxC (or HxW) arrays, uint8 (data_range 255) or float in [0, data_range].
    convention: "basicsr" (per channel, valid region) or "matlab3d" (RGB as one volume, replicate
    padding); see the module docstring for the exact definitions and their sources.
    """
    _check_convention(convention)
    x, y, peak = _prepare(pred, target, data_range, crop_border, y_channel)
    _check_ssim_size(x, (convention,))
    return _ssim_from_moments(_moments_np(x, y, gaussian_kernel_1d()), convention, peak)


def ssim_conventions(
    pred: np.ndarray,
    target: np.ndarray,
    *,
    data_range: float,
    crop_border: int = 0,
    y_channel: bool = False,
) -> dict[str, float]:
    """SSIM in every convention at the cost of one: {"basicsr": ..., "matlab3d": ...}.

    Same arguments and numbers as `ssim`; the filtered moments are shared between conventions.
    """
    x, y, peak = _prepare(pred, target, data_range, crop_border, y_channel)
    _check_ssim_size(x, CONVENTIONS)
    mom = _moments_np(x, y, gaussian_kernel_1d())
    out = {"matlab3d": _ssim_from_moments(mom, "matlab3d", peak)}
    out["basicsr"] = _ssim_from_moments(mom, "basicsr", peak)  # last: works in place on mom
    return {c: out[c] for c in CONVENTIONS}


# --------------------------------------------------------------------------- batched torch version


def _prepare_torch(
    pred: torch.Tensor, target: torch.Tensor, data_range: float, crop_border: int, y_channel: bool
) -> tuple[torch.Tensor, torch.Tensor, float]:
    data_range = _check_data_range(data_range)
    for name, t in (("pred", pred), ("target", target)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor of shape (B,C,H,W), got {type(t).__name__}")
        if t.ndim != 4:
            raise ValueError(f"{name} must have shape (B,C,H,W), got {tuple(t.shape)}")
        if t.dtype == torch.uint8:
            if data_range != 255:
                raise ValueError(f"{name} is uint8, so data_range must be 255, got {data_range:g}")
        elif not t.is_floating_point():
            raise ValueError(f"{name} must be uint8 or a float tensor, got dtype {t.dtype}")
    if pred.shape != target.shape:
        raise ValueError(
            f"pred and target must have the same shape, got {tuple(pred.shape)} and {tuple(target.shape)}"
        )
    if isinstance(crop_border, bool) or not isinstance(crop_border, int) or crop_border < 0:
        raise ValueError(f"crop_border must be a non-negative int, got {crop_border!r}")
    h, w = pred.shape[-2:]
    if 2 * crop_border >= min(h, w):
        raise ValueError(f"crop_border={crop_border} leaves no pixels of a {h}x{w} image")
    x = pred.to(torch.float64)
    y = target.to(torch.float64)
    # one device sync for all range/NaN checks
    stats = torch.stack([x.amin(), x.amax(), y.amin(), y.amax()]).tolist()
    tol = RANGE_TOL * data_range
    for name, lo, hi in (("pred", *stats[:2]), ("target", *stats[2:])):
        if math.isnan(lo) or math.isnan(hi):
            raise ValueError(f"{name} contains NaN")
        if lo < -tol or hi > data_range + tol:
            raise ValueError(
                f"{name} values must lie in [0, data_range] = [0, {data_range:g}], got [{lo:.6g}, {hi:.6g}]"
            )
    if crop_border:
        c = crop_border
        x, y = x[..., c:-c, c:-c], y[..., c:-c, c:-c]
    if y_channel:
        if x.shape[1] != 3:
            raise ValueError(f"y_channel=True needs RGB images (B,3,H,W), got {tuple(pred.shape)}")
        wts = torch.tensor(Y_WEIGHTS, dtype=torch.float64, device=x.device).view(1, 3, 1, 1) / data_range
        x = Y_OFFSET + (x * wts).sum(dim=1, keepdim=True)
        y = Y_OFFSET + (y * wts).sum(dim=1, keepdim=True)
        return x, y, Y_RANGE
    return x, y, data_range


def psnr_torch(
    pred: torch.Tensor,
    target: torch.Tensor,
    *,
    data_range: float,
    crop_border: int = 0,
    y_channel: bool = False,
) -> torch.Tensor:
    """PSNR in dB per image, float64 tensor of shape (B,); inf where an image pair is identical.

    pred, target: (B,C,H,W) tensors, uint8 (data_range 255) or float in [0, data_range].
    """
    x, y, peak = _prepare_torch(pred, target, data_range, crop_border, y_channel)
    mse = ((x - y) ** 2).mean(dim=(1, 2, 3))
    return 10.0 * torch.log10(peak * peak / mse)  # mse 0 -> inf


def _filter_along(t: torch.Tensor, dim: int, kernel: list[float]) -> torch.Tensor:
    """'Valid' correlation of `t` with `kernel` along `dim` as a sum of shifted slices.

    Shifted sums are as fast as conv2d here and run in float64 on any device without cuDNN support.
    """
    n = t.shape[dim] - len(kernel) + 1
    out = t.narrow(dim, 0, n) * kernel[0]
    for i in range(1, len(kernel)):
        out.add_(t.narrow(dim, i, n), alpha=kernel[i])
    return out


def _moments_torch(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(4, B, C, H, W) float64: mu_x, mu_y, E[x^2+y^2], E[xy], edge-replicated like `_moments_np`."""
    k = gaussian_kernel_1d().tolist()
    b, c, h, w = x.shape
    stack = torch.stack([x, y, x * x + y * y, x * y]).reshape(4 * b, c, h, w)
    # replicate padding exists for the last two dims; the interior matches BasicSR's valid region
    padded = torch.nn.functional.pad(stack, (RADIUS,) * 4, mode="replicate")
    out = _filter_along(_filter_along(padded, 2, k), 3, k)
    return out.reshape(4, b, c, h, w)


def _ssim_from_moments_torch(mom: torch.Tensor, convention: str, peak: float) -> torch.Tensor:
    c1, c2 = (K1 * peak) ** 2, (K2 * peak) ** 2
    if convention == "basicsr":
        r = RADIUS
        smap = _ssim_map_(*mom[..., r:-r, r:-r], c1, c2)  # (B, C, h, w), in place on mom
        return smap.mean(dim=(2, 3)).mean(dim=1)
    mix = torch.from_numpy(_replicate_mix_matrix(mom.shape[2], gaussian_kernel_1d())).to(mom.device)
    m, b, c, h, w = mom.shape
    mixed = torch.matmul(mix, mom.reshape(m * b, c, h * w)).reshape(mom.shape)  # channel-axis filter
    return _ssim_map_(*mixed, c1, c2).mean(dim=(1, 2, 3))


def ssim_torch(
    pred: torch.Tensor,
    target: torch.Tensor,
    *,
    data_range: float,
    crop_border: int = 0,
    y_channel: bool = False,
    convention: str = "basicsr",
) -> torch.Tensor:
    """SSIM per image, float64 tensor of shape (B,), same conventions and numbers as `ssim`.

    pred, target: (B,C,H,W) tensors, uint8 (data_range 255) or float in [0, data_range].
    Memory: about 12 float64 copies of the batch; chunk the batch for very large images.
    """
    _check_convention(convention)
    x, y, peak = _prepare_torch(pred, target, data_range, crop_border, y_channel)
    _check_ssim_size_torch(x, (convention,))
    return _ssim_from_moments_torch(_moments_torch(x, y), convention, peak)


def ssim_conventions_torch(
    pred: torch.Tensor,
    target: torch.Tensor,
    *,
    data_range: float,
    crop_border: int = 0,
    y_channel: bool = False,
) -> dict[str, torch.Tensor]:
    """Both SSIM conventions per image from one filtering pass: {"basicsr": (B,), "matlab3d": (B,)}."""
    x, y, peak = _prepare_torch(pred, target, data_range, crop_border, y_channel)
    _check_ssim_size_torch(x, CONVENTIONS)
    mom = _moments_torch(x, y)
    out = {"matlab3d": _ssim_from_moments_torch(mom, "matlab3d", peak)}
    out["basicsr"] = _ssim_from_moments_torch(mom, "basicsr", peak)  # last: works in place on mom
    return {c: out[c] for c in CONVENTIONS}


def _check_ssim_size_torch(x: torch.Tensor, conventions: tuple[str, ...]) -> None:
    h, w = x.shape[-2:]
    if "basicsr" in conventions and min(h, w) <= 2 * RADIUS:
        raise ValueError(
            f"SSIM basicsr needs images larger than {2 * RADIUS}x{2 * RADIUS} after crop_border, got {h}x{w}"
        )
