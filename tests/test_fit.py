"""Micro-batches with gradient accumulation, activation checkpointing, and the choice between them."""

from __future__ import annotations

import copy

import pytest
import torch

from restorebench.estimate import GIB, StepCost, choose_micro_batch
from restorebench.models import build_model
from restorebench.train.loop import LoopConfig, train


def _batches(batch: int, micro: int, steps: int = 2):
    """Float64 batches of `batch` images per step, yielded as batch // micro micro-batches (the same images)."""
    g = torch.Generator().manual_seed(0)
    data = [(torch.rand(batch, 3, 16, 16, generator=g, dtype=torch.float64),
             torch.rand(batch, 3, 16, 16, generator=g, dtype=torch.float64)) for _ in range(steps)]  # fmt: skip

    def batches(start: int):
        for lq, gt in data[start:]:
            for i in range(0, batch, micro):
                yield lq[i : i + micro], gt[i : i + micro]

    return batches


def _l1_float64(forward, batch, device):
    lq, gt = batch
    return (forward(lq) - gt).abs().mean(), {}


@pytest.mark.parametrize("accumulate", [4])
def test_k_micro_batches_give_the_update_of_one_batch(tmp_path, accumulate):
    """NAFNet (no batch statistics), float64 on the CPU: 2 AdamW steps of a global batch of 8 as one batch
    and as `accumulate` micro-batches move every weight by the same amount (relative 1e-6)."""
    torch.manual_seed(0)
    start = build_model("nafnet", variant="demo").double()
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in start.modules())
    moved = []
    for k in (1, accumulate):
        net = copy.deepcopy(start)
        cfg = LoopConfig(steps=2, lr=1e-3, accumulate=k, grad_clip=0.5, checkpoint_every=100, log_every=100)
        train(net, _batches(8, 8 // k), cfg, run_dir=tmp_path / f"k{k}", objective=_l1_float64, progress=False)
        moved.append(torch.cat([(p - q).flatten() for p, q in zip(net.parameters(), start.parameters(), strict=True)]))
    whole, split = moved
    assert whole.abs().max() > 1e-5  # the weights did move
    assert torch.linalg.vector_norm(split - whole) <= 1e-6 * torch.linalg.vector_norm(whole)


def test_activation_checkpointing_keeps_gradients_and_names():
    """ViT-Adapter's BEiT blocks recomputed in backward: the same gradients (float64), the same parameter
    names and state-dict keys, and an EMA-style deep copy runs its own blocks."""
    torch.manual_seed(0)
    net = build_model("vit_adapter", variant="demo").double().train()
    torch.nn.init.normal_(net.head.out.weight, std=0.1)  # the head starts at zero: gradients would stop there
    x = torch.rand(2, 3, 64, 64, dtype=torch.float64)

    def grads(model):
        model.zero_grad(set_to_none=True)
        torch.manual_seed(1)  # drop path, if any, draws the same masks
        model(x).abs().mean().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    names, keys = [n for n, _ in net.named_parameters()], list(net.state_dict())
    ref = grads(net)
    assert net.set_activation_checkpointing(True)
    assert len(net.checkpoint_blocks()) == len(net.backbone.blocks)
    got = grads(net)
    assert [n for n, _ in net.named_parameters()] == names and list(net.state_dict()) == keys
    assert ref.keys() == got.keys()
    for n in ref:
        torch.testing.assert_close(got[n], ref[n], rtol=1e-9, atol=1e-12)
    shadow = copy.deepcopy(net)
    with torch.no_grad():
        for p in shadow.parameters():
            p.mul_(0.5)
    assert shadow.checkpoint_blocks()[0].forward.__self__ is shadow.checkpoint_blocks()[0]
    assert not torch.equal(shadow(x), net(x))  # the copy's blocks use the copy's weights
    net.set_activation_checkpointing(False)
    assert "forward" not in net.checkpoint_blocks()[0].__dict__
    assert not build_model("nafnet", variant="demo").set_activation_checkpointing(True)  # no blocks: unchanged


def _cost(per_image_gib: float, *, params: int = 10_000_000, bn: bool = False) -> StepCost:
    return StepCost(params=params, trainable=params, fixed_bytes=0, per_image_bytes=int(per_image_gib * GIB),
                    transient_bytes=0, flops_per_image=1e12, amp=True, checkpointing=False,
                    batch_statistics=bn)  # fmt: skip


def test_the_fewest_micro_batches_that_fit_are_chosen():
    states = 10_000_000 * 16  # weights, gradients, AdamW moments
    plain, ckpt = _cost(2.0), _cost(0.5)
    whole = choose_micro_batch([(16, plain, None)], states + 40 * GIB, batch_statistics=False)
    assert (whole.micro_batch, whole.accumulate, whole.checkpointing, whole.fits) == (16, 1, False, True)
    split = choose_micro_batch([(16, plain, ckpt)], states + 10 * GIB, batch_statistics=False)
    assert (split.micro_batch, split.accumulate, split.checkpointing) == (4, 4, False)  # 4 x 2 GiB fits, 8 x 2 not
    assert split.gpu_bytes == states + 4 * 2 * GIB
    # with batch statistics, checkpointing wins when it needs fewer micro-batches (8 x 0.5 GiB fits)
    bn = choose_micro_batch([(16, _cost(2.0, bn=True), _cost(0.5, bn=True))], states + 10 * GIB, batch_statistics=True)
    assert (bn.micro_batch, bn.accumulate, bn.checkpointing) == (16, 1, True)
    # not even one image without checkpointing: checkpointing, whatever the model
    tight = choose_micro_batch([(16, plain, ckpt)], states + 1.5 * GIB, batch_statistics=False)
    assert (tight.micro_batch, tight.checkpointing, tight.fits) == (2, True, True)
    # nothing fits: the finest split, flagged
    none = choose_micro_batch([(16, plain, ckpt)], states + 0.1 * GIB, batch_statistics=False)
    assert (none.micro_batch, none.accumulate, none.fits) == (1, 16, False)


def test_progressive_stages_share_one_accumulation():
    """Restormer-like stages (64 x 128^2 ... 8 x 384^2): one accumulation divides every stage's batch and
    fits the stage that needs the most."""
    states = 10_000_000 * 16
    stages = [(64, _cost(0.25), None), (16, _cost(1.0), None), (8, _cost(3.0), None)]
    plan = choose_micro_batch(stages, states + 13 * GIB, batch_statistics=False)
    assert plan.accumulate == 2  # 8/2 x 3 GiB = 12 fits; 64/2 x 0.25 = 8; 16/2 x 1 = 8
    assert (plan.batch, plan.micro_batch) == (8, 4)


def test_a_cpu_run_keeps_the_params_accumulation(project_root, monkeypatch):
    from restorebench.config import load_config
    from restorebench.train.finetune import _memory_record
    from restorebench.train.fit import fit_to_device

    monkeypatch.chdir(project_root)
    cfg = load_config("params.yaml", [])
    net = build_model("nafnet", variant="demo")
    assert fit_to_device(cfg, net, "nafnet", "denoise", "full", device=torch.device("cpu")) is None
    assert _memory_record(None, 2, 8) == {"batch": 8, "micro_batch": 4, "accumulate": 2, "checkpointing": False,
                                          "source": "config"}  # fmt: skip


@pytest.mark.gpu
def test_on_cuda_the_run_fits_its_batch_and_the_probe_leaves_no_trace(project_root, monkeypatch, tmp_path):
    from restorebench.config import load_config
    from restorebench.train.fit import fit_to_device

    monkeypatch.chdir(project_root)
    monkeypatch.setenv("RESTOREBENCH_CACHE", str(tmp_path))
    cfg = load_config("params.yaml", [])
    net = build_model("vit_adapter", variant="demo")
    before = {k: v.clone() for k, v in net.state_dict().items()}
    plan = fit_to_device(cfg, net, "vit_adapter", "denoise", "full", device=torch.device("cuda"))
    assert plan is not None and plan.fits and plan.micro_batch * plan.accumulate == plan.batch == cfg.train.batch
    assert all(torch.equal(v.cpu(), before[k]) for k, v in net.state_dict().items())
    assert all(p.grad is None for p in net.parameters())
