"""Restoration pretraining: IPT's contrastive loss and task routing, DCPT's hooks, classifier and k-NN,
pretrained inits loaded into finetuning, and one tiny pretraining run of each method that resumes."""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file, save_file

from restorebench.config import load_config
from restorebench.models import MODELS, build_model
from restorebench.pretrain.dcpt import (
    KNN_SEEDS,
    DCPTTrainee,
    DegradationClassifier,
    FeatureHooks,
    dcpt_objective,
    knn_accuracy,
    knn_features,
    knn_split_accuracy,
    pooled,
    pretrain_dcpt,
    probe_channels,
)
from restorebench.pretrain.ipt import (
    IPTTrainee,
    ipt_objective,
    pretrain_ipt,
    select_tokens,
    supervised_contrastive,
)
from restorebench.train.finetune import cell_model, init_model, load_pretrained_init, pretrain_dir
from restorebench.train.loop import LoopConfig, train
from tests.helpers.cells import RANDOM_SEG_INIT

CPU = torch.device("cpu")
IPT_TASKS = ("sr2", "noise30", "rain")  # a small multi-task IPT: one SR task, two same-size ones
IPT_SCALES = (2, 1, 1)


@pytest.fixture()
def cfg(project_root):
    # the demo profile; its segmentation models from a random init (no segpretrain checkpoints here)
    return load_config(project_root / "params.yaml", list(RANDOM_SEG_INIT))


def tiny_ipt(seed: int = 0, **kw):
    torch.manual_seed(seed)
    args = dict(variant="demo", tasks=IPT_TASKS, scales=IPT_SCALES, num_queries=len(IPT_TASKS))
    return build_model("ipt", **{**args, **kw})


def save_state(model: torch.nn.Module, path: Path) -> dict[str, torch.Tensor]:
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path))
    return state


# ------------------------------------------------------------------------------- contrastive loss


def reference_supcon(features: torch.Tensor, labels: list[int], temperature: float) -> float:
    """IPT's eq. 4, written out with Python loops in float64: cosine similarities, the denominator over the
    patches of other images only, anchors without a positive (or without a negative) skipped."""
    z = [[float(v) for v in row] for row in features.double()]
    z = [[v / math.sqrt(sum(u * u for u in row)) for v in row] for row in z]
    n = len(z)

    def sim(i, j):
        return sum(a * b for a, b in zip(z[i], z[j], strict=True)) / temperature

    per_anchor = []
    for i in range(n):
        positives = [p for p in range(n) if p != i and labels[p] == labels[i]]
        if not positives:
            continue
        negatives = [a for a in range(n) if labels[a] != labels[i]]
        if not negatives:
            continue
        denominator = sum(math.exp(sim(i, a)) for a in negatives)
        per_anchor.append(
            -sum(math.log(math.exp(sim(i, p)) / denominator) for p in positives) / len(positives)
        )
    return sum(per_anchor) / len(per_anchor)


def test_supervised_contrastive_matches_a_float64_loop():
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(12, 5, generator=g)  # 3 images x 4 tokens
    labels = [0] * 4 + [1] * 4 + [2] * 4
    for t in (0.07, 0.5, 2.0):
        got = float(supervised_contrastive(feats, torch.tensor(labels), t))
        assert got == pytest.approx(reference_supcon(feats, labels, t), rel=1e-5), t
    # cosine similarity: the scale of each feature does not matter
    scaled = feats * torch.linspace(0.1, 10.0, 12)[:, None]
    assert float(supervised_contrastive(scaled, torch.tensor(labels), 0.5)) == pytest.approx(
        float(supervised_contrastive(feats, torch.tensor(labels), 0.5)), rel=1e-5
    )


def test_supervised_contrastive_skips_anchors_without_positives():
    g = torch.Generator().manual_seed(1)
    feats = torch.randn(7, 4, generator=g)
    labels = [0, 0, 1, 2, 2, 2, 3]  # anchors 2 and 6 have no positive: left out of the mean
    got = float(supervised_contrastive(feats, torch.tensor(labels), 0.2))
    assert got == pytest.approx(reference_supcon(feats, labels, 0.2), rel=1e-5)
    # no anchor has a positive: zero, and still differentiable (a batch of one image per task is legal)
    lone = torch.randn(4, 4, generator=g, requires_grad=True)
    loss = supervised_contrastive(lone, torch.arange(4), 0.07)
    loss.backward()
    assert float(loss.detach()) == 0.0 and lone.grad is not None and not lone.grad.any()


