"""Inference for evaluation: whole image, or overlapping tiles blended without seams.

Tiling guarantee (tests/test_infer.py checks it): for a convolutional model whose receptive field
(its full width, 2r+1 pixels) is at most `overlap`, the tiled output equals the whole-image output to
float32 round-off (1e-5). How: every tile gets a blending weight that is exactly zero within
m = (overlap - 1) // 2 >= r pixels of an edge shared with another tile (where the tile's own zero
padding makes its output differ from the whole-image run), and rises smoothly (sin^2 ramp) further in.
Tiles are spread evenly so neighbours overlap by at least `overlap` pixels, hence every pixel has
positive weight in at least one tile, and the output is the weighted mean over tiles. Tile edges that
lie on the image border carry no zero zone: there the whole-image run sees the same border.
For models without that locality (attention over the whole input) the ramp hides seams; it cannot
make the result equal to a whole-image run. The tile batch changes the result by float round-off at
most: each tile is its own sample of a forward pass (tests/test_infer.py checks batch 1 against all
tiles in one pass, for a local and a non-local model).

Precision (`precision` names it for the record): float32 by default, IEEE float32 on CUDA too (TF32
off for matmuls and cuDNN convolutions, which cuDNN would otherwise allow), as the published protocols
compute; `tf32=True` allows TF32 on CUDA, `autocast="bf16"` runs the model under CUDA bf16 autocast.
"""

from __future__ import annotations

import contextlib
import logging
import math
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from restorebench import images

__all__ = ["ProtocolRestorer", "cell_restorer", "float32_precision", "is_out_of_memory", "load_weights", "precision",
           "restore", "to_uint8", "tile_starts", "trained_as"]
log = logging.getLogger(__name__)


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of length `tile` covering [0, size), neighbours overlapping >= `overlap`.

    The first tile starts at 0 and the last ends at `size`; the rest are spread evenly, so the
    overlap is `overlap` or a little more. One tile (start 0) when the image fits.
    """
    if tile >= size:
        return [0]
    count = math.ceil((size - overlap) / (tile - overlap))
    span = size - tile
    # nearest-integer rounding of i * span / (count - 1): gaps are floor/ceil of the mean gap, and the
    # mean gap span / (count - 1) <= tile - overlap (an integer), so no gap exceeds tile - overlap
    return [(i * span + (count - 1) // 2) // (count - 1) for i in range(count)]


def _weights_1d(start: int, length: int, size: int, overlap: int) -> torch.Tensor:
    """Blend weights along one axis for a tile at `start` of `length` pixels in an axis of `size`."""
    margin = (overlap - 1) // 2  # zero zone: receptive-field radius r <= (overlap - 1) / 2
    ramp = overlap // 2 + 1
    d = torch.arange(length, dtype=torch.float64)

    def profile(dist: torch.Tensor) -> torch.Tensor:
        t = ((dist - margin + 1) / ramp).clamp(0, 1)
        return torch.sin(0.5 * math.pi * t) ** 2  # 0 for dist < margin, smooth up to 1

    w = torch.ones(length, dtype=torch.float64)
    if start > 0:  # left/top edge shared with another tile
        w = w * profile(d)
    if start + length < size:  # right/bottom edge shared with another tile
        w = w * profile(length - 1 - d)
    return w


_AUTOCAST = {True: torch.bfloat16, "bf16": torch.bfloat16, "fp16": torch.float16}


def _autocast_dtype(autocast: bool | str | None, device: torch.device) -> torch.dtype | None:
    """None/False: float32. True or "bf16": bfloat16; "fp16": float16 -- on CUDA only (None elsewhere)."""
    if autocast is None or autocast is False:
        return None
    if autocast not in _AUTOCAST:
        raise ValueError(f"autocast must be None, False, True, 'bf16' or 'fp16', got {autocast!r}")
    return _AUTOCAST[autocast] if device.type == "cuda" else None


def precision(device: str | torch.device, *, autocast: bool | str | None = None, tf32: bool = False) -> str:
    """What `restore(..., device=device, autocast=autocast, tf32=tf32)` computes in: "bf16" or "fp16"
    (CUDA autocast), "tf32" (CUDA float32 with TF32 allowed) or "fp32" (IEEE float32; always off CUDA)."""
    device = torch.device(device)
    amp = _autocast_dtype(autocast, device)
    if amp is not None:
        return "bf16" if amp == torch.bfloat16 else "fp16"
    return "tf32" if tf32 and device.type == "cuda" else "fp32"


@contextlib.contextmanager
def float32_precision(tf32: bool, device: torch.device) -> Iterator[None]:
    """On CUDA, allow (tf32=True) or forbid (False) TF32 for float32 matmuls and cuDNN convolutions
    inside the block, then restore the previous flags. A no-op on other devices.

    Forbidding matters: cuDNN allows TF32 convolutions by default, so "float32" on an Ampere or newer
    GPU would otherwise be TF32 for convolutions (10-bit mantissa) and IEEE float32 for matmuls.
    """
    if device.type != "cuda":
        yield
        return
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    before = matmul.allow_tf32, cudnn.allow_tf32
    matmul.allow_tf32 = cudnn.allow_tf32 = bool(tf32)
    try:
        yield
    finally:
        matmul.allow_tf32, cudnn.allow_tf32 = before


def _forward(model: nn.Module, x: torch.Tensor, pad_multiple: int, amp: torch.dtype | None) -> torch.Tensor:
    """model(x) for x (N,C,H,W) float32, with replicate padding to a multiple and the crop back."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % pad_multiple, (-w) % pad_multiple
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="replicate")
    ctx = torch.autocast("cuda", dtype=amp) if amp is not None else contextlib.nullcontext()
    with ctx:
        y = model(x)
    if not isinstance(y, torch.Tensor) or y.ndim != 4 or y.shape[-2:] != x.shape[-2:]:
        got = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise ValueError(f"model must map (N,C,H,W) to (N,C',H,W); input {tuple(x.shape)} gave {got}")
    return y[..., :h, :w].float()


