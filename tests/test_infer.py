"""Tiled inference equals whole-image inference for local models; clamping, rounding and errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from restorebench.infer import restore, tile_starts, to_uint8


def _conv_net(layers: int = 4, seed: int = 0) -> nn.Module:
    """3 -> 3 channel conv net of `layers` 3x3 convs (zero padding): receptive field 2*layers + 1."""
    torch.manual_seed(seed)
    mods: list[nn.Module] = [nn.Conv2d(3, 8, 3, padding=1)]
    for _ in range(layers - 2):
        mods += [nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1)]
    mods += [nn.ReLU(), nn.Conv2d(8, 3, 3, padding=1)]
    body = nn.Sequential(*mods)

    class Residual(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = body

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + 0.3 * self.body(x)

    return Residual()


class NeedsMultipleOf8(nn.Module):
    """A local model that, like a U-Net without internal padding, only takes sizes divisible by 8."""

    def __init__(self) -> None:
        super().__init__()
        self.net = _conv_net(3, seed=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2] % 8 or x.shape[-1] % 8:
            raise RuntimeError(f"size {tuple(x.shape[-2:])} not divisible by 8")
        return self.net(x)


def _image(*shape: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(*shape, generator=g)


@pytest.mark.parametrize(
    ("shape", "tile", "overlap"),
    [
        ((1, 3, 75, 101), 32, 9),  # receptive field 9 == overlap; sizes not multiples of the tile
        ((1, 3, 75, 101), 40, 16),
        ((2, 3, 64, 64), 32, 12),  # tiles of two images share a batch (batch=3)
        ((1, 3, 20, 90), 32, 10),  # image smaller than the tile along one axis
        ((1, 3, 20, 25), 32, 10),  # image smaller than the tile: one tile
    ],
)
def test_tiled_equals_whole_for_receptive_field_within_overlap(shape, tile, overlap):
    model = _conv_net(layers=4)  # receptive field 9
    img = _image(*shape)
    whole = restore(model, img)
    tiled = restore(model, img, tile=tile, overlap=overlap, batch=3)
    assert tiled.shape == img.shape and tiled.dtype == torch.float32
    assert (tiled - whole).abs().max().item() < 1e-5
    # the model really changes the image, so the comparison is not vacuous
    assert (whole - img.clamp(0, 1)).abs().max().item() > 1e-2


def test_too_small_overlap_shows_seams():
    """Sensitivity check: with overlap below the receptive field, tiles differ from the whole run."""
    model = _conv_net(layers=4)
    img = _image(1, 3, 75, 101)
    diff = (restore(model, img, tile=32, overlap=2) - restore(model, img)).abs().max().item()
    assert diff > 1e-4


def test_tile_starts_cover_with_min_overlap():
    for size in (33, 64, 75, 101, 720, 1280):
        for tile, overlap in ((32, 8), (32, 31), (256, 32), (40, 0)):
            starts = tile_starts(size, tile, overlap)
            assert starts[0] == 0
            assert starts[-1] + min(tile, size) == size
            gaps = np.diff(starts)
            assert (gaps <= tile - overlap).all() and (gaps > 0).all()
    assert tile_starts(20, 32, 8) == [0]


def test_models_that_need_padding():
    model = NeedsMultipleOf8()
    img = _image(1, 3, 45, 70)
    with pytest.raises(RuntimeError, match="divisible by 8"):
        restore(model, img)
    whole = restore(model, img, pad_multiple=8)
    assert whole.shape == img.shape
    tiled = restore(model, img, tile=32, overlap=8, pad_multiple=8)
    # receptive field 7 <= overlap 8; the padded border is the image's own border in both runs
    assert (tiled - whole).abs().max().item() < 1e-5
    with pytest.raises(ValueError, match="multiple of pad_multiple"):
        restore(model, img, tile=30, overlap=8, pad_multiple=8)


def test_output_clamped_unbatched_and_mode_restored():
    class Overshoot(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.drop = nn.Dropout(0.5)  # eval mode must switch it off

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.drop(3 * x - 1)

    model = Overshoot().train()
    img = _image(3, 30, 40)
    out = restore(model, img, tile=16, overlap=4)
    assert out.shape == (3, 30, 40)
    assert out.min().item() == 0.0 and out.max().item() == 1.0
    assert torch.allclose(out, (3 * img - 1).clamp(0, 1), atol=1e-6)  # no dropout: eval mode
    assert model.training  # the caller's mode is restored


def test_autocast_on_cpu_warns_and_runs_float32():
    model = _conv_net(layers=2)
    img = _image(1, 3, 24, 24)
    with pytest.warns(UserWarning, match="CUDA only"):
        out = restore(model, img, autocast=True)
    assert torch.equal(out, restore(model, img))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"tile": 32, "overlap": 32}, r"overlap must be an int in \[0, tile\)"),
        ({"tile": 0}, "tile must be None or an int >= 1"),
        ({"batch": 0}, "batch must be an int >= 1"),
        ({"autocast": "fp8"}, "autocast must be"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        restore(_conv_net(layers=2), _image(1, 3, 40, 40), **kwargs)


def test_bad_image():
    with pytest.raises(ValueError, match="float tensor"):
        restore(_conv_net(layers=2), torch.zeros(1, 3, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match="float tensor"):
        restore(_conv_net(layers=2), torch.zeros(8, 8))


def test_to_uint8_rounds_like_gopro_protocol():
    values = torch.tensor([0.0, 1.0, 1.3, -0.2, 100.4 / 255, 100.6 / 255, 0.2])
    img = values.view(1, 1, 7).expand(3, 1, 7)
    out = to_uint8(img)
    assert out.dtype == np.uint8 and out.shape == (1, 7, 3)  # HxWxC
    assert out[0, :, 0].tolist() == [0, 255, 255, 0, 100, 101, 51]
    rng = np.random.default_rng(0)
    arr = rng.random((2, 3, 5, 6), dtype=np.float32)
    expected = np.round(np.moveaxis(arr, 1, -1) * np.float32(255)).astype(np.uint8)
    assert np.array_equal(to_uint8(torch.from_numpy(arr)), expected)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_tiled_and_bf16_autocast():
    model = _conv_net(layers=4)
    img = _image(2, 3, 96, 130)
    whole = restore(model, img, device="cuda")
    assert whole.device == img.device  # returned where the input lives
    tiled = restore(model, img, tile=48, overlap=10, device="cuda")
    assert (tiled - whole).abs().max().item() < 1e-5
    bf16 = restore(model, img, tile=48, overlap=10, device="cuda", autocast=True)
    assert (bf16 - whole).abs().max().item() < 3e-2