def test_temperature_sharpens_the_contrast():
    """Tokens clustered by image: a lower temperature makes the clusters' loss smaller; random features
    with those labels give a higher loss than clustered ones at every temperature."""
    g = torch.Generator().manual_seed(2)
    centres = torch.randn(3, 8, generator=g)
    clustered = centres.repeat_interleave(4, 0) + 0.1 * torch.randn(12, 8, generator=g)
    shuffled = torch.randn(12, 8, generator=g)
    labels = torch.arange(3).repeat_interleave(4)
    losses = [float(supervised_contrastive(clustered, labels, t)) for t in (1.0, 0.3, 0.07)]
    assert losses[0] > losses[1] > losses[2], losses
    # no same-image term in the denominator: well-separated clusters drive the loss below zero
    assert losses[2] < 0
    for t in (1.0, 0.3, 0.07):
        assert float(supervised_contrastive(shuffled, labels, t)) > float(
            supervised_contrastive(clustered, labels, t)
        )


@pytest.mark.parametrize(("seq", "k", "expected"), [(10, 4, [0, 3, 6, 9]), (16, 4, [0, 5, 10, 15]),
                                                    (17, 5, [0, 4, 8, 12, 16]), (9, 1, [0])])  # fmt: skip
def test_select_tokens_picks_evenly_spaced_tokens(seq, k, expected):
    tokens = torch.arange(2 * seq * 3, dtype=torch.float32).view(2, seq, 3)
    out = select_tokens(tokens, k)
    assert out.shape == (2, k, 3)
    assert torch.equal(out, tokens[:, expected])


def test_select_tokens_keeps_all_when_k_is_zero_or_too_large():
    tokens = torch.randn(2, 6, 3)
    for k in (0, 6, 50):
        assert torch.equal(select_tokens(tokens, k), tokens)


# ------------------------------------------------------------------------------- IPT task routing


