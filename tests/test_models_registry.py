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
    assert {n for n, _ in groups["backbone"]} == set(layer_ids)
    assert all(0 <= i <= model.num_layers for i in layer_ids.values())


def test_unknown_names_are_errors_with_the_choices():
    with pytest.raises(ValueError, match=r"unknown model 'nafnett'.*did you mean 'nafnet'"):
        build_model("nafnett")
    with pytest.raises(ValueError, match=r"unknown variant 'huge'.*sidd-width32"):
        build_model("nafnet", variant="huge")


def test_summary_counts_match_published_sizes():
    # DESIGN.md: NAFNet width32 SIDD 29.16M params, 16.1 GMACs at 256x256
    row = summarize("nafnet", "sidd-width32")
    assert row["params"] == pytest.approx(29.16e6, rel=5e-3)
    assert row["gmacs"] == pytest.approx(16.1, rel=1e-2)
    assert sum(row["groups"].values()) == row["params"]
    assert set(VARIANTS) == set(MODELS)


# Where the attention runs (issue 8: "SDPA/flash attention where the model allows"). Swin (transformers'
# "sdpa" implementation), BEiT (timm's fused_attn) and IPT (nn.MultiheadAttention without weights) call
# scaled_dot_product_attention, so PyTorch picks a flash / memory-efficient kernel on CUDA. NAFNet has no
# attention; Restormer's is across channels (a (C/heads)^2 map over H*W-long vectors: no SDPA shape).
SDPA_USERS = {"swin_upernet", "swin_mask2former", "vit_adapter", "ipt"}


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
    assert bool(calls) == (name in SDPA_USERS), (name, len(calls))
