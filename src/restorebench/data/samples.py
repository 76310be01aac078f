"""Embedded look-alikes of SIDD-Medium, GoPro and ImageNet, in the real folder layouts (`source: sample`).

Built only from natural images bundled inside scikit-image (no download), so the demo runs offline.

Byte-determinism (the same sha256 on every run and machine) comes from:
- one `numpy.random.Generator` per item, seeded from (seed, crc32(dataset), item index) — never the
  global RNG, and adding items does not change the existing ones;
- a minimal PNG writer here (IHDR + IDAT + IEND only, fixed Sub filter, zlib level 6): no time stamps,
  no text chunks, no dependence on the Pillow build's PNG encoder settings;
- JPEGs from Pillow with fixed quality/subsampling and no EXIF/ICC; .mat files from scipy with the
  header's "Created on: <time>" text replaced by a fixed one.

Pixel conventions: uint8 sRGB-like images; "linear" means gamma 2.2 inverted (x / 255) ** 2.2.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from restorebench.config import SampleConfig
from restorebench.images import to_uint8
from restorebench.io import atomic_dir

from .sources import SIDD_VAL_GT, SIDD_VAL_NOISY

GAMMA = 2.2
# Natural RGB photographs shipped in skimage/data (present without pooch fetching).
SOURCE_IMAGES = (
    "astronaut.png",
    "chelsea.png",
    "coffee.png",
    "ihc.png",
    "motorcycle_left.png",
    "rocket.jpg",
    "hubble_deep_field.jpg",
)
SIDD_PHONES = ("GP", "IP", "S6", "N6", "G4")
SIDD_ISOS = (100, 200, 400, 800, 1600, 3200)
SIDD_SHUTTERS = (30, 50, 60, 100, 160, 250, 400, 800)
SIDD_TEMPS = (3200, 4400, 5500)
SIDD_LIGHT = {"L": 0.35, "N": 0.8, "H": 1.2}  # brightness code -> scale of the linear scene
# Real ILSVRC2012 class ids (tench, goldfish, great white shark, ...); more classes get made-up ids.
IMAGENET_WNIDS = (
    "n01440764", "n01443537", "n01484850", "n01491361", "n01494475",
    "n01496331", "n01498041", "n01514668", "n01514859", "n01518878",
)  # fmt: skip


# ------------------------------------------------------------------------------------------ helpers


def _rng(seed: int, dataset: str, *index: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), zlib.crc32(dataset.encode()), *index])


def load_sources() -> list[np.ndarray]:
    """The bundled photographs as HxWx3 float64 in [0, 1] (sRGB values)."""
    import skimage.data

    folder = Path(skimage.data.__file__).parent
    out = []
    for name in SOURCE_IMAGES:
        path = folder / name
        if not path.exists():
            raise FileNotFoundError(
                f"{path}: scikit-image's bundled image is missing (reinstall scikit-image)"
            )
        with Image.open(path) as im:
            out.append(np.asarray(im.convert("RGB"), dtype=np.float64) / 255.0)
    return out


def to_linear(img: np.ndarray) -> np.ndarray:
    """uint8 or [0,1] float sRGB-like image -> linear light in [0, 1] (gamma 2.2 inverted)."""
    x = img.astype(np.float64) / 255.0 if img.dtype == np.uint8 else img
    return np.clip(x, 0.0, 1.0) ** GAMMA


def encode_srgb(lin: np.ndarray) -> np.ndarray:
    """Linear light in [0, 1] -> uint8 with gamma 2.2 applied (the inverse of `to_linear`)."""
    return to_uint8(np.clip(lin, 0.0, 1.0) ** (1.0 / GAMMA))


def _prefilter(src: np.ndarray, scale: float) -> np.ndarray:
    """Anti-alias before sampling every `scale`-th source pixel (scale > 1 = downscaling)."""
    sigma = 0.5 * np.sqrt(max(scale * scale - 1.0, 0.0))
    return ndimage.gaussian_filter(src, sigma=(sigma, sigma, 0)) if sigma > 0.05 else src


def _warp(
    src: np.ndarray, out_hw: tuple[int, int], cy: float, cx: float, scale: float, angle: float
) -> np.ndarray:
    """Bilinear view of `src` (HxWx3): an out_h x out_w grid centred at (cy, cx) source pixels, one output
    pixel per `scale` source pixels, rotated by `angle` radians. Returns HxWx3 float64."""
    h, w = out_hw
    ys = (np.arange(h) - (h - 1) / 2.0) * scale
    xs = (np.arange(w) - (w - 1) / 2.0) * scale
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    c, s = float(np.cos(angle)), float(np.sin(angle))
    sy, sx = cy + c * yy - s * xx, cx + s * yy + c * xx
    out = np.empty((h, w, 3))
    for ch in range(3):
        out[..., ch] = ndimage.map_coordinates(src[..., ch], [sy, sx], order=1, mode="mirror")
    return out


def _random_view(
    src: np.ndarray, out_hw: tuple[int, int], rng: np.random.Generator
) -> tuple[float, float, float]:
    """A random (cy, cx, scale) whose view lies inside `src`, covering 55-100% of the largest fit."""
    h, w = out_hw
    fit = min(src.shape[0] / h, src.shape[1] / w)
    scale = fit * rng.uniform(0.55, 1.0)
    half_y, half_x = h * scale / 2.0, w * scale / 2.0
    cy = rng.uniform(half_y, src.shape[0] - half_y)
    cx = rng.uniform(half_x, src.shape[1] - half_x)
    return cy, cx, scale


def png_bytes(img: np.ndarray) -> bytes:
    """HxWx3 uint8 -> PNG bytes (8-bit RGB, Sub filter, zlib level 6, no ancillary chunks)."""
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"png_bytes expects HxWx3 uint8, got {img.shape} {img.dtype}")
    h, w, _ = img.shape
    rows = img.reshape(h, w * 3)
    sub = rows.copy()
    sub[:, 3:] = rows[:, 3:] - rows[:, :-3]  # uint8 wrap-around is the PNG Sub filter
    raw = np.concatenate([np.ones((h, 1), np.uint8), sub], axis=1).tobytes()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(raw, 6))
        + chunk(b"IEND", b"")
    )


def jpeg_bytes(img: np.ndarray, quality: int = 90) -> bytes:
    """HxWx3 uint8 -> baseline JPEG bytes (4:2:0, fixed quality, no EXIF/ICC)."""
    buf = io.BytesIO()
    Image.fromarray(img, "RGB").save(
        buf, "JPEG", quality=quality, subsampling=2, optimize=False, progressive=False
    )
    return buf.getvalue()


def mat_bytes(name: str, array: np.ndarray) -> bytes:
    """A MATLAB v5 .mat holding one variable, with a fixed header text (scipy writes the current time)."""
    import scipy.io

    buf = io.BytesIO()
    scipy.io.savemat(buf, {name: array}, format="5", do_compression=False)
    data = bytearray(buf.getvalue())
    data[:116] = b"MATLAB 5.0 MAT-file, Platform: posix, written by restorebench (fixed header)".ljust(116)
    return bytes(data)


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


# --------------------------------------------------------------------------------------------- SIDD


def camera_noise(lin: np.ndarray, iso: int, rng: np.random.Generator) -> np.ndarray:
    """Poisson-Gaussian sensor noise on linear light in [0, 1] (HxWx3 float).

    Shot noise: signal / a photo-electrons, Poisson, scaled back (variance a * signal); read noise:
    Gaussian with std b. Both grow with the ISO gain: a = 1e-3 * ISO/100, b = 4e-4 * ISO/100, which puts
    the noisy/clean PSNR between ~20 dB (ISO 3200) and ~40 dB (ISO 100), SIDD's range.
    """
    gain = iso / 100.0
    a, b = 1e-3 * gain, 4e-4 * gain
    shot = rng.poisson(np.clip(lin, 0.0, 1.0) / a) * a
    return np.clip(shot + rng.normal(0.0, b, size=lin.shape), 0.0, 1.0)


def _sidd(root: Path, cfg: SampleConfig, sources: list[np.ndarray], seed: int) -> None:
    h, w = cfg.sidd_height, cfg.sidd_width
    data = root / "SIDD_Medium_Srgb" / "Data"
    for i in range(1, cfg.sidd_instances + 1):
        rng = _rng(seed, "sidd", i)
        src = sources[int(rng.integers(len(sources)))]
        iso = int(rng.choice(SIDD_ISOS))
        light = str(rng.choice(sorted(SIDD_LIGHT)))
        name = (
            f"{i:04d}_{int(rng.integers(1, 11)):03d}_{rng.choice(SIDD_PHONES)}_{iso:05d}_"
            f"{int(rng.choice(SIDD_SHUTTERS)):05d}_{int(rng.choice(SIDD_TEMPS))}_{light}"
        )
        cy, cx, scale = _random_view(src, (h, w), rng)
        filtered = _prefilter(src, scale)
        for k in ("010", "011"):
            # the second capture of an instance sees the scene shifted by a fraction of a pixel or two
            dy, dx = (0.0, 0.0) if k == "010" else tuple(rng.uniform(-2.0, 2.0, size=2))
            lin = to_linear(_warp(filtered, (h, w), cy + dy, cx + dx, scale, 0.0)) * SIDD_LIGHT[light]
            gt = encode_srgb(lin)
            noisy = encode_srgb(camera_noise(to_linear(gt), iso, rng))
            _write(data / name / f"{i:04d}_GT_SRGB_{k}.PNG", png_bytes(gt))
            _write(data / name / f"{i:04d}_NOISY_SRGB_{k}.PNG", png_bytes(noisy))
    # validation blocks: N images x B blocks of bs x bs, like the official 40 x 32 x 256 x 256 x 3
    n, nb, bs = cfg.sidd_val_images, cfg.sidd_val_blocks, cfg.sidd_val_block_size
    gt_blocks = np.zeros((n, nb, bs, bs, 3), np.uint8)
    noisy_blocks = np.zeros_like(gt_blocks)
    vh, vw = max(h, 2 * bs), max(w, 2 * bs)
    for j in range(n):
        rng = _rng(seed, "sidd-val", j)
        src = sources[int(rng.integers(len(sources)))]
        cy, cx, scale = _random_view(src, (vh, vw), rng)
        gt = encode_srgb(to_linear(_warp(_prefilter(src, scale), (vh, vw), cy, cx, scale, 0.0)))
        noisy = encode_srgb(camera_noise(to_linear(gt), int(rng.choice(SIDD_ISOS)), rng))
        for b in range(nb):
            y, x = int(rng.integers(0, vh - bs + 1)), int(rng.integers(0, vw - bs + 1))
            gt_blocks[j, b] = gt[y : y + bs, x : x + bs]
            noisy_blocks[j, b] = noisy[y : y + bs, x : x + bs]
    _write(root / SIDD_VAL_NOISY, mat_bytes(SIDD_VAL_NOISY[:-4], noisy_blocks))
    _write(root / SIDD_VAL_GT, mat_bytes(SIDD_VAL_GT[:-4], gt_blocks))


# -------------------------------------------------------------------------------------------- GoPro


def _gopro_sequence(folder: Path, src: np.ndarray, cfg: SampleConfig, rng: np.random.Generator) -> None:
    """Render `gopro_frames` blurred frames, each the average of `gopro_average` sharp sub-frames taken
    along one smooth camera path (translation + slight rotation and zoom), like GoPro's 240 fps frames.

    GoPro's own convention (dataset README: "gamma corrected and not corrected (linear CRF) versions"):
    `blur` averages the stored pixel values directly (a linear camera response assumed);
    `blur_gamma` inverts a gamma 2.2 response, averages in linear light and re-applies the gamma.
    `sharp` is the middle sub-frame.
    """
    h, w = cfg.gopro_height, cfg.gopro_width
    n_sub = cfg.gopro_average
    total = cfg.gopro_frames * n_sub
    speed = rng.uniform(0.8, 2.2)  # output pixels per sub-frame
    heading = rng.uniform(0.0, 2.0 * np.pi)
    travel = speed * total
    fit = min(
        src.shape[0] / (h + abs(travel * np.sin(heading))), src.shape[1] / (w + abs(travel * np.cos(heading)))
    )
    scale = max(fit * rng.uniform(0.8, 0.95), 0.5)
    filtered = _prefilter(src, scale)
    amp, freq, phase = rng.uniform(1.0, 4.0, 2), rng.uniform(0.5, 2.0, 2), rng.uniform(0.0, 2.0 * np.pi, 2)
    rot_rate, zoom_amp = rng.uniform(-0.002, 0.002), rng.uniform(0.0, 0.02)
    cy0 = src.shape[0] / 2.0 - np.sin(heading) * travel * scale / 2.0
    cx0 = src.shape[1] / 2.0 - np.cos(heading) * travel * scale / 2.0
    first = int(rng.integers(1, 60))
    for f in range(cfg.gopro_frames):
        subs = []
        for j in range(n_sub):
            t = f * n_sub + j
            wobble = amp * np.sin(2.0 * np.pi * freq * t / total + phase)
            cy = cy0 + (np.sin(heading) * speed * t + wobble[0]) * scale
            cx = cx0 + (np.cos(heading) * speed * t + wobble[1]) * scale
            zoom = 1.0 + zoom_amp * np.sin(2.0 * np.pi * t / total)
            subs.append(to_uint8(_warp(filtered, (h, w), cy, cx, scale * zoom, rot_rate * t)))
        stack = np.stack(subs).astype(np.float64)
        name = f"{first + f:06d}.png"
        _write(folder / "blur" / name, png_bytes(np.rint(stack.mean(axis=0)).astype(np.uint8)))
        _write(folder / "blur_gamma" / name, png_bytes(encode_srgb(to_linear(stack / 255.0).mean(axis=0))))
        _write(folder / "sharp" / name, png_bytes(subs[n_sub // 2]))


def _gopro(root: Path, cfg: SampleConfig, sources: list[np.ndarray], seed: int) -> None:
    names = _rng(seed, "gopro-names").choice(np.arange(372, 900), size=64, replace=False)
    splits = [("train", i) for i in range(cfg.gopro_train_sequences)]
    splits += [("test", i) for i in range(cfg.gopro_test_sequences)]
    for k, (split, i) in enumerate(splits):
        rng = _rng(seed, "gopro", k)
        folder = root / "GOPRO_Large" / split / f"GOPR0{int(names[k % 64])}_11_0{i % 10}"
        _gopro_sequence(folder, sources[int(rng.integers(len(sources)))], cfg, rng)


# ----------------------------------------------------------------------------------------- ImageNet


def _imagenet(root: Path, cfg: SampleConfig, sources: list[np.ndarray], seed: int) -> None:
    rng = _rng(seed, "imagenet-classes")
    if cfg.imagenet_classes <= len(IMAGENET_WNIDS):
        wnids = sorted(rng.choice(IMAGENET_WNIDS, size=cfg.imagenet_classes, replace=False).tolist())
    else:
        ids = rng.choice(np.arange(1_000_000, 15_000_000), size=cfg.imagenet_classes, replace=False)
        wnids = sorted(f"n{int(v):08d}" for v in ids)
    short = cfg.imagenet_size
    for c, wnid in enumerate(wnids):
        rng = _rng(seed, "imagenet", c)
        numbers = rng.choice(np.arange(1, 40_000), size=cfg.imagenet_per_class, replace=False)
        for k in numbers:
            src = sources[int(rng.integers(len(sources)))]
            long = int(round(short * float(rng.choice([1.0, 4 / 3, 3 / 2]))))
            hw = (short, long) if rng.random() < 0.7 else (long, short)
            cy, cx, scale = _random_view(src, hw, rng)
            img = to_uint8(_warp(_prefilter(src, scale), hw, cy, cx, scale, 0.0))
            _write(root / "train" / wnid / f"{wnid}_{int(k)}.JPEG", jpeg_bytes(img))


BUILDERS = {"sidd": _sidd, "gopro": _gopro, "imagenet": _imagenet}


def make_sample(dataset: str, dest: Path, cfg: SampleConfig, *, seed: int) -> Path:
    """Write the embedded look-alike of `dataset` into `dest` (data/raw/{dataset}) in the real layout.

    Built in a temporary folder next to `dest` and renamed into place, so `dest` is either the previous
    complete copy or the new complete one. Sizes come from `cfg`; the same (cfg, seed) gives the same
    bytes. Returns `dest`.
    """
    if dataset not in BUILDERS:
        raise ValueError(f"unknown dataset {dataset!r}; choose from {sorted(BUILDERS)}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    dest = Path(dest)
    sources = load_sources()
    with atomic_dir(dest) as tmp:
        BUILDERS[dataset](tmp, cfg, sources, seed)
    return dest


def expected_counts(dataset: str, cfg: SampleConfig) -> tuple[dict[str, int], dict[str, int]]:
    """(pairs per split, groups per split) that `make_sample(dataset, ..., cfg)` produces — the demo
    profile's `expected_pairs` / `expected_groups`. SIDD's "val" split counts .mat blocks."""
    if dataset == "sidd":
        return (
            {"train": 2 * cfg.sidd_instances, "val": cfg.sidd_val_images * cfg.sidd_val_blocks},
            {"train": cfg.sidd_instances, "val": cfg.sidd_val_images},
        )
    if dataset == "gopro":
        return (
            {
                "train": cfg.gopro_train_sequences * cfg.gopro_frames,
                "test": cfg.gopro_test_sequences * cfg.gopro_frames,
            },
            {"train": cfg.gopro_train_sequences, "test": cfg.gopro_test_sequences},
        )
    if dataset == "imagenet":
        return {"train": cfg.imagenet_classes * cfg.imagenet_per_class}, {"train": cfg.imagenet_classes}
    raise ValueError(f"unknown dataset {dataset!r}; choose from {sorted(BUILDERS)}")