@pytest.mark.parametrize("task", range(len(IPT_TASKS)))
def test_ipt_step_trains_only_its_task_head_tail_and_query(task):
    ipt = tiny_ipt()
    trainee = IPTTrainee(ipt)
    p, s = ipt.patch_size, IPT_SCALES[task]
    g = torch.Generator().manual_seed(task)
    lq = torch.rand(2, 3, p, p, generator=g)
    gt = torch.rand(2, 3, s * p, s * p, generator=g)
    loss, scalars = ipt_objective(0.1, 0.07, 0, amp=False)(trainee, (lq, gt, torch.tensor(task)), CPU)
    scalars = {k: float(v) for k, v in scalars.items()}  # detached tensors: the loop reads them in batches
    loss.backward()

    grads = dict(ipt.named_parameters())
    for name, param in grads.items():
        if name.startswith(("head.", "tail.")):
            owner = int(name.split(".")[1])
            if owner == task:
                assert param.grad is not None and param.grad.abs().sum() > 0, name
            else:  # another task's head or tail: untouched
                assert param.grad is None or not param.grad.any(), name
        elif name == "body.query_embed.weight":
            rows = param.grad.abs().sum(1)
            assert rows[task] > 0 and not rows[[u for u in range(len(IPT_TASKS)) if u != task]].any()
        else:
            assert name.startswith("body."), name
            assert param.grad is not None and param.grad.abs().sum() > 0, name

    # the logged terms are L1(out, gt) and the contrastive loss over each image's decoder tokens
    with torch.no_grad():
        out, tokens = trainee(lq, task)
    assert out.shape == gt.shape and tokens.shape[:2] == (2, (p // 3) ** 2)
    labels = [0] * tokens.shape[1] + [1] * tokens.shape[1]
    assert scalars["l1"] == pytest.approx(float((out - gt).abs().mean()), rel=1e-5)
    assert scalars["contrastive"] == pytest.approx(reference_supcon(tokens.reshape(-1, tokens.shape[2]), labels, 0.07),
                                                   rel=1e-4)  # fmt: skip
    assert float(loss.detach()) == pytest.approx(scalars["l1"] + 0.1 * scalars["contrastive"], rel=1e-5)


# ------------------------------------------------------------------------------- DCPT hooks


def demo_model(name: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(name, variant="demo")


@pytest.mark.parametrize("name", list(MODELS))
def test_hooks_give_decoder_maps_and_classifier_logits(name):
    model = demo_model(name)
    hooks = FeatureHooks(model)
    channels = probe_channels(model, hooks, 48)  # a batch of one, with the model in training mode
    assert model.training
    x = torch.rand(2, 3, 48, 48, generator=torch.Generator().manual_seed(0))
    model(x)
    maps = hooks.take()
    assert maps and all(m.ndim == 4 for m in maps)
    if name == "ipt":  # 24x24 tiles of both images, tile-major
        assert all(m.shape[0] % 2 == 0 and m.shape[0] > 2 for m in maps)
    else:
        assert all(m.shape[0] == 2 for m in maps)
    assert [m.shape[1] for m in maps] == channels  # the same maps whatever the batch size
    feats = pooled(maps, 2)
    assert [tuple(f.shape) for f in feats] == [(2, c) for c in channels]
    assert hooks.take() == []  # take() empties
    logits = DegradationClassifier(channels, 5, width=16)(maps, 2)
    assert logits.shape == (2, 5) and torch.isfinite(logits).all()
    hooks.remove()
    model(x)
    assert hooks.take() == []


def test_ipt_pooled_features_average_all_tiles_of_each_image():
    """IPT's body runs on chunks of tiles whose number depends on the batch; each image's pooled feature
    must still be the mean over all its tiles, as computed tile by tile without the hooks' bookkeeping."""
    model = demo_model("ipt").eval()
    hooks = FeatureHooks(model)
    x = torch.rand(2, 3, 48, 48, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        model(x)
        batch2 = pooled(hooks.take(), 2)
        model(x[1:])
        alone = pooled(hooks.take(), 1)
    assert len(batch2) == len(alone) == len(model.body.decoder.layers)
    torch.testing.assert_close(batch2[0][1:], alone[0], rtol=1e-4, atol=1e-5)

    seen = []
    handle = model.body.decoder.layers[0].register_forward_hook(lambda m, i, o: seen.append(o))
    p = model.patch_size
    starts = model._starts(48, p, p // 4)
    with torch.no_grad():
        for i in range(2):
            tiles = torch.cat([x[i : i + 1, :, a : a + p, b : b + p] for a in starts for b in starts])
            model.forward_patch(tiles * model.rgb_range, model.default_task)
    handle.remove()
    expected = torch.stack([o.mean(dim=(0, 1)) for o in seen])  # (seq, tiles, D): mean over both
    torch.testing.assert_close(batch2[0], expected, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------- classifier and k-NN


def degraded_set(seed: int, n: int, size: int = 32) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """n random smooth images in [0.3, 0.9], each with one of 3 degradations: 0 gaussian noise (sigma 0.3),
    1 blur (5x5 box), 2 darkening (x0.3). Returns (degraded, clean, labels)."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, size // 2, size // 2, generator=g)
    clean = 0.3 + 0.6 * F.interpolate(low, size=size, mode="bilinear", align_corners=False)
    labels = torch.randint(3, (n,), generator=g)
    noisy = (clean + 0.3 * torch.randn(clean.shape, generator=g)).clamp(0, 1)
    blurred = F.avg_pool2d(F.pad(clean, (2, 2, 2, 2), mode="reflect"), 5, stride=1)
    dark = 0.3 * clean
    pick = labels[:, None, None, None]
    return torch.where(pick == 0, noisy, torch.where(pick == 1, blurred, dark)), clean, labels


def test_dcpt_objective_is_clean_reconstruction_plus_classification(tmp_path):
    model = demo_model("nafnet")
    hooks = FeatureHooks(model)
    torch.manual_seed(0)
    classifier = DegradationClassifier(probe_channels(model, hooks, 32), 3, width=16)
    trainee = DCPTTrainee(model, hooks, classifier)
    lq, gt, labels = degraded_set(0, 6)
    loss, scalars = dcpt_objective(0.5, amp=False)(trainee, (lq, gt, labels), CPU)
    assert all(isinstance(v, torch.Tensor) and not v.requires_grad for v in scalars.values())
    scalars = {k: float(v) for k, v in scalars.items()}

    seen = []  # the decoder outputs of the degraded images, collected without FeatureHooks
    handles = [d.register_forward_hook(lambda m, i, o: seen.append(o)) for d in model.decoders]
    with torch.no_grad():
        pixel = float((model(gt) - gt).abs().mean())  # the model fed the clean image
        seen.clear()
        model(lq)
        logits = classifier(list(seen), 6)
    for h in handles:
        h.remove()
    classify = float(F.cross_entropy(logits, labels))
    assert scalars["pixel"] == pytest.approx(pixel, rel=1e-5)
    assert scalars["classify"] == pytest.approx(classify, rel=1e-5)
    assert scalars["accuracy"] == pytest.approx(float((logits.argmax(1) == labels).float().mean()))
    assert float(loss.detach()) == pytest.approx(pixel + 0.5 * classify, rel=1e-5)

    # through the training loop: the model and the classifier both learn
    before = {k: v.clone() for k, v in trainee.state_dict().items()}

    def batches(start):
        step = start
        while True:
            yield degraded_set(1000 + step, 6, 16)
            step += 1

    cfg = LoopConfig(steps=3, lr=1e-3, checkpoint_every=100, log_every=1, amp=False)
    _, result = train(trainee, batches, cfg, run_dir=tmp_path, objective=dcpt_objective(1.0, amp=False),
                      progress=False)  # fmt: skip
    assert [row["step"] for row in result.history] == [1, 2, 3]
    assert {"pixel", "classify", "accuracy"} <= set(result.history[-1])
    after = trainee.state_dict()
    assert not torch.equal(after["extra.fc.weight"], before["extra.fc.weight"])
    assert not torch.equal(
        after["model.decoders.0.0.conv1.weight"], before["model.decoders.0.0.conv1.weight"]
    )


def test_classifier_learns_three_degradations_from_random_nafnet_features():
    """DCPT's premise: a randomly initialised restoration network's decoder features already tell
    degradations apart; the classifier learns them well above chance (1/3), and so does a k-NN."""
    model = demo_model("nafnet").eval()
    hooks = FeatureHooks(model)
    lq, _, labels = degraded_set(1, 240)
    held, _, held_labels = degraded_set(7, 90)  # held out: another seed
    with torch.no_grad():
        model(lq)
        maps = hooks.take()
        model(held)
        held_maps = hooks.take()
    torch.manual_seed(0)
    # the released design, kept small for the CPU: maps projected to 8 channels, one bottleneck per scale
    classifier = DegradationClassifier([m.shape[1] for m in maps], 3, width=8, blocks=1)
    optimizer = torch.optim.AdamW(classifier.parameters(), lr=5e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(80):
        idx = torch.randint(len(lq), (24,), generator=g)
        optimizer.zero_grad()
        F.cross_entropy(classifier([m[idx] for m in maps], 24), labels[idx]).backward()
        optimizer.step()
    with torch.no_grad():
        accuracy = float((classifier(held_maps, len(held)).argmax(1) == held_labels).float().mean())
    assert accuracy >= 0.8, accuracy

    ref_f, ref_y = knn_features(model, hooks, [(x, None, int(c)) for x, c in zip(lq, labels, strict=True)])
    q_f, q_y = knn_features(model, hooks, [(x, None, int(c)) for x, c in zip(held, held_labels, strict=True)])
    # the released features: the last decoder map (before the restoration head), flattened per image
    with torch.no_grad():
        model(held[:2])
        last = hooks.take()[-1]
    torch.testing.assert_close(q_f[:2], last.reshape(2, -1))
    assert knn_accuracy(ref_f, ref_y, q_f, q_y, 5) >= 0.6
    assert knn_split_accuracy(torch.cat([ref_f, q_f]), torch.cat([ref_y, q_y])) >= 0.6


def test_classifier_fuses_the_scales_in_sequence_finest_first():
    """DCPT's released classifier: state = down_i(blocks_i(state + softmax(w)_i * map_i)) from the finest
    map to the coarsest, then the last stage, a spatial mean and the linear layer."""
    torch.manual_seed(0)
    channels = [32, 16, 8]  # coarse to fine, as the hooks give them (sizes 4, 8, 16)
    maps = [torch.randn(2, c, s, s) for c, s in zip(channels, (4, 8, 16), strict=True)]
    clf = DegradationClassifier(channels, 3).eval()
    assert [stage[0].conv1.in_channels for stage in clf.stages] == [8, 16, 32]  # finest first
    with torch.no_grad():
        w = torch.softmax(clf.mixing_weights, 0)
        state = 0.0
        for i, m in enumerate(maps[::-1]):
            state = F.relu(clf.down[i](clf.stages[i](state + w[i] * m)))
            if i < 2:
                assert state.shape[-1] == m.shape[-1]  # max-pooled to the next (coarser) map's size below
                state = F.max_pool2d(state, 2)
        state = F.max_pool2d(state, 2)
        expected = clf.fc(clf.last_stage(state).mean((2, 3)))
        torch.testing.assert_close(clf(maps, 2), expected)
        swapped = clf([maps[0], maps[1], maps[2] * 0], 2)  # the finest map matters
    assert not torch.allclose(swapped, expected)


def brute_force_knn(train_f, train_y, query_f, query_y, k) -> float:
    """scikit-learn's KNeighborsClassifier defaults: k nearest by Euclidean distance, majority vote, a tie
    between classes to the smallest label."""
    correct = 0
    for q, y in zip(query_f.tolist(), query_y.tolist(), strict=True):
        dists = sorted(
            (math.sqrt(sum((a - b) ** 2 for a, b in zip(q, f, strict=True))), c)
            for f, c in zip(train_f.tolist(), train_y.tolist(), strict=True)
        )[: min(k, len(train_y))]
        votes: dict[int, int] = {}
        for _, c in dists:
            votes[c] = votes.get(c, 0) + 1
        best = min(votes, key=lambda c: (-votes[c], c))
        correct += best == y
    return correct / len(query_y)


def test_knn_accuracy_matches_brute_force():
    g = torch.Generator().manual_seed(4)
    centres = torch.randn(3, 6, generator=g)
    train_y = torch.arange(3).repeat(5)
    query_y = torch.tensor([0, 1, 2, 2, 1, 0, 1, 2])
    train_f = centres[train_y] + 1.2 * torch.randn(15, 6, generator=g)
    query_f = centres[query_y] + 1.2 * torch.randn(8, 6, generator=g)
    values = set()
    for k in (1, 2, 3, 4, 5, 40):  # 40: more than the reference set, clamped
        got = knn_accuracy(train_f, train_y, query_f, query_y, k)
        assert got == pytest.approx(brute_force_knn(train_f, train_y, query_f, query_y, k)), k
        values.add(got)
    assert len(values) > 1  # the example is not trivially separable


def test_knn_tie_goes_to_the_smallest_label():
    train_f = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    train_y = torch.tensor([1, 0])
    query_f = torch.tensor([[0.9, 0.1]])  # nearer to label 1, but k=2 votes 1-1: label 0 wins (sklearn)
    assert knn_accuracy(train_f, train_y, query_f, torch.tensor([0]), 2) == 1.0
    assert knn_accuracy(train_f, train_y, query_f, torch.tensor([1]), 1) == 1.0


def test_knn_split_follows_the_released_split():
    """knn.py: train_test_split(test_size=0.33, random_state=seed) for the seeds [0, 223, 929, 1234,
    10086]: a RandomState permutation, the first ceil(0.33 n) items tested; the mean accuracy."""
    g = torch.Generator().manual_seed(5)
    labels = torch.arange(3).repeat(10)
    feats = torch.randn(3, 4, generator=g)[labels] + 0.9 * torch.randn(30, 4, generator=g)
    expected = []
    for seed in KNN_SEEDS:
        perm = np.random.RandomState(seed).permutation(30)
        test, train = perm[:10], perm[10:]  # ceil(0.33 * 30) = 10
        expected.append(brute_force_knn(feats[train], labels[train], feats[test], labels[test], 5))
    assert knn_split_accuracy(feats, labels) == pytest.approx(sum(expected) / 5)


# ------------------------------------------------------------------------------- pretrained inits


@pytest.mark.parametrize("name", ["nafnet", "restormer", "swin_upernet"])
def test_dcpt_init_loads_every_tensor(cfg, tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    path = Path("runs/pretrain/dcpt/denoise") / name / "model.safetensors"
    assert pretrain_dir("dcpt", name, "denoise") / "model.safetensors" == path
    with pytest.raises(FileNotFoundError, match=re.escape(f"--method dcpt --task denoise --model {name}")):
        load_pretrained_init(init_model(cfg, name, "denoise")[0], cfg, name, "denoise", "dcpt")
    pretrained = demo_model(name, seed=1)
    with torch.no_grad():  # so that every float tensor, buffers included, differs from a fresh init
        for value in pretrained.state_dict().values():
            if value.is_floating_point():
                value.add_(0.5)
    saved = save_state(pretrained, path)

    torch.manual_seed(2)
    net, _ = init_model(cfg, name, "denoise")
    for key, value in net.state_dict().items():
        assert not value.is_floating_point() or not torch.equal(value, saved[key]), key
    init = load_pretrained_init(net, cfg, name, "denoise", "dcpt")
    state = net.state_dict()
    assert set(state) == set(saved)
    for key, value in state.items():
        assert torch.equal(value, saved[key]), key
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    assert init == f"dcpt:{path} (sha256 {digest})"


def write_ipt_pretrain(pretrained: torch.nn.Module) -> dict[str, torch.Tensor]:
    run = pretrain_dir("ipt", "ipt")
    saved = save_state(pretrained, run / "model.safetensors")
    (run / "pretrain.json").write_text(
        json.dumps({"task_names": list(IPT_TASKS), "scales": list(IPT_SCALES)})
    )
    return saved


def test_ipt_init_loads_body_and_the_named_head(cfg, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    saved = write_ipt_pretrain(tiny_ipt(seed=1))
    assert cfg.pretrain.ipt.heads["denoise"] == "noise30"
    t = IPT_TASKS.index("noise30")

    torch.manual_seed(2)
    net = cell_model(cfg, "ipt", "denoise")
    assert net.tasks == ("noise30",) and net.scales == (1,)
    load_pretrained_init(net, cfg, "ipt", "denoise", "ipt")
    state = net.state_dict()
    body = [k for k in state if k.startswith("body.")]
    assert "body.position_encoding.position_ids" in body and len(body) > 20
    for key, value in state.items():
        if key == "body.query_embed.weight":
            expected = saved[key][t : t + 1]  # the noise30 query becomes the only one
        elif key.startswith(("head.0.", "tail.0.")):
            part, _, rest = key.split(".", 2)
            expected = saved[f"{part}.{t}.{rest}"]
        else:
            assert key.startswith("body.") or key.split(".")[0] in ("sub_mean", "add_mean"), key
            expected = saved[key]
        assert torch.equal(value, expected), key


def test_ipt_init_without_a_head_keeps_the_new_head_and_tail(cfg, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    saved = write_ipt_pretrain(tiny_ipt(seed=1))
    assert cfg.pretrain.ipt.heads["deblur"] is None

    torch.manual_seed(2)
    net = cell_model(cfg, "ipt", "deblur")
    before = {k: v.clone() for k, v in net.state_dict().items()}
    load_pretrained_init(net, cfg, "ipt", "deblur", "ipt")
    for key, value in net.state_dict().items():
        if key.startswith(("head.", "tail.")) or key == "body.query_embed.weight":
            assert torch.equal(value, before[key]), key  # a task IPT never saw: its own init
        else:
            assert torch.equal(value, saved[key]), key


def test_ipt_init_errors_name_the_problem(cfg, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = pretrain_dir("ipt", "ipt") / "model.safetensors"
    write_ipt_pretrain(tiny_ipt(seed=1, n_feats=8))  # not the demo variant the cells build
    with pytest.raises(ValueError, match=re.escape(f"{path} does not fit ipt (variant demo)")):
        load_pretrained_init(cell_model(cfg, "ipt", "denoise"), cfg, "ipt", "denoise", "ipt")
    with pytest.raises(ValueError, match="shape mismatches"):
        load_pretrained_init(cell_model(cfg, "ipt", "deblur"), cfg, "ipt", "deblur", "ipt")

    write_ipt_pretrain(tiny_ipt(seed=1))
    cfg.pretrain.ipt.heads["denoise"] = "sr2"
    with pytest.raises(ValueError, match=r"pretrain.ipt.heads.denoise: 'sr2' is an SR task"):
        load_pretrained_init(cell_model(cfg, "ipt", "denoise"), cfg, "ipt", "denoise", "ipt")
    cfg.pretrain.ipt.heads["denoise"] = "noise50"
    with pytest.raises(ValueError, match=re.escape("'noise50' is not a pretrained IPT task; tasks: ['sr2',")):
        load_pretrained_init(cell_model(cfg, "ipt", "denoise"), cfg, "ipt", "denoise", "ipt")


# ------------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def degrade_root(tmp_path_factory, project_root) -> Path:
    """A degrade store of 6 smooth 96x96 images (the demo's degrade patch) with the demo's tasks, at
    data/store/imagenet/train."""
    root = tmp_path_factory.mktemp("data")
    cfg = load_config(project_root / "params.yaml")
    rng = np.random.default_rng(0)
    images = []
    yy, xx = np.mgrid[0:96, 0:96]
    for i in range(6):
        base = np.stack([np.sin(xx / (5 + i) + c) * np.cos(yy / (4 + i) - c) for c in range(3)], -1)
        img = np.clip(127 + 100 * base + rng.normal(0, 10, (96, 96, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(root / f"{i}.png")
        images.append((f"im{i}", root / f"{i}.png"))
    from restorebench.degrade.stage import degrade_store

    degrade_store(images, root / "store" / "imagenet" / "train", tasks=cfg.degrade.tasks, patch=cfg.degrade.patch,
                  patches_per_image=1, seed=cfg.seed, progress=False)  # fmt: skip
    return root


def tiny_run_config(project_root: Path, root: Path):
    p = "profiles.demo.pretrain"
    return load_config(project_root / "params.yaml", [
        f"profiles.demo.data.root={root}",
        f"{p}.ipt.steps=4", f"{p}.ipt.batch=4", f"{p}.ipt.checkpoint_every=2", f"{p}.ipt.log_every=1",
        f"{p}.dcpt.steps=4", f"{p}.dcpt.batch=5", f"{p}.dcpt.patch=24", f"{p}.dcpt.checkpoint_every=2",
        f"{p}.dcpt.log_every=2", f"{p}.dcpt.knn_k=3",
    ])  # fmt: skip


def run_outputs(run: Path) -> dict:
    return {
        "model": hashlib.sha256((run / "model.safetensors").read_bytes()).hexdigest(),
        "history": json.loads((run / "history.json").read_text()),
        "after": json.loads((run / "pretrain.json").read_text())["after"],
    }


def test_ipt_pretraining_end_to_end_then_resume(degrade_root, project_root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = tiny_run_config(project_root, degrade_root)
    run = pretrain_dir("ipt", "ipt")
    summary = pretrain_ipt(cfg, run, progress=False)
    names = list(cfg.pretrain.ipt.tasks)
    assert summary["steps"] == 4 and summary["resumed_from"] == 0
    written = json.loads((run / "pretrain.json").read_text())
    assert written["task_names"] == names and written["scales"] == [2, 3, 4, 1, 1, 1]
    psnr = {f"val/psnr_{n}" for n in names}
    assert psnr | {"val/psnr_mean"} <= set(written["after"])
    assert written["after"]["val/psnr_mean"] == pytest.approx(np.mean([written["after"][k] for k in psnr]))
    assert all(5.0 < written["after"][k] < 60.0 for k in psnr)
    metrics = json.loads(Path("metrics/pretrain/ipt/ipt.json").read_text())
    assert metrics["val_psnr_mean"] == written["after"]["val/psnr_mean"]
    first = run_outputs(run)
    assert [row["step"] for row in first["history"]] == [1, 2, 3, 4]
    assert {"l1", "contrastive"} <= set(first["history"][0])
    state = load_file(str(run / "model.safetensors"))
    assert set(state) == set(build_model("ipt", variant="demo", tasks=tuple(names), scales=(2, 3, 4, 1, 1, 1),
                                         num_queries=6).state_dict())  # fmt: skip

    again = pretrain_ipt(cfg, run, progress=False)  # all steps done: nothing to train, history kept
    assert again["resumed_from"] == 4 and again["last_loss"] == summary["last_loss"]
    assert run_outputs(run) == first
    # the finetuning cells start from it
    load_pretrained_init(cell_model(cfg, "ipt", "denoise"), cfg, "ipt", "denoise", "ipt")


def test_dcpt_pretraining_end_to_end_then_resume(degrade_root, project_root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = tiny_run_config(project_root, degrade_root)
    run = pretrain_dir("dcpt", "nafnet", "denoise")
    summary = pretrain_dcpt(cfg, "nafnet", "denoise", run, progress=False)
    classes = len(cfg.pretrain.dcpt.degradations)
    assert summary["steps"] == 4 and summary["before"]["chance"] == pytest.approx(1 / classes)
    written = json.loads((run / "pretrain.json").read_text())
    after = written["after"]
    assert 0.0 <= after["val/classifier_accuracy"] <= 1.0 and 0.0 <= after["val/knn_accuracy"] <= 1.0
    assert written["hooks"] == [f"decoders.{i}" for i in range(4)] and written["channels"] == [64, 32, 16, 8]
    metrics = json.loads(Path("metrics/pretrain/dcpt/denoise/nafnet.json").read_text())
    assert set(metrics) == {"knn_accuracy_init", "chance", "val_classifier_accuracy", "val_knn_accuracy"}
    assert 0.0 <= metrics["knn_accuracy_init"] <= 1.0
    # the saved model is NAFNet alone (the classifier stays behind) and loads into the cell
    assert set(load_file(str(run / "model.safetensors"))) == set(
        init_model(cfg, "nafnet", "denoise")[0].state_dict()
    )
    load_pretrained_init(init_model(cfg, "nafnet", "denoise")[0], cfg, "nafnet", "denoise", "dcpt")
    first = run_outputs(run)
    assert [row["step"] for row in first["history"]] == [2, 4]

    again = pretrain_dcpt(cfg, "nafnet", "denoise", run, progress=False)
    assert again["resumed_from"] == 4 and again["before"] == summary["before"]
    assert run_outputs(run) == first


def test_dcpt_pretraining_of_tiled_ipt(degrade_root, project_root, tmp_path, monkeypatch):
    """IPT tiles the 48x48 crops into 24x24 patches: the hooked maps must not depend on the batch size."""
    monkeypatch.chdir(tmp_path)
    cfg = load_config(project_root / "params.yaml", [f"profiles.demo.data.root={degrade_root}",
                                                      "profiles.demo.pretrain.dcpt.steps=2",
                                                      "profiles.demo.pretrain.dcpt.batch=5",
                                                      "profiles.demo.pretrain.dcpt.patch=48"])
    assert cfg.pretrain.dcpt.patch > build_model("ipt", variant="demo").patch_size  # so the body tiles
    summary = pretrain_dcpt(cfg, "ipt", "denoise", pretrain_dir("dcpt", "ipt", "denoise"), progress=False)
    assert summary["channels"] == [144] and summary["hooks"] == ["body.decoder.layers.0"]
    assert 0.0 <= summary["after"]["val/knn_accuracy"] <= 1.0


NINE_TYPES = {"defocus_blur": [{"name": "defocus_blur"}], "jpeg": [{"name": "jpeg"}],
              "gaussian_blur": [{"name": "gaussian_blur"}], "camera_noise": [{"name": "camera_noise"}]}


def test_dcpt_nine_type_option_from_params_comment(project_root, tmp_path, monkeypatch):
    """The extended set params.yaml documents (DCPT's ten types, as far as the degradation library goes):
    four more degrade tasks and nine classes run end to end, with chance 1/9."""
    import yaml

    from restorebench.degrade.stage import degrade_store

    monkeypatch.chdir(tmp_path)
    base = load_config(project_root / "params.yaml")
    tasks = {**base.degrade.tasks, **NINE_TYPES}
    types = [*base.pretrain.dcpt.degradations, *NINE_TYPES]
    assert len(types) == 9 and all(t in tasks for t in types)
    rng = np.random.default_rng(1)
    images = []
    for i in range(4):
        path = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 255, (96, 96, 3), dtype=np.uint8)).save(path)
        images.append((f"im{i}", path))
    degrade_store(images, tmp_path / "store" / "imagenet" / "train", tasks=tasks, patch=base.degrade.patch,
                  patches_per_image=1, seed=0, progress=False)  # fmt: skip
    p = "profiles.demo.pretrain.dcpt"
    cfg = load_config(project_root / "params.yaml", [
        f"profiles.demo.data.root={tmp_path}", f"{p}.degradations={yaml.safe_dump(types, default_flow_style=True)}",
        f"{p}.steps=2", f"{p}.batch=9", f"{p}.patch=24", f"{p}.knn_k=3",
        # the classes must be degrade tasks (checked at load), as the params.yaml comment sets both
        *(f"profiles.demo.degrade.tasks.{k}={yaml.safe_dump(v, default_flow_style=True)}" for k, v in NINE_TYPES.items()),
    ])  # fmt: skip
    summary = pretrain_dcpt(cfg, "nafnet", "denoise", pretrain_dir("dcpt", "nafnet", "denoise"), progress=False)
    assert summary["degradations"] == types
    assert summary["before"]["chance"] == pytest.approx(1 / 9)
    assert 0.0 <= summary["after"]["val/classifier_accuracy"] <= 1.0