def restore(
    model: nn.Module,
    image: torch.Tensor,
    *,
    tile: int | None = None,
    overlap: int = 32,
    batch: int = 4,
    device: str | torch.device | None = None,
    autocast: bool | str | None = None,
    tf32: bool = False,
    pad_multiple: int = 1,
) -> torch.Tensor:
    """Restore an image (or a batch) with `model`, whole or in overlapping tiles; output in [0, 1].

    image: (3,H,W) or (B,3,H,W) float tensor in [0, 1]; the result has the same shape, float32, on
    the image's device, clamped to [0, 1] (not quantised; see `to_uint8`).
    tile: None runs the whole image; an int runs tiles of tile x tile pixels (smaller along an axis
    where the image is smaller), `batch` tiles per forward pass, neighbours overlapping by at least
    `overlap` pixels. Exact for convolutional models with receptive field <= overlap (module docstring);
    the output does not depend on `batch` (beyond float round-off).
    device: where the model runs (the model is moved there); default the model's own device.
    autocast: True/"bf16" (or "fp16") runs the model under CUDA autocast; ignored with a warning on CPU.
    tf32: on CUDA, allow TF32 matmuls and convolutions (`float32_precision`); False runs IEEE float32.
    No effect on CPU. `precision(device, autocast=..., tf32=...)` names the result for the record.
    pad_multiple: pad each model input (replicate, bottom/right) to a multiple of this and crop the
    output back, for models that need sizes divisible by their total stride.
    The model is put in eval mode for the call (its previous mode is restored) and run under
    torch.inference_mode.
    """
    if not isinstance(image, torch.Tensor) or image.ndim not in (3, 4) or not image.is_floating_point():
        desc = (
            f"{image.dtype} {tuple(image.shape)}" if isinstance(image, torch.Tensor) else type(image).__name__
        )
        raise ValueError(f"image must be a float tensor (C,H,W) or (B,C,H,W) in [0, 1], got {desc}")
    if not (isinstance(batch, int) and batch >= 1):
        raise ValueError(f"batch must be an int >= 1, got {batch!r}")
    if not (isinstance(pad_multiple, int) and pad_multiple >= 1):
        raise ValueError(f"pad_multiple must be an int >= 1, got {pad_multiple!r}")
    if tile is not None:
        if not (isinstance(tile, int) and tile >= 1):
            raise ValueError(f"tile must be None or an int >= 1, got {tile!r}")
        if not (isinstance(overlap, int) and 0 <= overlap < tile):
            raise ValueError(f"overlap must be an int in [0, tile) = [0, {tile}), got {overlap!r}")
        if tile % pad_multiple:
            raise ValueError(f"tile={tile} must be a multiple of pad_multiple={pad_multiple}")

    if device is None:
        param = next(model.parameters(), None)
        device = param.device if param is not None else image.device
    device = torch.device(device)
    model.to(device)
    amp = _autocast_dtype(autocast, device)
    if amp is None and autocast not in (None, False):
        warnings.warn(f"autocast is used on CUDA only; running in float32 on {device}", stacklevel=2)

    squeeze = image.ndim == 3
    x = image[None] if squeeze else image
    was_training = model.training
    model.eval()
    try:
        with float32_precision(tf32, device), torch.inference_mode():
            x = x.to(device=device, dtype=torch.float32)
            h, w = x.shape[-2:]
            if tile is None or (tile >= h and tile >= w):
                out = torch.cat([_forward(model, c, pad_multiple, amp) for c in x.split(batch)])
            else:
                # pad the image once (as the whole-image run does), so the tiles at the bottom/right
                # border see the same padded border as the whole-image run; tile % pad_multiple == 0
                ph, pw = (-h) % pad_multiple, (-w) % pad_multiple
                xp = F.pad(x, (0, pw, 0, ph), mode="replicate") if ph or pw else x
                out = _restore_tiled(model, xp, tile, overlap, batch, pad_multiple, amp)[..., :h, :w]
            out = out.clamp_(0, 1).to(image.device)
    finally:
        model.train(was_training)
    return out[0] if squeeze else out


