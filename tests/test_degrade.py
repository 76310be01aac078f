"""Degradations: statistics, kernels, MATLAB imresize values, JPEG monotonicity, determinism, pipeline errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from restorebench.degrade import (
    DEGRADATIONS,
    LABELS,
    bicubic_down,
    build_pipeline,
    camera_noise,
    derive_rng,
    disk_kernel,
    frame_average,
    gaussian_kernel,
    gaussian_noise,
    imresize,
    jpeg,
    motion_blur,
    motion_kernel,
)
from restorebench.degrade.noise import poisson_gaussian
from restorebench.degrade.rain import line_kernel

# Parameters that make every registered degradation callable (the others have defaults).
REQUIRED = {"gaussian_noise": {"sigma": 30}}
# Parameters that make them random (blur defaults are fixed values).
RANDOM = {**REQUIRED, "gaussian_blur": {"sigma_range": [0.5, 3]}, "defocus_blur": {"radius_range": [1, 4]}}


def natural(h: int = 96, w: int = 96) -> np.ndarray:
    from skimage import data

    return data.astronaut()[100 : 100 + h, 150 : 150 + w].astype(np.float32) / 255.0


# ------------------------------------------------------------------------------------------ noise


@pytest.mark.parametrize(("sigma", "clip"), [(30, True), (50, False), (15, True)])
def test_gaussian_noise_std_matches_sigma(sigma, clip):
    img = np.full((256, 256, 3), 0.5, np.float32)
    out = gaussian_noise(img, np.random.default_rng(0), sigma=sigma, clip=clip)
    measured = float((out - img).std()) * 255.0
    assert abs(measured - sigma) / sigma < 0.02
    assert abs(float((out - img).mean())) * 255.0 < 0.2


def test_gaussian_noise_range_and_clip():
    img = np.full((32, 32, 3), 0.5, np.float32)
    out = gaussian_noise(img, np.random.default_rng(0), sigma_range=[10, 20])
    assert 9.0 < (out - img).std() * 255 < 21.0
    out = gaussian_noise(img, np.random.default_rng(0), sigma=200)
    assert out.min() >= 0 and out.max() <= 1
    assert gaussian_noise(img, np.random.default_rng(0), sigma=200, clip=False).max() > 1
    with pytest.raises(ValueError, match="sigma"):
        gaussian_noise(img, np.random.default_rng(0), sigma=-1)
    with pytest.raises(ValueError, match="sigma_range"):
        gaussian_noise(img, np.random.default_rng(0), sigma_range=[20, 10])


def test_camera_noise_signal_dependent_and_identity_without_noise():
    rng = np.random.default_rng(0)
    dark = camera_noise(np.full((128, 128, 3), 0.1, np.float32), rng, shot=0.01, read=0.002)
    bright = camera_noise(np.full((128, 128, 3), 0.8, np.float32), rng, shot=0.01, read=0.002)
    # in linear space the variance grows with the signal
    assert (bright**2.2).std() > (dark**2.2).std()
    img = natural()
    same = camera_noise(img, rng, shot=0, read=0)
    np.testing.assert_allclose(same, img, atol=1e-5)


def test_camera_noise_matches_embedded_sidd_model():
    samples = pytest.importorskip("restorebench.data.samples")
    if not hasattr(samples, "camera_noise"):
        pytest.skip("samples.camera_noise not present")
    lin = natural() ** 2.2
    iso = 800
    ref = samples.camera_noise(lin, iso, np.random.default_rng(3))
    ours = np.clip(
        poisson_gaussian(lin, np.random.default_rng(3), 1e-3 * iso / 100, 4e-4 * iso / 100, poisson=True),
        0,
        1,
    )
    np.testing.assert_allclose(ours, ref, atol=1e-6)


# ------------------------------------------------------------------------------------------ blur


@pytest.mark.parametrize("seed", range(6))
def test_motion_kernels_normalised(seed):
    rng = np.random.default_rng(seed)
    for size in (9, 21, 31):
        k = motion_kernel(size, rng, length_range=[3, size])
        assert k.shape == (size, size) and k.dtype == np.float32
        assert k.min() >= 0 and abs(float(k.sum()) - 1) < 1e-5
        assert (k > 1e-3).sum() >= 3  # a path, not a point


def test_other_kernels_normalised():
    kernels = [gaussian_kernel(s) for s in (0, 0.5, 1.5, 4)]
    kernels += [disk_kernel(r) for r in (0, 1, 2.5, 7)]
    kernels += [line_kernel(ln, a) for ln, a in [(5, 0), (15, 30), (25, -45)]]
    for k in kernels:
        assert k.min() >= 0 and abs(float(k.sum()) - 1) < 1e-5
        assert k.shape[0] % 2 == 1 and k.shape[1] % 2 == 1
    with pytest.raises(ValueError, match="size"):
        motion_kernel(10, np.random.default_rng(0))
    with pytest.raises(ValueError, match="radius"):
        disk_kernel(-1)


def test_blur_keeps_flat_image_flat_and_mean():
    flat = np.full((40, 50, 3), 0.3, np.float32)
    for name in ("motion_blur", "gaussian_blur", "defocus_blur"):
        out = DEGRADATIONS[name](flat, np.random.default_rng(0))
        np.testing.assert_allclose(out, flat, atol=1e-5)
    img = natural()
    out = motion_blur(img, np.random.default_rng(1), size=15)
    assert abs(float(out.mean() - img.mean())) < 0.01 and out.std() < img.std()


def test_frame_average_linear_space():
    a, b = np.full((4, 4, 3), 0.2, np.float32), np.full((4, 4, 3), 0.8, np.float32)
    np.testing.assert_allclose(frame_average([a, b], gamma=1.0), 0.5, atol=1e-6)
    expected = ((0.2**2.2 + 0.8**2.2) / 2) ** (1 / 2.2)
    np.testing.assert_allclose(frame_average([a, b]), expected, atol=1e-5)
    np.testing.assert_allclose(frame_average([a, a, a]), a, atol=1e-5)
    with pytest.raises(ValueError, match="shapes differ"):
        frame_average([a, np.zeros((5, 4, 3), np.float32)])


# ------------------------------------------------------------------------------------- resize


def matlab_imresize_reference(img: np.ndarray, scale: float) -> np.ndarray:
    """Direct, loop-based transcription of MATLAB imresize (bicubic, antialiasing) from its documented
    algorithm; independent of restorebench.degrade.resize (no shared code)."""

    def kernel(x: float) -> float:
        ax = abs(x)
        if ax <= 1:
            return 1.5 * ax**3 - 2.5 * ax**2 + 1
        if ax <= 2:
            return -0.5 * ax**3 + 2.5 * ax**2 - 4 * ax + 2
        return 0.0

    def resize_1d(vec: list[float]) -> list[float]:
        n = len(vec)
        out_n = math.ceil(n * scale)
        shrink = scale < 1
        width = 4 / scale if shrink else 4
        out = []
        for x in range(1, out_n + 1):
            u = x / scale + 0.5 * (1 - 1 / scale)
            left = math.floor(u - width / 2)
            acc, wsum = 0.0, 0.0
            for j in range(left, left + math.ceil(width) + 2):
                wt = scale * kernel(scale * (u - j)) if shrink else kernel(u - j)
                # symmetric mirror: ... 2 1 | 1 2 ... n | n n-1 ...
                m = (j - 1) % (2 * n)
                idx = m if m < n else 2 * n - 1 - m
                acc += wt * vec[idx]
                wsum += wt
            out.append(acc / wsum)
        return out

    h, w, c = img.shape
    rows = np.array([[resize_1d(list(img[:, x, ch])) for ch in range(c)] for x in range(w)])  # w c H'
    tmp = rows.transpose(2, 0, 1)  # H' w c
    cols = np.array([[resize_1d(list(tmp[y, :, ch])) for ch in range(c)] for y in range(tmp.shape[0])])
    return cols.transpose(0, 2, 1)


@pytest.mark.parametrize(
    ("shape", "scale"),
    [
        ((12, 12, 3), 0.5),
        ((13, 17, 1), 0.5),
        ((15, 12, 3), 1 / 3),
        ((16, 20, 2), 0.25),
        ((7, 5, 1), 2.0),
        ((9, 11, 1), 0.75),
    ],
)
def test_imresize_matches_loop_reference(shape, scale):
    img = np.random.default_rng(0).random(shape)
    ours = imresize(img, scale)
    ref = matlab_imresize_reference(img, scale)
    assert ours.shape == (math.ceil(shape[0] * scale), math.ceil(shape[1] * scale), shape[2])
    np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_imresize_analytic_values():
    # Cubic convolution reproduces linear functions; away from the border the antialiased x2 shrink of
    # f(i) = i (0-based) samples it at u - 1 = 2j + 0.5 (MATLAB's pixel-centre mapping).
    n = 32
    ramp = np.tile(np.arange(n, dtype=np.float64)[None, :, None], (4, 1, 1))
    out = imresize(ramp, 0.5)[0, :, 0]
    j = np.arange(3, n // 2 - 3)
    np.testing.assert_allclose(out[j], 2 * j + 0.5, atol=1e-5)
    # the mirrored border pulls the first sample towards the edge value: strictly between 0 and 0.5
    assert 0 < out[0] < 0.5
    np.testing.assert_allclose(imresize(np.full((9, 10, 3), 0.7), 1 / 3), 0.7, atol=1e-6)


def test_imresize_uint8_rounds_like_matlab():
    # Smooth content (no saturation): rounding after each of the two passes moves a value by at most
    # 0.5 * sum|w| (about 0.55) + 0.5 from the float result.
    img = (natural(24, 24) * 255).astype(np.uint8)
    out = imresize(img, 0.5)
    assert out.dtype == np.uint8 and out.shape == (12, 12, 3)
    diff = np.abs(out.astype(float) - matlab_imresize_reference(img.astype(np.float64), 0.5))
    assert diff.max() <= 1.1 and diff.mean() < 0.4


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_bicubic_down_sizes_and_crop(scale):
    img = np.random.default_rng(0).random((50, 61, 3)).astype(np.float32)
    lr = bicubic_down(img, None, scale=scale)
    assert lr.shape == (50 // scale, 61 // scale, 3)
    hr = img[: 50 // scale * scale, : 61 // scale * scale]
    np.testing.assert_allclose(lr, np.clip(matlab_imresize_reference(hr, 1 / scale), 0, 1), atol=1e-5)
    with pytest.raises(ValueError, match="scale"):
        bicubic_down(img, None, scale=5)


# ------------------------------------------------------------------------------------- jpeg, all


def test_jpeg_error_monotone_in_quality():
    img = natural(128, 128)
    errs = [
        float(np.abs(jpeg(img, np.random.default_rng(0), quality=q) - img).mean())
        for q in (5, 20, 40, 70, 95)
    ]
    assert all(a > b for a, b in zip(errs, errs[1:], strict=False)), errs
    q = [jpeg(img, np.random.default_rng(s), quality_range=[10, 12]) for s in range(3)]
    assert all(x.shape == img.shape for x in q)


@pytest.mark.parametrize("name", sorted(DEGRADATIONS))
def test_every_degradation_shape_range_dtype(name):
    img = natural(48, 48)
    out = DEGRADATIONS[name](img, np.random.default_rng(0), **REQUIRED.get(name, {}))
    assert out.dtype == np.float32 and out.ndim == 3 and out.shape[2] == 3
    assert out.shape == img.shape or name == "bicubic_down"
    assert 0.0 <= out.min() and out.max() <= 1.0
    assert name in LABELS


@pytest.mark.parametrize("name", sorted(DEGRADATIONS))
def test_determinism_and_global_rng_independence(name):
    img = natural(48, 48)
    params = RANDOM.get(name, {})
    a = DEGRADATIONS[name](img, derive_rng(7, "img0", name), **params)
    np.random.seed(123)
    torch.manual_seed(123)
    np.random.random(10)
    torch.rand(10)
    b = DEGRADATIONS[name](img, derive_rng(7, "img0", name), **params)
    assert a.tobytes() == b.tobytes()
    if name != "bicubic_down":  # the only deterministic degradation
        c = DEGRADATIONS[name](img, derive_rng(8, "img0", name), **params)
        assert a.tobytes() != c.tobytes()


def test_derive_rng_is_stable():
    # Fixed numbers: catches a switch to Python's salted hash() or any change of the derivation.
    assert derive_rng(0, "a", 1).integers(2**32) == 249424070
    assert derive_rng(7, "img", 3, "task").integers(2**32) == 908628530
    assert derive_rng(0, 1).integers(2**32) != derive_rng(0, "1").integers(2**32)
    with pytest.raises(ValueError, match="seed"):
        derive_rng(-1)


# ------------------------------------------------------------------------------------- pipeline


def test_pipeline_composes_and_reports_labels():
    pipe = build_pipeline(
        [
            {"name": "gaussian_blur", "sigma": 1.0},
            {"name": "bicubic_down", "scale": 2},
            {"name": "jpeg", "quality": 50},
        ]
    )
    out = pipe(natural(48, 48), derive_rng(0, "x"))
    assert out.shape == (24, 24, 3)
    assert pipe.labels == (LABELS["gaussian_blur"], LABELS["bicubic_down"], LABELS["jpeg"])
    assert build_pipeline(pipe.to_spec()) == pipe


@pytest.mark.parametrize(
    ("spec", "needles"),
    [
        (
            [{"name": "gausian_noise", "sigma": 3}],
            ["[0].name", "gausian_noise", "did you mean 'gaussian_noise'"],
        ),
        (
            [{"name": "jpeg"}, {"name": "gaussian_noise", "sigm": 3}],
            ["[1]", "gaussian_noise", "'sigm'", "sigma_range"],
        ),
        ([{"name": "gaussian_noise", "sigma": -5}], ["[0]", "sigma", "-5"]),
        ([{"name": "gaussian_noise"}], ["sigma"]),
        ([{"name": "motion_blur", "size": 10}], ["size"]),
        ([{"name": "haze", "beta": -1}], ["beta"]),
        ([{"sigma": 3}], ["'name'"]),
        ({"name": "jpeg"}, ["list of steps"]),
    ],
)
def test_pipeline_errors_name_the_key(spec, needles):
    with pytest.raises(ValueError) as err:
        build_pipeline(spec, where="degrade.tasks.dn")
    for needle in needles:
        assert needle in str(err.value), (needle, str(err.value))
