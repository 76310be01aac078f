"""Blur: random camera-shake motion kernels, frame averaging, Gaussian and defocus (disk) blur.

Images are HxWx3 float32 in [0, 1]; kernels are 2-D float32, odd-sized, non-negative, summing to 1.
Convolution pads symmetrically (edge sample repeated: d c b a | a b c d), i.e. numpy's "symmetric" and
scipy.ndimage's "reflect", so a flat image stays flat up to the border.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from restorebench.degrade.noise import check_image, check_nonneg, from_linear, pick, to_linear


def _normalise(k: np.ndarray, what: str) -> np.ndarray:
    k = np.clip(k, 0.0, None).astype(np.float64)
    total = k.sum()
    if total <= 0:
        raise ValueError(f"{what}: kernel is empty")
    return (k / total).astype(np.float32)


def convolve(img: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Convolve each channel of HxWxC `img` with a 2-D kernel, symmetric padding, same-size output.

    FFT-based (scipy.signal.fftconvolve): cost does not grow with the kernel area, which matters for
    31x31 motion kernels on 512x512 sub-images.
    """
    img = check_image(img)
    kh, kw = kernel.shape
    pad = ((kh // 2, kh - 1 - kh // 2), (kw // 2, kw - 1 - kw // 2), (0, 0))
    padded = np.pad(img, pad, mode="symmetric")
    if kh == 1 and kw == 1:
        return (img * kernel[0, 0]).astype(np.float32)
    from scipy import signal  # here, not at the top: it costs every training job 0.6 s of start-up

    out = signal.fftconvolve(padded, kernel[:, :, None].astype(np.float32), mode="valid", axes=(0, 1))
    return out.astype(np.float32)


# ------------------------------------------------------------------------------------------ motion


def trajectory(
    rng: np.random.Generator,
    length: float,
    steps: int = 2000,
    anxiety: float | None = None,
) -> np.ndarray:
    """A random camera trajectory (complex positions in pixels), after Boracchi & Foi (2012),
    "Modeling the performance of image restoration from motion blur", IEEE TIP 21(8).

    A random walk with inertia: the velocity has constant magnitude (total path `length` pixels over
    `steps` steps), each step adds a Gaussian perturbation and a centripetal pull back to the start,
    scaled by `anxiety`, and with a small probability an abrupt shake reverses the direction.
    """
    anxiety = 0.1 * rng.random() if anxiety is None else anxiety
    centripetal = 0.7 * rng.random()
    gaussian_term = 10.0 * rng.random()
    freq_big_shakes = 0.2 * rng.random()
    step_len = length / (steps - 1)
    v = np.exp(1j * 2 * np.pi * rng.random()) * (anxiety if anxiety > 0 else step_len)
    x = np.zeros(steps, dtype=np.complex128)
    # Pre-draw the randomness (vectorised draws are faster and keep the stream layout fixed).
    shakes = rng.random(steps) < freq_big_shakes * anxiety
    shake_angle = rng.random(steps) - 0.5
    gauss = rng.standard_normal(steps) + 1j * rng.standard_normal(steps)
    for t in range(steps - 1):
        nxt = 2 * v * np.exp(1j * (np.pi + shake_angle[t])) if shakes[t] else 0.0
        dv = nxt + anxiety * (gaussian_term * gauss[t] - centripetal * x[t]) * step_len
        v = v + dv
        mag = abs(v)
        v = v / mag * step_len if mag > 0 else np.exp(1j * 2 * np.pi * rng.random()) * step_len
        x[t + 1] = x[t] + v
    return x


def rasterise(points: np.ndarray, size: int) -> np.ndarray:
    """Accumulate complex sub-pixel positions (centred on the kernel) into a size x size kernel with
    bilinear weights, so sub-pixel motion is kept; returns the normalised kernel."""
    # Centre the path's mean (no shift between sharp and blurred content), then nudge it back inside
    # the kernel if its bounding box would stick out.
    pts = points - points.mean() + (size - 1) / 2 * (1 + 1j)
    xs, ys = pts.real, pts.imag
    xs = xs - min(0.0, xs.min()) - max(0.0, xs.max() - (size - 1))
    ys = ys - min(0.0, ys.min()) - max(0.0, ys.max() - (size - 1))
    k = np.zeros((size, size), dtype=np.float64)
    x0 = np.floor(xs).astype(int)
    y0 = np.floor(ys).astype(int)
    fx = xs - x0
    fy = ys - y0
    for dy, dx, w in (
        (0, 0, (1 - fy) * (1 - fx)),
        (0, 1, (1 - fy) * fx),
        (1, 0, fy * (1 - fx)),
        (1, 1, fy * fx),
    ):
        yy, xx = y0 + dy, x0 + dx
        ok = (yy >= 0) & (yy < size) & (xx >= 0) & (xx < size)
        np.add.at(k, (yy[ok], xx[ok]), w[ok])
    return _normalise(k, "motion kernel")


def motion_kernel(
    size: int,
    rng: np.random.Generator,
    length: float | None = None,
    length_range: Sequence[float] | None = None,
    exposure: float = 1.0,
    anxiety: float | None = None,
) -> np.ndarray:
    """A size x size motion-blur kernel from a random camera trajectory (Boracchi & Foi 2012).

    size: odd kernel side in pixels. length: blur extent in pixels, the longer side of the path's
    bounding box (default 0.6 * size, at most size - 2; or drawn from length_range). exposure in (0, 1]:
    the fraction of the trajectory the shutter integrates. anxiety: shake strength of the random walk
    (default uniform in [0.001, 0.01]; larger gives curlier paths). Returns float32, >= 0, sum 1.
    """
    if int(size) != size or size < 1 or size % 2 == 0:
        raise ValueError(f"size must be an odd positive integer, got {size!r}")
    if not 0 < exposure <= 1:
        raise ValueError(f"exposure must lie in (0, 1], got {exposure!r}")
    ln = pick(rng, "length", length, length_range, default=0.6 * size, low=0.0)
    steps = 2000
    if anxiety is None:
        anxiety = float(rng.uniform(0.001, 0.01))
    x = trajectory(rng, 1.0, steps=steps, anxiety=anxiety)
    x = x[: max(2, int(round(exposure * steps)))]
    # Scale the path so its bounding box's longer side is `length` pixels (at most size - 2, so the path
    # and its bilinear spill stay inside the kernel): the blur extent is then set by the parameter
    # while the trajectory's shape stays random.
    extent = max(np.ptp(x.real), np.ptp(x.imag))
    if extent > 0:
        x = (x - x.mean()) * (min(ln, size - 2) / extent)
    return rasterise(x, int(size))


def motion_blur(
    img: np.ndarray,
    rng: np.random.Generator,
    size: int = 31,
    length: float | None = None,
    length_range: Sequence[float] | None = None,
    exposure: float = 1.0,
) -> np.ndarray:
    """Blur HxWx3 float32 [0, 1] `img` with a random trajectory kernel (see `motion_kernel`)."""
    img = check_image(img)
    k = motion_kernel(size, rng, length=length, length_range=length_range, exposure=exposure)
    return np.clip(convolve(img, k), 0.0, 1.0)


def frame_average(frames: Sequence[np.ndarray], gamma: float | str = 2.2) -> np.ndarray:
    """GoPro-style blur: average consecutive sharp frames in linear space (Nah et al. 2017).

    frames: N HxWx3 float32 [0, 1] gamma-encoded frames. gamma: 2.2 (GoPro's approximation of the
    camera response: lin = x**2.2, out = mean**(1/2.2)), "srgb" for the exact sRGB curve, or 1.0 to
    average the encoded values directly (GoPro's `blur` vs `blur_gamma` folders).
    """
    if len(frames) == 0:
        raise ValueError("frames: need at least one frame")
    arrs = [check_image(f, f"frames[{i}]") for i, f in enumerate(frames)]
    if any(a.shape != arrs[0].shape for a in arrs):
        raise ValueError(f"frames: shapes differ: {sorted({a.shape for a in arrs})}")
    return from_linear(np.mean([to_linear(a, gamma) for a in arrs], axis=0), gamma)


# --------------------------------------------------------------------------------- gaussian / disk


def gaussian_kernel(sigma: float, size: int | None = None) -> np.ndarray:
    """Isotropic Gaussian kernel; sigma in pixels; size defaults to 2 * ceil(3 sigma) + 1."""
    sigma = check_nonneg("sigma", sigma)
    if size is None:
        size = 2 * int(np.ceil(3 * sigma)) + 1
    if size < 1 or size % 2 == 0:
        raise ValueError(f"size must be an odd positive integer, got {size!r}")
    if sigma == 0:
        k = np.zeros((size, size), np.float32)
        k[size // 2, size // 2] = 1
        return k
    r = np.arange(size) - size // 2
    g = np.exp(-(r**2) / (2 * sigma**2))
    return _normalise(np.outer(g, g), "gaussian kernel")


def gaussian_blur(
    img: np.ndarray,
    rng: np.random.Generator,
    sigma: float | None = None,
    sigma_range: Sequence[float] | None = None,
) -> np.ndarray:
    """Gaussian blur; sigma in pixels (default 1.5) or drawn uniformly from sigma_range."""
    img = check_image(img)
    s = pick(rng, "sigma", sigma, sigma_range, default=1.5, low=0.0)
    return np.clip(convolve(img, gaussian_kernel(s)), 0.0, 1.0)


def disk_kernel(radius: float, supersample: int = 8) -> np.ndarray:
    """Uniform disk (defocus) kernel of `radius` pixels, edge pixels weighted by the covered area
    (estimated on a supersample x supersample grid per pixel)."""
    radius = check_nonneg("radius", radius)
    half = int(np.ceil(radius))
    size = 2 * half + 1
    if radius == 0:
        return np.ones((1, 1), np.float32)
    offs = (np.arange(supersample) + 0.5) / supersample - 0.5
    c = np.arange(size) - half
    yy = (c[:, None, None, None] + offs[None, None, :, None]) ** 2
    xx = (c[None, :, None, None] + offs[None, None, None, :]) ** 2
    cover = ((yy + xx) <= radius**2).mean(axis=(2, 3))
    return _normalise(cover, "disk kernel")


def defocus_blur(
    img: np.ndarray,
    rng: np.random.Generator,
    radius: float | None = None,
    radius_range: Sequence[float] | None = None,
) -> np.ndarray:
    """Defocus blur with a disk kernel; radius in pixels (default 3) or drawn from radius_range."""
    img = check_image(img)
    r = pick(rng, "radius", radius, radius_range, default=3.0, low=0.0)
    return np.clip(convolve(img, disk_kernel(r)), 0.0, 1.0)
