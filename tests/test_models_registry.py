"""Every model in the registry, through the public entry point, at demo size."""

from __future__ import annotations

import pytest
import torch

from restorebench.models import MODELS, VARIANTS, build_model
from restorebench.models.summary import summarize


@pytest.mark.parametrize("name", sorted(MODELS))
def test_any_size_in_is_the_same_size_out(name):
    torch.manual_seed(0)
    model = build_model(name, variant="demo").eval()
    x = torch.rand(1, 3, 37, 53)
    with torch.no_grad():
        y = model(x)
    assert y.shape == x.shape
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("name", sorted(MODELS))
def test_parameter_groups_partition_the_model(name):
    model = build_model(name, variant="demo")
    groups = model.parameter_groups()
    assert set(groups) == {"backbone", "decoder", "head"}
    ids = [id(p) for items in groups.values() for _, p in items]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    layer_ids = model.layer_ids()
    assert {n for n, _ in groups["backbone"]} <= set(layer_ids)  # others only where the recipe says (vit_adapter)
    assert all(0 <= i <= model.num_layers for i in layer_ids.values())


def test_unknown_names_are_errors_with_the_choices():
    with pytest.raises(ValueError, match=r"unknown model 'nafnett'.*did you mean 'nafnet'"):
        build_model("nafnett")
    with pytest.raises(ValueError, match=r"unknown variant 'huge'.*sidd-width32"):
        build_model("nafnet", variant="huge")


def test_summary_counts_match_published_sizes():
    # published (docs/ARCHITECTURE.md): NAFNet width32 SIDD 29.16M params, 16.1 GMACs at 256x256
    row = summarize("nafnet", "sidd-width32")
    assert row["params"] == pytest.approx(29.16e6, rel=5e-3)
    assert row["gmacs"] == pytest.approx(16.1, rel=1e-2)
    assert sum(row["groups"].values()) == row["params"]
    assert set(VARIANTS) == set(MODELS)


# Where the attention runs (SDPA, so flash attention runs where the model allows it). A model whose
# `attention` is "token" must call scaled_dot_product_attention, so PyTorch picks a flash / memory-efficient
# kernel on CUDA: Swin (transformers' "sdpa" implementation), BEiT (timm's fused_attn), IPT
# (nn.MultiheadAttention without weights). NAFNet has none; Restormer's is across channels ("channel": a
# (C/heads)^2 map over H*W-long vectors, no SDPA shape).


