"""Reading and writing user images at their bit depth: PNG, JPEG, TIFF; 8- and 16-bit; grey, RGB, RGBA.

Pillow reads 16-bit RGB(A) PNGs as 8-bit and cannot write them, so those go through the small PNG codec here
(zlib + the five PNG row filters, PNG specification section 9); TIFFs go through tifffile (scikit-image's
dependency); everything else through Pillow.
"""

from __future__ import annotations

import contextlib
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from restorebench.errors import RestorebenchError

SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}  # PNG colour type -> samples per pixel (grey, RGB, grey+alpha, RGBA)


def to_uint8(img: np.ndarray, *, half_up: bool = False) -> np.ndarray:
    """Float image in [0, 1] -> uint8: clip to [0, 1], multiply by 255 in the image's own float type, round,
    cast. The one quantiser of the project.

    Rounding half to even (np.round) is the evaluation protocol: BasicSR's tensor2img (NAFNet) and skimage's
    img_as_ubyte (Restormer). `half_up` (floor(x + 0.5)) is the degradation store's rounding, kept because
    the stored bytes were built with it.
    """
    if not np.issubdtype(img.dtype, np.floating):
        raise ValueError(f"to_uint8 takes a float image in [0, 1], got {img.dtype}")
    scaled = np.clip(img, 0.0, 1.0) * img.dtype.type(255.0)
    return (np.floor(scaled + img.dtype.type(0.5)) if half_up else np.round(scaled)).astype(np.uint8)


@contextlib.contextmanager
def _pixel_limit(limit: int):
    """PIL's decompression-bomb limit set to `limit` pixels (0: none) for the block; PIL refuses above twice
    MAX_IMAGE_PIXELS, so it is set to half."""
    before = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = limit // 2 if limit else None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = before


def read_image(path: Path, *, max_pixels: int | None = None) -> np.ndarray:
    """HxW (grey) or HxWxC (C = 2, 3 or 4) uint8 or uint16 array of `path`, at its own bit depth. An image of
    more than `max_pixels` (default: PIL's decompression-bomb limit, Image.MAX_IMAGE_PIXELS x 2; 0: none)
    is refused in one line before it is decoded."""
    suffix = path.suffix.lower()
    limit = 2 * (Image.MAX_IMAGE_PIXELS or 0) if max_pixels is None else max_pixels
    if limit and suffix not in (".tif", ".tiff"):
        try:
            with _pixel_limit(0), Image.open(path) as im:  # the header only: its size, nothing decoded
                size = im.size
        except (OSError, ValueError, SyntaxError):
            size = (0, 0)  # unreadable: the decoding below says why
        if size[0] * size[1] > limit:
            raise RestorebenchError(path, f"{size[0]}x{size[1]} pixels, over the {limit:,}-pixel limit against decompression bombs",
                                    "if you trust the file, raise the limit (restore --max-pixels N, or 0 for none)")
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise RestorebenchError(path, f"not an image this tool reads ({suffix})", f"use one of {list(SUFFIXES)}")
    try:
        if suffix in (".tif", ".tiff"):
            import tifffile

            arr = tifffile.imread(path)
        elif suffix == ".png" and _png_header(path)[0] == 16 and _png_header(path)[1] in (2, 4, 6):
            arr = read_png16(path)
        else:
            with _pixel_limit(limit), Image.open(path) as im:
                if im.mode in ("I;16", "I;16B", "I;16L"):
                    arr = np.asarray(im, dtype=np.uint16)
                elif im.mode in ("L", "RGB", "RGBA", "LA"):
                    arr = np.asarray(im)
                else:  # palette, CMYK, 1-bit, ...: as 8-bit RGB(A)
                    arr = np.asarray(im.convert("RGBA" if "A" in im.getbands() or "transparency" in im.info else "RGB"))
    except (OSError, ValueError, SyntaxError) as err:
        raise RestorebenchError(path, f"could not read the image: {err}") from None
    if arr.dtype not in (np.uint8, np.uint16) or arr.ndim not in (2, 3):
        raise RestorebenchError(path, f"unsupported image array {arr.dtype} {arr.shape}", "8- or 16-bit images only")
    return arr


