"""PSNR/SSIM against independent computations (scikit-image, a direct SciPy volume SSIM, hand values)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage
from skimage.metrics import structural_similarity

from restorebench.metrics import (
    psnr,
    psnr_torch,
    ssim,
    ssim_conventions,
    ssim_conventions_torch,
    ssim_torch,
)

# ----------------------------------------------------------------------------- helpers / references


def _pair(h: int, w: int, seed: int = 0, noise: float = 0.08) -> tuple[np.ndarray, np.ndarray]:
    """A smooth-ish float64 RGB image in [0, 1] and a noisy copy (both HxWx3)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([0.5 + 0.4 * np.sin(xx / 5.0 + c) * np.cos(yy / 7.0 - c) for c in range(3)], axis=-1)
    target = np.clip(base + 0.05 * rng.standard_normal(base.shape), 0, 1)
    pred = np.clip(target + noise * rng.standard_normal(base.shape), 0, 1)
    return pred, target


def _uint8_pair(h: int, w: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    p, t = _pair(h, w, seed)
    return np.round(p * 255).astype(np.uint8), np.round(t * 255).astype(np.uint8)


def _skimage_basicsr(pred: np.ndarray, target: np.ndarray, data_range: float) -> float:
    """scikit-image Gaussian SSIM (population covariance), map cropped to BasicSR's valid region."""
    _, smap = structural_similarity(
        pred.astype(np.float64),
        target.astype(np.float64),
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=data_range,
        channel_axis=-1,
        full=True,
    )
    return float(smap[5:-5, 5:-5].mean(axis=(0, 1)).mean())


def _scipy_matlab3d(pred: np.ndarray, target: np.ndarray, data_range: float) -> float:
    """MATLAB ssim on an HxWx3 volume, written out directly: 11-tap Gaussian on all three axes."""
    x, y = pred.astype(np.float64), target.astype(np.float64)

    def f(a: np.ndarray) -> np.ndarray:
        # truncate * sigma = 5 -> radius 5 -> 11 taps; mode 'nearest' = MATLAB 'replicate'
        return ndimage.gaussian_filter(a, sigma=1.5, mode="nearest", truncate=5 / 1.5)

    mx, my = f(x), f(y)
    vx, vy, cxy = f(x * x) - mx**2, f(y * y) - my**2, f(x * y) - mx * my
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    smap = (2 * mx * my + c1) * (2 * cxy + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return float(smap.mean())


def _y(img: np.ndarray, data_range: float) -> np.ndarray:
    """BT.601 Y on the 0-255 scale, as BasicSR's to_y_channel (RGB order)."""
    rgb = img.astype(np.float64) / data_range
    return 16 + 65.481 * rgb[..., 0] + 128.553 * rgb[..., 1] + 24.966 * rgb[..., 2]


# ----------------------------------------------------------------------------- PSNR


def test_psnr_hand_computed_float():
    target = np.zeros((2, 2, 3))
    pred = target.copy()
    pred[0, 0, 0] = 0.5  # MSE = 0.25 / 12 over all pixels and channels
    assert psnr(pred, target, data_range=1) == pytest.approx(10 * math.log10(48), abs=1e-12)
    assert psnr(pred, target, data_range=1) == pytest.approx(16.812412, abs=1e-6)


def test_psnr_hand_computed_uint8():
    target = np.zeros((4, 5, 3), np.uint8)
    pred = np.full((4, 5, 3), 10, np.uint8)  # MSE 100 on the 0-255 scale
    assert psnr(pred, target, data_range=255) == pytest.approx(28.130803, abs=1e-6)


def test_identical_images():
    img, _ = _pair(40, 30)
    assert psnr(img, img, data_range=1) == math.inf
    for conv in ("basicsr", "matlab3d"):
        assert ssim(img, img, data_range=1, convention=conv) == pytest.approx(1.0, abs=1e-12)
    u8 = np.round(img * 255).astype(np.uint8)
    assert psnr(u8, u8, data_range=255, y_channel=True) == math.inf


def test_constant_images_closed_form():
    a, b = np.full((24, 24, 3), 0.2), np.full((24, 24, 3), 0.4)
    # variances are zero, so SSIM = luminance term (2ab + C1) / (a^2 + b^2 + C1), C1 = (0.01 * 1)^2
    expected = (2 * 0.2 * 0.4 + 1e-4) / (0.2**2 + 0.4**2 + 1e-4)
    assert expected == pytest.approx(0.8000999, abs=1e-7)
    for conv in ("basicsr", "matlab3d"):
        assert ssim(a, b, data_range=1, convention=conv) == pytest.approx(expected, abs=1e-10)
    assert psnr(a, b, data_range=1) == pytest.approx(10 * math.log10(1 / 0.04), abs=1e-10)


# ----------------------------------------------------------------------------- SSIM vs references


@pytest.mark.parametrize("shape", [(37, 53), (64, 48), (12, 20)])
def test_ssim_basicsr_matches_skimage_valid_region(shape):
    pred, target = _pair(*shape, seed=shape[0])
    ours = ssim(pred, target, data_range=1, convention="basicsr")
    assert ours == pytest.approx(_skimage_basicsr(pred, target, 1), abs=1e-12)
    assert 0.3 < ours < 0.99  # a real, non-trivial value


def test_ssim_basicsr_matches_skimage_uint8():
    pred, target = _uint8_pair(37, 53)
    ours = ssim(pred, target, data_range=255, convention="basicsr")
    assert ours == pytest.approx(_skimage_basicsr(pred, target, 255), abs=1e-12)


@pytest.mark.parametrize("shape", [(37, 53), (8, 9)])
def test_ssim_matlab3d_matches_direct_scipy_volume(shape):
    pred, target = _pair(*shape, seed=3)
    ours = ssim(pred, target, data_range=1, convention="matlab3d")
    assert ours == pytest.approx(_scipy_matlab3d(pred, target, 1), abs=1e-12)
    pu, tu = _uint8_pair(*shape, seed=4)
    assert ssim(pu, tu, data_range=255, convention="matlab3d") == pytest.approx(
        _scipy_matlab3d(pu, tu, 255), abs=1e-12
    )


def test_conventions_differ_and_ssim_conventions_matches_ssim():
    pred, target = _pair(37, 53, seed=5)
    both = ssim_conventions(pred, target, data_range=1)
    assert set(both) == {"basicsr", "matlab3d"}
    for conv, value in both.items():
        assert value == ssim(pred, target, data_range=1, convention=conv)
    assert abs(both["basicsr"] - both["matlab3d"]) > 1e-4  # the conventions are not interchangeable


def test_uint8_and_float_inputs_agree():
    pu, tu = _uint8_pair(37, 53, seed=6)
    pf, tf = pu / 255.0, tu / 255.0
    p255, t255 = pu.astype(np.float32), tu.astype(np.float32)  # floats on the 0-255 scale
    for y_channel in (False, True):
        ref = psnr(pu, tu, data_range=255, y_channel=y_channel)
        assert psnr(pf, tf, data_range=1, y_channel=y_channel) == pytest.approx(ref, abs=1e-9)
        assert psnr(p255, t255, data_range=255, y_channel=y_channel) == pytest.approx(ref, abs=1e-9)
        for conv in ("basicsr", "matlab3d"):
            ref = ssim(pu, tu, data_range=255, y_channel=y_channel, convention=conv)
            assert ssim(pf, tf, data_range=1, y_channel=y_channel, convention=conv) == pytest.approx(
                ref, abs=1e-9
            )


def test_grayscale_hw_equals_hwx1():
    pred, target = _pair(30, 31, seed=7)
    g_p, g_t = pred[..., 1], target[..., 1]
    assert psnr(g_p, g_t, data_range=1) == psnr(g_p[..., None], g_t[..., None], data_range=1)
    for conv in ("basicsr", "matlab3d"):
        assert ssim(g_p, g_t, data_range=1, convention=conv) == pytest.approx(
            ssim(g_p[..., None], g_t[..., None], data_range=1, convention=conv), abs=1e-15
        )


# ----------------------------------------------------------------------------- Y channel, crop border


def test_y_channel_black_white_hand_value():
    white, black = np.full((4, 4, 3), 255, np.uint8), np.zeros((4, 4, 3), np.uint8)
    # Y(white) = 16 + 219 = 235, Y(black) = 16 on the 0-255 scale; PSNR with L = 255
    assert psnr(white, black, data_range=255, y_channel=True) == pytest.approx(
        20 * math.log10(255 / 219), abs=1e-9
    )
    assert psnr(white / 255.0, black / 255.0, data_range=1, y_channel=True) == pytest.approx(
        1.3219213, abs=1e-6
    )


def test_y_channel_matches_direct_bt601():
    pu, tu = _uint8_pair(37, 53, seed=8)
    yp, yt = _y(pu, 255), _y(tu, 255)
    mse = np.mean((yp - yt) ** 2)
    assert psnr(pu, tu, data_range=255, y_channel=True) == pytest.approx(
        10 * math.log10(255**2 / mse), abs=1e-9
    )
    # SSIM on Y: single channel, L = 255 (BasicSR), against scikit-image on the Y plane
    assert ssim(pu, tu, data_range=255, y_channel=True) == pytest.approx(
        _skimage_basicsr(yp[..., None], yt[..., None], 255), abs=1e-12
    )
    # Y differs from RGB: the option is not ignored
    assert psnr(pu, tu, data_range=255, y_channel=True) != pytest.approx(psnr(pu, tu, data_range=255))


def test_crop_border_removes_pixels_from_each_side():
    pred, target = _pair(37, 53, seed=9)
    c = 4
    inner = psnr(pred[c:-c, c:-c], target[c:-c, c:-c], data_range=1)
    assert psnr(pred, target, data_range=1, crop_border=c) == pytest.approx(inner, abs=1e-12)
    for conv in ("basicsr", "matlab3d"):
        assert ssim(pred, target, data_range=1, crop_border=c, convention=conv) == pytest.approx(
            ssim(pred[c:-c, c:-c], target[c:-c, c:-c], data_range=1, convention=conv), abs=1e-12
        )
    # differences only inside the border vanish once it is cropped
    damaged = target.copy()
    damaged[:c] = 0
    damaged[:, -c:] = 1
    assert psnr(damaged, target, data_range=1) < 30
    assert psnr(damaged, target, data_range=1, crop_border=c) == math.inf


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("pred", "target", "kwargs", "match"),
    [
        (np.zeros((16, 16, 3)), np.zeros((16, 17, 3)), {"data_range": 1}, "same shape"),
        (np.zeros((2, 16, 16, 3)), np.zeros((2, 16, 16, 3)), {"data_range": 1}, r"HxWxC or HxW"),
        (np.zeros((3, 16, 16)), np.zeros((3, 16, 16)), {"data_range": 1}, "channels-first"),
        (np.zeros((16, 16, 3)), np.zeros((16, 16, 3)), {"data_range": 0}, "positive"),
        (np.zeros((16, 16, 3)), np.zeros((16, 16, 3)), {"data_range": -1.0}, "positive"),
        (np.zeros((16, 16, 3)), np.zeros((16, 16, 3)), {"data_range": float("nan")}, "positive"),
        (
            np.full((16, 16, 3), 2.0),
            np.zeros((16, 16, 3)),
            {"data_range": 1},
            r"\[0, data_range\] = \[0, 1\]",
        ),
        (np.full((16, 16, 3), -0.5), np.zeros((16, 16, 3)), {"data_range": 1}, r"\[0, data_range\]"),
        (np.zeros((16, 16, 3), np.uint8), np.zeros((16, 16, 3), np.uint8), {"data_range": 1}, "uint8.*255"),
        (
            np.zeros((16, 16, 3), np.int32),
            np.zeros((16, 16, 3), np.int32),
            {"data_range": 255},
            "uint8 or a float",
        ),
        (np.full((16, 16, 3), np.nan), np.zeros((16, 16, 3)), {"data_range": 1}, "NaN"),
        (np.zeros((16, 16, 3)), np.zeros((16, 16, 3)), {"data_range": 1, "crop_border": 8}, "no pixels"),
        (np.zeros((16, 16, 3)), np.zeros((16, 16, 3)), {"data_range": 1, "crop_border": -1}, "non-negative"),
        (np.zeros((16, 16, 1)), np.zeros((16, 16, 1)), {"data_range": 1, "y_channel": True}, "RGB"),
    ],
)
def test_bad_inputs_raise_clear_errors(pred, target, kwargs, match):
    with pytest.raises(ValueError, match=match):
        psnr(pred, target, **kwargs)
    with pytest.raises(ValueError, match=match):
        ssim(pred, target, **kwargs)


def test_unknown_convention_lists_allowed():
    img = np.zeros((16, 16, 3))
    with pytest.raises(ValueError, match=r"'matlab'.*\['basicsr', 'matlab3d'\]"):
        ssim(img, img, data_range=1, convention="matlab")


def test_basicsr_needs_more_than_window():
    img = np.zeros((10, 30, 3))
    with pytest.raises(ValueError, match="larger than 10x10"):
        ssim(img, img, data_range=1)
    assert ssim(img, img, data_range=1, convention="matlab3d") == pytest.approx(1.0)


def test_float_tolerance_just_above_range_is_accepted():
    target = np.zeros((16, 16, 3), np.float32)
    pred = np.full((16, 16, 3), np.float32(1.0) + np.float32(1e-7))  # float32 round-off of x/255 etc.
    assert math.isfinite(psnr(pred, target, data_range=1))
    with pytest.raises(TypeError, match="numpy array"):
        psnr([[0.0]], [[0.0]], data_range=1)


# ----------------------------------------------------------------------------- torch vs NumPy


def _batch(n: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    pairs = [_pair(h, w, seed=10 + i, noise=0.02 * (i + 1)) for i in range(n)]
    return np.stack([p for p, _ in pairs]), np.stack([t for _, t in pairs])


def _nchw(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2)))


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"crop_border": 3},
        {"y_channel": True},
        {"y_channel": True, "crop_border": 2},
    ],
)
def test_torch_matches_numpy(kwargs):
    preds, targets = _batch(3, 37, 53)
    cases = [
        (preds, targets, 1.0),  # float64 in [0, 1]
        (preds.astype(np.float32), targets.astype(np.float32), 1.0),  # float32 input
        (np.round(preds * 255).astype(np.uint8), np.round(targets * 255).astype(np.uint8), 255.0),
    ]
    for p, t, dr in cases:
        tp, tt = _nchw(p), _nchw(t)
        got_psnr = psnr_torch(tp, tt, data_range=dr, **kwargs)
        assert got_psnr.shape == (3,) and got_psnr.dtype == torch.float64
        both = ssim_conventions_torch(tp, tt, data_range=dr, **kwargs)
        for i in range(3):
            assert got_psnr[i].item() == pytest.approx(psnr(p[i], t[i], data_range=dr, **kwargs), abs=1e-4)
            for conv in ("basicsr", "matlab3d"):
                ref = ssim(p[i], t[i], data_range=dr, convention=conv, **kwargs)
                assert both[conv][i].item() == pytest.approx(ref, abs=1e-5)
                assert both[conv][i].item() == pytest.approx(ref, abs=1e-12)  # in fact float64-exact
        single = ssim_torch(tp, tt, data_range=dr, convention="matlab3d", **kwargs)
        assert torch.equal(single, both["matlab3d"])