def _restore_tiled(
    model: nn.Module,
    x: torch.Tensor,
    tile: int,
    overlap: int,
    batch: int,
    pad_multiple: int,
    amp: torch.dtype | None,
) -> torch.Tensor:
    """Weighted mean of overlapping tile outputs for x (B,C,H,W) on the model's device."""
    b, _, h, w = x.shape
    th, tw = min(tile, h), min(tile, w)
    ys, xs = tile_starts(h, th, overlap), tile_starts(w, tw, overlap)
    wy = [_weights_1d(y0, th, h, overlap).to(x.device, torch.float32) for y0 in ys]
    wx = [_weights_1d(x0, tw, w, overlap).to(x.device, torch.float32) for x0 in xs]

    weight_sum = torch.zeros(h, w, device=x.device)
    for i, y0 in enumerate(ys):
        for j, x0 in enumerate(xs):
            weight_sum[y0 : y0 + th, x0 : x0 + tw] += wy[i][:, None] * wx[j][None, :]
    if not bool((weight_sum > 0).all()):  # cannot happen with tile_starts; guard the invariant
        raise RuntimeError("tile layout leaves pixels uncovered")

    jobs = [(n, i, j) for n in range(b) for i in range(len(ys)) for j in range(len(xs))]
    acc: torch.Tensor | None = None
    for k in range(0, len(jobs), batch):
        chunk = jobs[k : k + batch]
        inp = torch.stack([x[n, :, ys[i] : ys[i] + th, xs[j] : xs[j] + tw] for n, i, j in chunk])
        out = _forward(model, inp, pad_multiple, amp)
        if acc is None:
            acc = torch.zeros(b, out.shape[1], h, w, device=x.device)
        for o, (n, i, j) in zip(out, chunk, strict=True):
            acc[n, :, ys[i] : ys[i] + th, xs[j] : xs[j] + tw] += o * (wy[i][:, None] * wx[j][None, :])
    assert acc is not None
    return acc / weight_sum