def _png_header(path: Path) -> tuple[int, int]:
    """(bit depth, colour type) from a PNG's IHDR."""
    with open(path, "rb") as f:
        head = f.read(29)
    if head[:8] != _SIGNATURE or head[12:16] != b"IHDR":
        raise ValueError("not a PNG file")
    return head[24], head[25]


def read_png16(path: Path) -> np.ndarray:
    """A 16-bit, non-interlaced PNG as uint16 HxW or HxWxC."""
    data = path.read_bytes()
    if data[:8] != _SIGNATURE:
        raise ValueError("not a PNG file")
    pos, idat, header = 8, [], None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
        pos += 12 + length
    if header is None:
        raise ValueError("PNG without IHDR")
    width, height, depth, colour, _, _, interlace = header
    if depth != 16 or colour not in _CHANNELS or interlace:
        raise ValueError(f"read_png16 reads non-interlaced 16-bit PNGs (depth {depth}, colour {colour}, "
                         f"interlace {interlace})")  # fmt: skip
    channels = _CHANNELS[colour]
    bpp, stride = 2 * channels, 2 * channels * width
    raw = np.frombuffer(zlib.decompress(b"".join(idat)), np.uint8).reshape(height, stride + 1)
    out = np.zeros((height, stride), np.uint8)
    prior = np.zeros(stride, np.uint8)
    for y in range(height):
        kind, row = raw[y, 0], raw[y, 1:].astype(np.int32)
        if kind == 0:
            rec = row
        elif kind == 1:  # Sub: a running sum per byte position within the pixel, modulo 256
            rec = np.cumsum(row.reshape(width, bpp), axis=0).reshape(-1)
        elif kind == 2:  # Up
            rec = row + prior
        elif kind in (3, 4):  # Average, Paeth: each byte depends on the reconstructed byte to its left
            rec = _unfilter_sequential(kind, row, prior.astype(np.int32), bpp)
        else:
            raise ValueError(f"PNG row filter {kind} unknown")
        out[y] = prior = (rec % 256).astype(np.uint8)
    arr = out.view(">u2").reshape(height, width, channels).astype(np.uint16)
    return arr[..., 0] if channels == 1 else arr


def _unfilter_sequential(kind: int, row: np.ndarray, prior: np.ndarray, bpp: int) -> np.ndarray:
    rec = row.tolist()
    up = prior.tolist()
    for i in range(len(rec)):
        left = rec[i - bpp] if i >= bpp else 0
        if kind == 3:
            rec[i] = (rec[i] + (left + up[i]) // 2) % 256
        else:
            upleft = up[i - bpp] if i >= bpp else 0
            p = left + up[i] - upleft
            pa, pb, pc = abs(p - left), abs(p - up[i]), abs(p - upleft)
            pred = left if pa <= pb and pa <= pc else up[i] if pb <= pc else upleft
            rec[i] = (rec[i] + pred) % 256
    return np.asarray(rec, np.int32)


def write_png(path: Path, arr: np.ndarray) -> None:
    """Write uint8 (Pillow) or uint16 (this codec, filter 0, big-endian samples) HxW / HxWxC as PNG."""
    if arr.dtype == np.uint8:
        Image.fromarray(arr).save(path, format="PNG")
        return
    if arr.dtype != np.uint16:
        raise ValueError(f"write_png takes uint8 or uint16, got {arr.dtype}")
    grid = arr if arr.ndim == 3 else arr[..., None]
    height, width, channels = grid.shape
    colour = {v: k for k, v in _CHANNELS.items()}[channels]
    rows = np.ascontiguousarray(grid.astype(">u2")).view(np.uint8).reshape(height, -1)
    raw = np.concatenate([np.zeros((height, 1), np.uint8), rows], axis=1).tobytes()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 16, colour, 0, 0, 0)
    path.write_bytes(_SIGNATURE + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))
