"""Tiled inference equals whole-image inference for local models; clamping, rounding and errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from restorebench.infer import float32_precision, precision, restore, tile_starts, to_uint8


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


class GlobalContext(nn.Module):
    """Not local: adds each input's own channel means, so tiles see different context than the whole image."""

    def __init__(self) -> None:
        super().__init__()
        self.net = _conv_net(2, seed=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x) + x.mean(dim=(-2, -1), keepdim=True)


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


@pytest.mark.parametrize("model", [_conv_net(layers=4), GlobalContext()], ids=["local", "global"])
def test_tile_batch_does_not_change_the_output(model):
    """One tile per pass, two passes, or every tile of both images in one pass: the same output, also for a
    model whose tiled result differs from the whole-image one (so this is not the locality guarantee)."""
    img = _image(2, 3, 75, 101)
    tiles = 2 * len(tile_starts(75, 32, 9)) * len(tile_starts(101, 32, 9))
    one = restore(model, img, tile=32, overlap=9, batch=1)
    for batch in (tiles // 2 + 1, tiles):
        assert torch.allclose(restore(model, img, tile=32, overlap=9, batch=batch), one, rtol=0, atol=1e-6), batch
    if isinstance(model, GlobalContext):
        assert (one - restore(model, img)).abs().max().item() > 1e-3


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
    assert torch.equal(restore(model, img, tf32=True), out)  # TF32 is CUDA-only too


def test_precision_names_what_runs():
    assert precision("cpu", autocast="bf16", tf32=True) == "fp32"  # neither applies off CUDA
    assert precision("cuda") == "fp32"
    assert precision("cuda", tf32=True) == "tf32"
    assert precision("cuda", autocast="bf16", tf32=True) == "bf16"
    assert precision(torch.device("cuda", 0), autocast=True) == "bf16"
    assert precision("cuda", autocast="fp16") == "fp16"
    with pytest.raises(ValueError, match="autocast must be"):
        precision("cpu", autocast="fp8")


def test_float32_precision_sets_then_restores_the_cuda_flags():
    """The flags are plain globals, settable without a GPU: check the context manager flips and restores them."""
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    saved = matmul.allow_tf32, cudnn.allow_tf32
    try:
        for before in ((False, True), (True, False)):
            for tf32 in (True, False):
                matmul.allow_tf32, cudnn.allow_tf32 = before
                with float32_precision(tf32, torch.device("cuda")):
                    assert (matmul.allow_tf32, cudnn.allow_tf32) == (tf32, tf32)
                assert (matmul.allow_tf32, cudnn.allow_tf32) == before
                with float32_precision(tf32, torch.device("cpu")):
                    assert (matmul.allow_tf32, cudnn.allow_tf32) == before  # a no-op off CUDA
        with pytest.raises(RuntimeError, match="boom"), float32_precision(True, torch.device("cuda")):
            raise RuntimeError("boom")
        assert (matmul.allow_tf32, cudnn.allow_tf32) == (True, False)  # restored on error too
    finally:
        matmul.allow_tf32, cudnn.allow_tf32 = saved


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
    flags = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    tf32 = restore(model, img, tile=48, overlap=10, device="cuda", tf32=True)
    assert (tf32 - whole).abs().max().item() < 1e-2
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == flags


def test_one_quantiser_rounds_half_to_even_and_the_store_half_up():
    from restorebench.images import to_uint8 as quantise

    halves = np.array([0.5, 1.5, 2.5, 254.5], np.float64) / 255  # exact .5 after * 255 in float64
    assert quantise(halves).tolist() == [0, 2, 2, 254]  # the protocol: half to even (BasicSR, skimage)
    assert quantise(halves, half_up=True).tolist() == [1, 2, 3, 255]  # the degradation store's bytes
    assert quantise(np.array([-0.3, 1.7])).tolist() == [0, 255]
    with pytest.raises(ValueError, match="float image"):
        quantise(np.zeros(3, np.uint8))