@pytest.mark.parametrize("name", sorted(MODELS))
def test_attention_goes_through_sdpa_where_the_model_has_a_token_attention(name, monkeypatch):
    import torch.nn.functional as F

    calls = []
    real = F.scaled_dot_product_attention

    def counting(*args, **kwargs):
        calls.append(args[0].shape)
        return real(*args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", counting)
    torch.manual_seed(0)
    model = build_model(name, variant="demo").train()
    model(torch.rand(2, 3, 48, 48)).mean().backward()  # batch 2: UperNet's pooling BatchNorm trains on 1x1
    assert model.attention in ("token", "channel", None)
    assert bool(calls) == (model.attention == "token"), (name, model.attention, len(calls))
    assert model.is_transformer == (model.attention is not None)


# ------------------------------------------------------------------ what each model answers about itself


def test_every_model_is_a_restorer_and_config_takes_its_names_from_the_registry():
    import subprocess
    import sys

    from restorebench.config import MODEL_NAMES
    from restorebench.models.restorer import Restorer

    assert MODEL_NAMES == tuple(MODELS)
    for name in MODELS:
        assert isinstance(build_model(name, variant="demo"), Restorer), name
    # the names come without loading a model: config (every CLI call, the Snakefile) imports no torch
    code = "import sys, restorebench.config; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


@pytest.mark.parametrize("name", sorted(MODELS))
def test_decoder_features_are_modules_that_run_in_forward(name):
    torch.manual_seed(0)
    model = build_model(name, variant="demo").eval()
    features = model.decoder_features()
    assert features, "DCPT needs at least one hook point"
    modules = dict(model.named_modules())
    ran = []
    for qualified, module in features:
        assert modules.get(qualified) is module, f"{qualified} is not the name of that module in the model"
        module.register_forward_hook(lambda m, i, o, q=qualified: ran.append(q))
    with torch.no_grad():
        model(torch.rand(2, 3, 48, 48))
    assert set(ran) == {q for q, _ in features}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_start_at_identity_makes_any_weights_return_the_input(name):
    """Every demo variant has an input skip: after start_at_identity_, the model returns its input exactly,
    whatever its other weights (all moved off their init first, zero-initialised heads included)."""
    torch.manual_seed(0)
    model = build_model(name, variant="demo").eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x = torch.rand(2, 3, 40, 56, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert (model(x) - x).abs().max() > 1e-3  # not the identity before
        model.start_at_identity_()
        torch.testing.assert_close(model(x), x, rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [("ipt", {"variant": "paper", "n_feats": 8, "num_heads": 1, "num_layers": 1, "patch_size": 12}),
     ("restormer", {"variant": "demo", "inp_channels": 6, "dual_pixel_task": True})],
)
def test_start_at_identity_leaves_a_model_without_an_input_skip_alone(name, kwargs):
    """The official IPT (no image_residual) and the dual-pixel Restormer (6 channels in, no input skip)
    cannot start at the identity: start_at_identity_ changes nothing rather than zeroing the output."""
    model = build_model(name, **kwargs)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.start_at_identity_()
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("task", ["denoise", "deblur"])
def test_adapt_pretrained_round_trips_a_state_of_the_cell_model_itself(project_root, name, task):
    """A state saved from the very model a cell finetunes maps onto itself, with the context finetuning
    passes (the task, its pretrain.ipt.heads entry, the pretraining run's record)."""
    from restorebench.config import load_config
    from restorebench.train.cells import cell_model

    cfg = load_config(project_root / "params.yaml")
    torch.manual_seed(0)
    net = cell_model(cfg, name, task)
    state = net.state_dict()
    head = cfg.pretrain.ipt.heads.get(task)
    metas = [{}, {"steps": 10}]
    if name == "ipt":  # IPT pretraining's record names the state's tasks: here the cell's own one task
        metas.append({"task_names": list(net.tasks), "scales": list(net.scales)})
    for meta in metas:
        out = net.adapt_pretrained(state, task=task, head=head, meta=meta)
        assert set(out) == set(state), meta
        assert all(torch.equal(out[k], v) for k, v in state.items()), meta
        net.load_state_dict(out)  # strictly


def test_ipt_adapt_pretrained_keeps_the_named_task_of_a_multi_task_state():
    """The multi-task case the round trip cannot show: task `noise30` of a 3-task state becomes task 0."""
    from restorebench.models import FINETUNE_KWARGS

    tiny = {"variant": "demo", "n_feats": 8}
    torch.manual_seed(1)
    pre = build_model("ipt", tasks=("sr2", "noise30", "rain"), scales=(2, 1, 1), num_queries=3, **tiny)
    kwargs = FINETUNE_KWARGS["ipt"]("denoise", head="noise30")
    assert kwargs == {"tasks": ("noise30",), "scales": (1,), "num_queries": 1}
    net = build_model("ipt", **tiny, **kwargs)
    state = pre.state_dict()
    meta = {"task_names": list(pre.tasks), "scales": list(pre.scales)}
    out = net.adapt_pretrained(state, task="denoise", head="noise30", meta=meta)
    net.load_state_dict(out)
    assert torch.equal(out["body.query_embed.weight"], state["body.query_embed.weight"][1:2])
    assert torch.equal(out["tail.0.1.weight"], state["tail.1.1.weight"])
    with pytest.raises(ValueError, match=r"pretrain.ipt.heads.denoise: 'sr2' is an SR task"):
        net.adapt_pretrained(state, task="denoise", head="sr2", meta=meta)
    assert FINETUNE_KWARGS["nafnet"]("denoise", head="noise30") == {}  # the default: the variant's own


def test_a_model_that_names_no_decoder_features_says_so():
    from restorebench.errors import RestorebenchError
    from restorebench.models.restorer import Restorer

    with pytest.raises(RestorebenchError, match=r"Restorer\).*names no decoder features.*override"):
        Restorer().decoder_features()
