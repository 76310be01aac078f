"""NAFNet, Restormer and IPT: official state-dict layout, strict loading, sizes, shapes, gradients, groups.

Tiny variants on CPU; paper variants are built on the meta device (no memory, no compute) to check keys
and parameter counts. Reference key names and shapes below are written out by hand from the official
repositories (megvii-research/NAFNet NAFNet_arch.py, swz30/Restormer restormer_arch.py,
huawei-noah/Pretrained-IPT model/ipt.py + model/common.py), independently of the code under test.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from restorebench.models import build_model, ipt, nafnet, restormer
from restorebench.models.weights import WeightsError

MODULES = {"nafnet": nafnet, "restormer": restormer, "ipt": ipt}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models on a shared CPU: one intra-op thread avoids spin-waiting (about 3x faster here)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _meta(module, **kw):
    with torch.device("meta"):
        return module.build(**kw)


def _randomise(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give zero-initialised residual scales (NAFNet beta/gamma) values, so outputs depend on every weight."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("beta", "gamma")):
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return model


def _demo(name: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return _randomise(build_model(name, variant="demo"), seed).eval()


# --------------------------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("name", list(MODULES))
def test_output_shape_equals_input_at_odd_size(name: str) -> None:
    model = _demo(name)
    x = torch.rand(2, 3, 37, 53)
    with torch.no_grad():
        y = model(x)
    assert y.shape == x.shape
    assert torch.isfinite(y).all()


def test_ipt_sr_task_scales_output_and_tasks_resolve() -> None:
    model = _demo("ipt")
    x = torch.rand(1, 3, 21, 27)
    with torch.no_grad():
        assert model(x, task="sr2").shape == (1, 3, 42, 54)
        assert torch.equal(model(x, task="noise30"), model(x, task=1))
        assert torch.equal(model(x), model(x, task="noise30"))  # default task is the first scale-1 task
    with pytest.raises(ValueError, match="sr3"):
        model(x, task="sr3")


@pytest.mark.parametrize("shape", [(37, 53), (12, 12), (5, 7), (24, 13)])
def test_ipt_tiling_covers_every_pixel_once_on_average(shape: tuple[int, int], monkeypatch) -> None:
    """With an identity (scale 1) or nearest-upsampling (scale 2) tile model, tiling must reproduce it."""
    model = ipt.build(variant="demo")
    monkeypatch.setattr(
        model,
        "forward_patch",
        lambda t, task: F.interpolate(t, scale_factor=model.scales[task], mode="nearest"),
    )
    x = torch.rand(2, 3, *shape)
    torch.testing.assert_close(model(x, task="noise30"), x)
    torch.testing.assert_close(model(x, task="sr2"), F.interpolate(x, scale_factor=2, mode="nearest"))


def test_padding_matches_the_official_scheme() -> None:
    """NAFNet zero-pads bottom/right to a multiple of 16 (official check_image_size); Restormer reflect-pads
    to a multiple of 8 (official test scripts); both crop back."""
    x = torch.rand(1, 3, 37, 53)
    with torch.no_grad():
        m = _demo("nafnet")
        torch.testing.assert_close(m(x), m(F.pad(x, (0, 11, 0, 11)))[:, :, :37, :53])
        m = _demo("restormer")
        torch.testing.assert_close(m(x), m(F.pad(x, (0, 3, 0, 3), mode="reflect"))[:, :, :37, :53])


# --------------------------------------------------------------------------------------------- official layout


NAFNET_SIDD32_KEYS = {
    "intro.weight": (32, 3, 3, 3),
    "intro.bias": (32,),
    "encoders.0.0.beta": (1, 32, 1, 1),
    "encoders.0.0.gamma": (1, 32, 1, 1),
    "encoders.0.0.conv2.weight": (64, 1, 3, 3),
    "encoders.0.0.sca.1.weight": (32, 32, 1, 1),
    "encoders.0.0.norm1.weight": (32,),
    "encoders.3.7.conv1.weight": (512, 256, 1, 1),
    "encoders.3.7.conv5.weight": (256, 256, 1, 1),
    "downs.0.weight": (64, 32, 2, 2),
    "downs.3.bias": (512,),
    "middle_blks.11.conv3.weight": (512, 512, 1, 1),
    "ups.0.0.weight": (1024, 512, 1, 1),
    "ups.3.0.weight": (128, 64, 1, 1),
    "decoders.3.1.norm2.bias": (32,),
    "ending.weight": (3, 32, 3, 3),
    "ending.bias": (3,),
}
# 36 blocks x 18 tensors (beta, gamma, conv1-5, sca.1, norm1-2; weights+biases) + intro 2 + ending 2
# + downs 8 + ups 4 (bias-free 1x1 convs)
NAFNET_SIDD32_NUM_KEYS = 36 * 18 + 2 + 2 + 8 + 4

RESTORMER_KEYS = {
    "patch_embed.proj.weight": (48, 3, 3, 3),
    "encoder_level1.0.norm1.body.weight": (48,),
    "encoder_level1.0.attn.temperature": (1, 1, 1),
    "encoder_level1.0.attn.qkv.weight": (144, 48, 1, 1),
    "encoder_level1.0.attn.qkv_dwconv.weight": (144, 1, 3, 3),
    "encoder_level1.0.ffn.project_in.weight": (254, 48, 1, 1),  # int(48 * 2.66) = 127, doubled
    "encoder_level1.0.ffn.project_out.weight": (48, 127, 1, 1),
    "down1_2.body.0.weight": (24, 48, 3, 3),
    "latent.7.attn.temperature": (8, 1, 1),
    "latent.0.ffn.dwconv.weight": (2042, 1, 3, 3),
    "up4_3.body.0.weight": (768, 384, 3, 3),
    "reduce_chan_level3.weight": (192, 384, 1, 1),
    "decoder_level1.3.attn.qkv.weight": (288, 96, 1, 1),
    "refinement.3.ffn.project_out.weight": (96, 255, 1, 1),
    "output.weight": (3, 96, 3, 3),
}

IPT_PAPER_KEYS = {
    "sub_mean.weight": (3, 3, 1, 1),
    "sub_mean.bias": (3,),
    "add_mean.bias": (3,),
    "head.0.0.weight": (64, 3, 3, 3),
    "head.0.1.body.0.weight": (64, 64, 5, 5),
    "head.5.2.body.2.bias": (64,),
    "body.linear_encoding.weight": (576, 576),
    "body.mlp_head.0.weight": (2304, 576),
    "body.mlp_head.3.weight": (576, 2304),
    "body.query_embed.weight": (6, 576 * 256),
    "body.encoder.layers.0.self_attn.in_proj_weight": (1728, 576),
    "body.encoder.layers.11.self_attn.out_proj.weight": (576, 576),
    "body.encoder.layers.11.linear1.weight": (2304, 576),
    "body.decoder.layers.11.multihead_attn.in_proj_weight": (1728, 576),
    "body.decoder.layers.0.norm3.weight": (576,),
    "body.position_encoding.pe.weight": (256, 576),
    "body.position_encoding.position_ids": (1, 256),
    "tail.0.0.0.weight": (256, 64, 3, 3),  # x2: conv to 4n + PixelShuffle(2)
    "tail.1.0.0.weight": (576, 64, 3, 3),  # x3: conv to 9n + PixelShuffle(3)
    "tail.2.0.2.weight": (256, 64, 3, 3),  # x4: two x2 stages
    "tail.3.1.weight": (3, 64, 3, 3),  # x1: no upsampler, only the output conv
}


def _check_keys(sd: dict, expected: dict) -> None:
    for k, shape in expected.items():
        assert k in sd, f"official key {k} missing"
        assert tuple(sd[k].shape) == shape, f"{k}: {tuple(sd[k].shape)} != {shape}"


def test_nafnet_official_keys() -> None:
    sd = _meta(nafnet, variant="sidd-width32").state_dict()
    _check_keys(sd, NAFNET_SIDD32_KEYS)
    assert len(sd) == NAFNET_SIDD32_NUM_KEYS
    # The official constructor keywords with no variant build exactly that architecture.
    kw = dict(
        img_channel=3, width=32, middle_blk_num=12, enc_blk_nums=[2, 2, 4, 8], dec_blk_nums=[2, 2, 2, 2]
    )
    assert {k: v.shape for k, v in _meta(nafnet, **kw).state_dict().items()} == {
        k: v.shape for k, v in sd.items()
    }


def test_restormer_official_keys() -> None:
    denoise = _meta(restormer, variant="denoise").state_dict()
    _check_keys(denoise, RESTORMER_KEYS)
    assert "encoder_level1.0.norm1.body.bias" not in denoise  # BiasFree
    assert not any(k.endswith("qkv.bias") for k in denoise)  # bias=False
    deblur = _meta(restormer, variant="deblur").state_dict()
    _check_keys(deblur, RESTORMER_KEYS)
    assert deblur["latent.0.norm2.body.bias"].shape == (384,)  # WithBias
    dual = _meta(restormer, variant="deblur", inp_channels=6, dual_pixel_task=True).state_dict()
    assert dual["skip_conv.weight"].shape == (96, 48, 1, 1) and dual["patch_embed.proj.weight"].shape == (
        48,
        6,
        3,
        3,
    )


def test_ipt_official_keys() -> None:
    sd = _meta(ipt, variant="paper").state_dict()
    _check_keys(sd, IPT_PAPER_KEYS)
    assert not any(k.endswith("in_proj_bias") or k.endswith("out_proj.bias") for k in sd)  # bias=False
    assert not any(k.startswith("tail.3.0.") for k in sd)  # scale 1: empty upsampler
    assert {k.split(".")[0] for k in sd} == {"sub_mean", "add_mean", "head", "body", "tail"}


# --------------------------------------------------------------------------------------------- sizes


@pytest.mark.parametrize(
    "module,variant,published",
    [
        (nafnet, "sidd-width32", 29.16e6),
        (nafnet, "sidd-width64", 115.98e6),
        (nafnet, "gopro-width32", 17.11e6),
        (nafnet, "gopro-width64", 67.89e6),
        (restormer, "denoise", 26.13e6),
        (restormer, "deblur", 26.13e6),
    ],
)
def test_paper_parameter_counts(module, variant: str, published: float) -> None:
    n = sum(p.numel() for p in _meta(module, variant=variant).parameters())
    assert abs(n / published - 1) < 0.005, f"{variant}: {n} vs {published}"


def test_ipt_parameter_count_one_task() -> None:
    """DESIGN: 115.31M for one task = the body with one query + one scale-1 head and tail (+ MeanShift)."""
    m = _meta(ipt, variant="paper", scales=[1], tasks=["noise30"], num_queries=1)
    n = sum(p.numel() for p in m.parameters()) + sum(b.numel() for k, b in m.named_buffers() if "mean" in k)
    assert abs(n / ipt.PUBLISHED_PARAMS_ONE_TASK - 1) < 0.005, n


# --------------------------------------------------------------------------------------------- loading


def _save_variants(model: torch.nn.Module, tmp_path) -> list:
    sd = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    pth = tmp_path / "official.pth"
    torch.save({"params": sd}, pth)
    wrapped = tmp_path / "ddp.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in sd.items()}}, wrapped)
    save_file(sd, str(tmp_path / "model.safetensors"))
    return [pth, wrapped, tmp_path]  # tmp_path: a snapshot folder holding model.safetensors


@pytest.mark.parametrize("name", list(MODULES))
def test_strict_round_trip_gives_identical_outputs(name: str, tmp_path) -> None:
    model = _demo(name, seed=1)
    x = torch.rand(1, 3, 19, 21)
    with torch.no_grad():
        ref = model(x)
    for path in _save_variants(model, tmp_path):
        torch.manual_seed(123)  # a different random init, overwritten by the checkpoint
        loaded = build_model(name, variant="demo", pretrained=str(path)).eval()
        with torch.no_grad():
            assert torch.equal(loaded(x), ref), path


@pytest.mark.parametrize("name", list(MODULES))
def test_bad_checkpoints_fail_naming_the_key(name: str, tmp_path) -> None:
    sd = {k: v.clone().contiguous() for k, v in build_model(name, variant="demo").state_dict().items()}
    victim = [k for k in sd if k.endswith("weight")][3]

    wrong = dict(sd, **{victim: torch.zeros(7, 5)})
    torch.save({"params": wrong}, tmp_path / "wrong.pth")
    with pytest.raises(WeightsError, match="wrong shape.*" + victim.replace(".", r"\.")):
        build_model(name, variant="demo", pretrained=str(tmp_path / "wrong.pth"))

    missing = {k: v for k, v in sd.items() if k != victim}
    save_file(missing, str(tmp_path / "missing.safetensors"))
    with pytest.raises(WeightsError, match="missing: " + victim.replace(".", r"\.")):
        build_model(name, variant="demo", pretrained=str(tmp_path / "missing.safetensors"))

    extra = dict(sd, **{"extra.weight": torch.zeros(1)})
    torch.save(extra, tmp_path / "extra.pt")
    with pytest.raises(WeightsError, match=r"unexpected: extra\.weight"):
        build_model(name, variant="demo", pretrained=str(tmp_path / "extra.pt"))


def test_snapshot_folder_config_gives_the_architecture(tmp_path) -> None:
    model = _demo("restormer")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(
        '{"model": "restormer", "variant": "demo", "LayerNorm_type": "BiasFree"}'
    )
    with pytest.raises(WeightsError, match=r"unexpected: .*norm1\.body\.bias"):
        build_model("restormer", pretrained=str(tmp_path))  # config says BiasFree, weights are WithBias
    (tmp_path / "config.json").write_text('{"model": "restormer", "variant": "demo", "strategy": "full"}')
    loaded = build_model("restormer", pretrained=str(tmp_path)).eval()
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_ipt_checkpoint_without_position_ids_buffer_loads(tmp_path) -> None:
    """Official IPT checkpoints lack the position_ids buffer: it is rebuilt (0 .. seq-1), every other tensor
    comes from the file, and the loaded model restores as the saved one does."""
    model = _demo("ipt")
    full = model.state_dict()
    dropped = [k for k in full if k.endswith("position_ids")]
    assert dropped == ["body.position_encoding.position_ids"]
    sd = {k: v.contiguous() for k, v in full.items() if k not in dropped}
    save_file(sd, str(tmp_path / "m.safetensors"))
    loaded = ipt.build(variant="demo", pretrained=str(tmp_path / "m.safetensors")).eval()
    state = loaded.state_dict()
    assert all(torch.equal(state[k], v) for k, v in sd.items())
    seq = state["body.position_encoding.position_ids"]
    assert torch.equal(seq, torch.arange(seq.shape[1]).unsqueeze(0)) and torch.equal(seq, full[dropped[0]])
    x = torch.rand(1, 3, 12, 12)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_unknown_keyword_fails_with_allowed_list() -> None:
    with pytest.raises(TypeError, match="enc_blk_nums"):
        nafnet.build(variant="demo", enc_blocks=[1])
    with pytest.raises(ValueError, match="sidd-width32"):
        nafnet.build(variant="nope")


# --------------------------------------------------------------------------------------------- training


@pytest.mark.parametrize("name", list(MODULES))
def test_every_trainable_parameter_gets_a_gradient(name: str) -> None:
    model = _demo(name).train()
    x = torch.rand(2, 3, 24, 24)
    if name == "ipt":
        x = torch.rand(2, 3, 12, 12)  # one tile; every task once so every head/tail is used
        loss = sum(model(x, task=t).square().mean() for t in range(len(model.scales)))
    else:
        loss = model(x).square().mean()
    loss.backward()
    for n, p in model.named_parameters():
        assert p.grad is not None, f"{n} got no gradient"
        assert torch.isfinite(p.grad).all(), n
        assert p.grad.abs().sum() > 0, f"{n} got an all-zero gradient"


def test_ipt_task_routing_only_touches_the_chosen_head_and_tail() -> None:
    model = _demo("ipt").train()
    model(torch.rand(1, 3, 20, 16), task="noise30").mean().backward()
    for n, p in model.named_parameters():
        if n.startswith(("head.0.", "tail.0.")):
            assert p.grad is None, f"{n} (sr2) got a gradient from the noise30 task"
        elif n.startswith(("head.1.", "tail.1.", "body.")):
            assert p.grad is not None, n
    q = model.body.query_embed.weight.grad
    assert q[0].abs().sum() == 0 and q[1].abs().sum() > 0


@pytest.mark.parametrize("name", list(MODULES))
def test_parameter_groups_cover_every_parameter_once(name: str) -> None:
    for model in (_meta(MODULES[name]), build_model(name, variant="demo")):
        groups = model.parameter_groups()
        assert set(groups) == {"backbone", "decoder", "head"}
        names = [n for g in groups.values() for n, _ in g]
        assert sorted(names) == sorted(n for n, _ in model.named_parameters())
        ids = [id(p) for g in groups.values() for _, p in g]
        assert len(ids) == len(set(ids)) == len(list(model.parameters()))
        assert groups["backbone"] and groups["head"]
        layer_ids = model.layer_ids()
        assert set(layer_ids) == {n for n, _ in groups["backbone"]}
        assert set(layer_ids.values()) == set(range(model.num_layers))


def test_backbone_is_the_encoder_half() -> None:
    g = nafnet.build(variant="demo").parameter_groups()
    assert {n.split(".")[0] for n, _ in g["backbone"]} == {"intro", "encoders", "downs", "middle_blks"}
    assert {n.split(".")[0] for n, _ in g["head"]} == {"ending"}
    g = restormer.build(variant="demo").parameter_groups()
    assert {n.split(".")[0] for n, _ in g["head"]} == {"output"}
    assert "latent.0.attn.temperature" in dict(g["backbone"])
    g = ipt.build(variant="demo").parameter_groups()
    assert all(n.startswith("body.") for n, _ in g["backbone"]) and g["decoder"] == []


# --------------------------------------------------------------------------------------------- NAFNet TLC


def test_tlc_pool_is_global_pool_when_the_image_fits_the_kernel() -> None:
    x = torch.rand(2, 4, 20, 30)
    for kernel in [(20, 30), (24, 40), (384, 384)]:
        out = nafnet.LocalAvgPool2d(kernel)(x)
        torch.testing.assert_close(out, F.adaptive_avg_pool2d(x, 1))


def test_tlc_pool_is_a_local_box_mean_otherwise() -> None:
    x = torch.rand(1, 2, 20, 30)
    out = nafnet.LocalAvgPool2d((6, 8))(x)
    assert out.shape == x.shape
    ref = F.avg_pool2d(x, (6, 8), stride=1)  # (15, 23) valid windows
    torch.testing.assert_close(out[:, :, 2:17, 3:26], ref)  # centred: (20-15)//2 = 2, (30-23)//2 = 3
    torch.testing.assert_close(out[:, :, 0, 3:26], ref[:, :, 0])  # replicate border


def test_tlc_kernels_and_switching() -> None:
    gopro = _meta(nafnet, variant="gopro-width32")
    assert gopro.tlc
    pools = {lvl: b.sca[0] for b, lvl in gopro._levels}
    assert pools[0].kernel == (384, 384) and pools[4].kernel == (24, 24)  # 1.5 x 256 / 2**level
    assert not _meta(nafnet, variant="sidd-width32").tlc

    model = _demo("nafnet")
    x_small, x_big = torch.rand(1, 3, 16, 16), torch.rand(1, 3, 48, 64)
    with torch.no_grad():
        plain_small, plain_big = model(x_small), model(x_big)
        model.use_tlc(train_size=(1, 3, 16, 16))  # kernel 24 at full resolution, 24 / 2**level below
        torch.testing.assert_close(model(x_small), plain_small)  # fits every kernel: global pooling
        assert not torch.allclose(model(x_big), plain_big)  # 48x64 > 24: local statistics differ
        model.use_tlc(False)
        assert torch.equal(model(x_big), plain_big)


def test_demo_ipt_with_zeroed_tails_is_the_identity_and_bicubic_for_sr() -> None:
    """image_residual (the demo variant): with each tail's last conv zeroed (start_at_identity_), a same-size
    task returns its input, on whole images too (tiled), and an SR task returns the bicubic upsampling."""
    model = ipt.build(variant="demo").eval()
    assert model.image_residual and not ipt.build(variant="paper", num_layers=1).image_residual
    model.start_at_identity_()
    x = torch.rand(2, 3, 37, 53, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model(x, task="noise30"), x, rtol=0, atol=1e-5)
        patch = x[:, :, :24, :24]
        up = F.interpolate(patch, scale_factor=2, mode="bicubic", align_corners=False)
        torch.testing.assert_close(model(patch, task="sr2"), up, rtol=0, atol=1e-5)
        model.output_convs()[1].bias.fill_(10.0)  # a non-zero tail changes the output: the skip is additive
        assert (model(x, task="noise30") - x).abs().mean() > 0.01