def is_out_of_memory(err: BaseException) -> bool:
    """Whether `err` is the device running out of memory (CUDA's OutOfMemoryError, or the RuntimeError
    text other backends and older torch versions raise)."""
    oom = getattr(torch.cuda, "OutOfMemoryError", ())
    return (bool(oom) and isinstance(err, oom)) or (isinstance(err, RuntimeError) and "out of memory" in str(err))


class ProtocolRestorer:
    """The evaluation protocols' restorer: each image whole, as NAFNet's and Restormer's test scripts run
    GoPro's 1280x720 images (every model pads to its own multiple inside and crops back); tiles only as a
    memory fallback: when the whole image runs out of device memory, that image is retried in
    `fallback_tile` tiles (overlap `overlap`, `batch` tiles per pass). `tile` forces tiling for every image
    (a deviation from the protocols, recorded as such). `record()` says what was used, for the cell's provenance.json.

    Call: (B,3,H,W) float in [0, 1] -> (B,3,H,W) float in [0, 1] on the CPU.
    """

    def __init__(self, model: nn.Module, *, device: str | torch.device, fallback_tile: int | None = 512,
                 overlap: int = 32, batch: int = 4, autocast: bool | str | None = None, tf32: bool = False,
                 tile: int | None = None) -> None:
        self.model, self.device = model, torch.device(device)
        self.fallback_tile, self.tile, self.overlap, self.batch = fallback_tile, tile, overlap, batch
        self.autocast, self.tf32 = autocast, tf32
        self.images = 0
        self.tiled: list[int] = []  # indices (call order) of the images that ran tiled

    def _run(self, x: torch.Tensor, tile: int | None) -> torch.Tensor:
        return restore(self.model, x, tile=tile, overlap=self.overlap, batch=self.batch, device=self.device,
                       autocast=self.autocast, tf32=self.tf32).cpu()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        index, self.images = self.images, self.images + 1
        if self.tile is not None:
            self.tiled.append(index)
            return self._run(x, self.tile)
        try:
            return self._run(x, None)
        except (RuntimeError, MemoryError) as err:
            if not is_out_of_memory(err) or self.fallback_tile is None:
                raise
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        self.tiled.append(index)
        return self._run(x, self.fallback_tile)

    def record(self) -> dict:
        """{"used": any image tiled, "forced": tiling asked for every image, "tiled_images", "images",
        "tile", "overlap"} for the cell's provenance.json."""
        tile = self.tile if self.tile is not None else self.fallback_tile
        return {"used": bool(self.tiled), "forced": self.tile is not None, "tiled_images": len(self.tiled),
                "images": self.images, "tile": tile if self.tiled else None,
                "overlap": self.overlap if self.tiled else None}


def to_uint8(img: torch.Tensor) -> np.ndarray:
    """(C,H,W) or (B,C,H,W) float tensor in [0, 1] -> HxWxC or BxHxWxC uint8 NumPy array, quantised in
    float32 by images.to_uint8 (the evaluation protocol: round half to even)."""
    if not isinstance(img, torch.Tensor) or img.ndim not in (3, 4) or not img.is_floating_point():
        raise ValueError("img must be a float tensor (C,H,W) or (B,C,H,W)")
    return images.to_uint8(np.moveaxis(img.detach().float().cpu().numpy(), -3, -1))


# ---------------------------------------------------------------------------------------------- finetuned weights