def test_torch_identical_and_errors():
    preds, _ = _batch(2, 20, 20)
    tp = _nchw(preds)
    assert torch.isinf(psnr_torch(tp, tp, data_range=1)).all()
    assert torch.allclose(ssim_torch(tp, tp, data_range=1), torch.ones(2, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"\(B,C,H,W\)"):
        psnr_torch(tp[0], tp[0], data_range=1)
    with pytest.raises(ValueError, match=r"\[0, data_range\]"):
        psnr_torch(tp * 2 + 0.5, tp, data_range=1)
    with pytest.raises(ValueError, match="uint8.*255"):
        psnr_torch(tp.to(torch.uint8), tp.to(torch.uint8), data_range=1)
    with pytest.raises(ValueError, match="NaN"):
        ssim_torch(tp * float("nan"), tp, data_range=1)
    with pytest.raises(ValueError, match="basicsr"):
        ssim_torch(tp, tp, data_range=1, convention="skimage")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_torch_on_cuda_matches_numpy():
    preds, targets = _batch(2, 96, 128)
    tp, tt = _nchw(preds).cuda().float(), _nchw(targets).cuda().float()
    p32, t32 = preds.astype(np.float32), targets.astype(np.float32)
    got_psnr = psnr_torch(tp, tt, data_range=1).cpu()
    both = ssim_conventions_torch(tp, tt, data_range=1)
    for i in range(2):
        assert got_psnr[i].item() == pytest.approx(psnr(p32[i], t32[i], data_range=1), abs=1e-4)
        for conv in ("basicsr", "matlab3d"):
            ref = ssim(p32[i], t32[i], data_range=1, convention=conv)
            assert both[conv][i].item() == pytest.approx(ref, abs=1e-5)