def trained_as(weights: Path) -> dict[str, str]:
    """What a run folder says its weights were trained as (model, variant, task, profile ...): the
    safetensors metadata, then config.json and train.json beside the file; {} when none says."""
    import json

    from safetensors import safe_open

    found: dict[str, str] = {}
    for side in ("train.json", "config.json"):  # later sources win: the file's own metadata last
        path = weights.parent / side
        try:
            data = json.loads(path.read_text()) if path.is_file() else {}
        except (OSError, ValueError):
            data = {}
        found.update({k: str(v) for k, v in data.items() if isinstance(v, str | int) and not isinstance(v, bool)})
    try:
        with safe_open(str(weights), framework="pt") as f:
            found.update(f.metadata() or {})
    except Exception:  # noqa: BLE001 - an unreadable header is reported by the load itself
        pass
    return found


def load_weights(net: nn.Module, weights: Path, *, model: str, variant: str, profile: str, rerun: str) -> None:
    """Load a finetuned cell's weights into `net` (the architecture `profile` builds: `model` `variant`),
    strictly. Weights of another profile, variant or architecture fail in one line (RestorebenchError):
    which file, what it was trained as where the run folder says, how many tensors disagree, and what to
    run (`rerun`: the command that trains this cell under this profile)."""
    from restorebench.errors import RestorebenchError
    from restorebench.models.weights import WeightsError, read_state_dict

    if not weights.exists():
        raise RestorebenchError(weights, "no finetuned weights", f"run `{rerun}` first")
    try:
        state = read_state_dict(weights)
    except WeightsError as err:  # a cut or corrupt file, named
        raise RestorebenchError(weights, str(err), f"delete it and run `{rerun}`") from None
    own = net.state_dict()
    wrong = [k for k, v in state.items() if k in own and tuple(v.shape) != tuple(own[k].shape)]
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if wrong or missing or unexpected:
        meta = trained_as(weights)
        was = " ".join(f"{label}{meta[k]}" for k, label in (("model", ""), ("variant", "variant "),
                                                            ("profile", "under profile ")) if k in meta)  # fmt: skip
        was = was or "another model"
        counts = ", ".join(f"{n} {what}" for n, what in ((len(wrong), "differ in shape"), (len(missing), "missing"),
                                                          (len(unexpected), "unexpected")) if n)  # fmt: skip
        example = f"; e.g. {wrong[0]} {tuple(state[wrong[0]].shape)} vs {tuple(own[wrong[0]].shape)}" if wrong else ""
        other = meta.get("profile")
        hint = (f"evaluate under its profile (-S profile={other}) or retrain here: `{rerun}`"
                if other and other != profile else f"retrain under profile {profile}: `{rerun}`")  # fmt: skip
        raise RestorebenchError(
            weights, f"trained as {was}, but profile {profile} builds {model} variant {variant}: "
                     f"{counts} of {len(own)} tensors{example}", hint)  # fmt: skip
    net.load_state_dict(state, strict=True)
    log.info("loaded %s: %d tensors, 0 missing, 0 unexpected", weights, len(state))


def cell_restorer(
    net: nn.Module, *, tile: int | None, overlap: int, batch: int, autocast: bool | str | None, tf32: bool,
    fallback_tile: int | None = 512,
) -> tuple[ProtocolRestorer, str]:
    """`net` on this machine's device as the evaluation protocols' restorer ((1,3,H,W) in [0,1] -> same,
    on the CPU): whole images, tiles only when an image runs out of memory (`fallback_tile`) or when
    `tile` forces them (recorded); and the precision's name for the record."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    net.to(device)
    restorer = ProtocolRestorer(net, device=device, fallback_tile=fallback_tile, overlap=overlap, batch=batch,
                                autocast=autocast, tf32=tf32, tile=tile)  # fmt: skip
    return restorer, precision(device, autocast=autocast, tf32=tf32)
