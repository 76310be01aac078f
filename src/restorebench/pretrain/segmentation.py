"""The demo's segmentation pretraining: each tiny segmentation model trained as a segmenter, its checkpoint
written in the published format, so the demo's cells finetune from a segmentation checkpoint through the
same loaders the paper profile uses (`build(pretrained=...)` of models/swin_upernet.py, swin_mask2former.py,
vit_adapter.py).

    synthetic set (seeded): (B, 3, S, S) images in [0, 1] and (B, S, S) class maps in [0, classes)
    -> ImageNet-normalised, as the restorers normalise
    -> the model with its original segmentation head and loss:
       swin_upernet      transformers' UperNetForSemanticSegmentation, per-pixel cross-entropy (its own loss)
       swin_mask2former  transformers' Mask2FormerForUniversalSegmentation, its own mask-classification loss
                         (Hungarian matching; class CE with no-object weight 0.1, mask BCE and dice on sampled
                         points, weights 2 / 5 / 5; every decoder layer's prediction supervised)
       vit_adapter       the restorer's BEiT + adapter + pixel decoder + transformer decoder with the mmdet
                         Mask2FormerHead's class embedding (classes + 1), trained with the same
                         mask-classification loss (transformers' Mask2FormerLoss, the head's weights 2 / 5 / 5)
    -> runs/segmentation/{model}/: config.json + model.safetensors (save_pretrained: the hub's snapshot
       layout, as openmmlab/upernet-swin-* and facebook/mask2former-swin-*-ade-semantic) for the Swin models;
       CHECKPOINT_FILE (mmcv 1.x save_checkpoint's layout: meta, state_dict in the released ViT-Adapter key
       names, optimizer; the meta holds the fields a training run writes, without mmcv_version and
       mmseg_version, since neither library wrote it) for vit_adapter; segmentation.json (what ran, how long,
       held-out pixel accuracy and mIoU beside chance). FIDELITY.md lists what differs from the publications.

The synthetic set: a smooth colour ramp with noise (class 0), then two to four shapes drawn over it; shape
class k (1..classes-1) has its own outline (ellipse, rectangle, triangle, in turn) and its own texture
(stripes at k's angle, random colours and phase), so a class is told apart by shape and texture together.
Every image comes from derive_rng(seed, "segmentation", split, index): the same seed, the same set.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from restorebench import io
from restorebench.config import Config
from restorebench.degrade.rng import derive_rng
from restorebench.errors import RestorebenchError
from restorebench.models import build_model
from restorebench.models.heads import IMAGENET_MEAN, IMAGENET_STD, Normalize

log = logging.getLogger(__name__)

SEGMENTATION_MODELS = ("swin_upernet", "swin_mask2former", "vit_adapter")
CHECKPOINT_FILE = "mask2former_beitv2_adapter_demo_synthetic.pth"  # vit_adapter's, named like the release's
# Mask2Former's loss weights: transformers' Mask2FormerConfig defaults (class_weight 2.0, mask_weight 5.0,
# dice_weight 5.0, no_object_weight 0.1), which are Mask2Former's (MODEL.MASK_FORMER.CLASS_WEIGHT ...) and
# ViT-Adapter's (configs/_base_/models/mask2former_beit.py loss_cls 2.0, loss_mask 5.0, loss_dice 5.0)
M2F_TRAIN_POINTS = 1024  # points sampled per mask (12544 = 112^2 in the papers, for 512-px crops)


def output_path(model: str) -> Path:
    """The folder segpretrain writes; the checkpoint `pretrained` names is checkpoint_path(model)."""
    return Path("runs/segmentation") / model


def checkpoint_path(model: str) -> Path:
    """What the demo's profiles.demo.pretrained.{model} names: the snapshot folder, or ViT-Adapter's .pth."""
    return output_path(model) / CHECKPOINT_FILE if model == "vit_adapter" else output_path(model)


# --------------------------------------------------------------------------------------- synthetic set


def synthetic_scene(rng: np.random.Generator, size: int, classes: int) -> tuple[np.ndarray, np.ndarray]:
    """One image (size, size, 3) float32 in [0, 1] and its class map (size, size) int64 (see module doc)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    c0, c1 = rng.uniform(0.15, 0.85, (2, 3)).astype(np.float32)
    theta = rng.uniform(0, 2 * math.pi)
    ramp = (np.cos(theta) * xx + np.sin(theta) * yy + 1.5) / 3.0
    image = c0 + (c1 - c0) * ramp[..., None]
    labels = np.zeros((size, size), np.int64)
    for _ in range(int(rng.integers(2, 5))):
        k = int(rng.integers(1, classes))
        cy, cx = rng.uniform(0.2, 0.8, 2)
        r = rng.uniform(0.18, 0.35)
        kind = (k - 1) % 3
        if kind == 0:  # ellipse
            a = r * rng.uniform(0.7, 1.3)
            mask = ((yy - cy) / r) ** 2 + ((xx - cx) / a) ** 2 <= 1
        elif kind == 1:  # axis-aligned rectangle
            mask = (np.abs(yy - cy) <= r * rng.uniform(0.6, 1.0)) & (np.abs(xx - cx) <= r * rng.uniform(0.6, 1.0))
        else:  # triangle, apex up: |x - cx| below a line falling from the apex
            mask = (yy >= cy - r) & (yy <= cy + r) & (np.abs(xx - cx) <= (yy - (cy - r)) / 2)
        angle = math.pi * (k - 1) / max(classes - 1, 1)
        period = 6.0 / size
        stripes = np.sin(2 * math.pi * (np.cos(angle) * xx + np.sin(angle) * yy) / period + rng.uniform(0, 2 * math.pi))
        a_col = rng.uniform(0.0, 1.0, 3).astype(np.float32)
        b_col = 1.0 - a_col  # complementary colours: stripes of full contrast in every channel
        fill = np.where(stripes[..., None] > 0, a_col, b_col)
        image = np.where(mask[..., None], fill, image)
        labels[mask] = k
    image = image + rng.normal(0, 0.02, image.shape).astype(np.float32)
    return np.clip(image, 0, 1).astype(np.float32), labels


def synthetic_batch(seed: int, split: str, start: int, count: int, size: int, classes: int) -> tuple[Tensor, Tensor]:
    """Images start..start+count-1 of `split`: (count, 3, size, size) float32 in [0, 1], (count, size, size) int64."""
    scenes = [synthetic_scene(derive_rng(seed, "segmentation", split, start + i), size, classes) for i in range(count)]
    images = torch.from_numpy(np.stack([s[0] for s in scenes])).permute(0, 3, 1, 2).contiguous()
    return images, torch.from_numpy(np.stack([s[1] for s in scenes]))


def mask_targets(labels: Tensor) -> tuple[list[Tensor], list[Tensor]]:
    """Per image, Mask2Former's targets for a class map: one binary mask (n, H, W) float per class present
    and its class (n,) int64, as Mask2FormerImageProcessor makes them for semantic segmentation."""
    masks, classes = [], []
    for lab in labels:
        present = torch.unique(lab)
        masks.append((lab[None] == present[:, None, None]).float())
        classes.append(present.long())
    return masks, classes


def semantic_map(class_logits: Tensor, mask_logits: Tensor, size: tuple[int, int]) -> Tensor:
    """Mask2Former's semantic inference (facebookresearch/Mask2Former mask_former_model.py semantic_inference:
    einsum of softmax(class)[..., :-1] and sigmoid(mask)), upsampled to `size`, argmax: (B, H, W) int64."""
    scores = torch.einsum("bqc,bqhw->bchw", class_logits.softmax(-1)[..., :-1], mask_logits.sigmoid())
    return F.interpolate(scores, size=size, mode="bilinear", align_corners=False).argmax(1)


# ------------------------------------------------------------------------------ the three segmenters


class Segmenter(nn.Module):
    """A model with its segmentation head. loss(images, labels) -> scalar; predict(images) -> (B, H, W)
    classes; save(folder, meta, optimizer) writes the published checkpoint into `folder` (meta and the
    optimizer's state go where the format has a place for them). images: (B, 3, H, W) in [0, 1]."""

    def loss(self, images: Tensor, labels: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def predict(self, images: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def trainable(self) -> list[nn.Parameter]:
        """The parameters the optimiser updates."""
        return list(self.parameters())


class UperNetSegmenter(Segmenter):
    """transformers' UperNetForSemanticSegmentation of the restorer's Swin and UperNet sizes."""

    def __init__(self, restorer: nn.Module, classes: int) -> None:
        from transformers import UperNetConfig, UperNetForSemanticSegmentation

        super().__init__()
        head = restorer.decode_head
        config = UperNetConfig(backbone_config=copy.deepcopy(restorer.backbone.config), hidden_size=head.channels,
                               pool_scales=list(head.pool_scales), use_auxiliary_head=False, num_labels=classes,
                               id2label=class_names(classes), label2id={v: k for k, v in class_names(classes).items()})  # fmt: skip
        self.net = UperNetForSemanticSegmentation(config)
        self.normalize = Normalize(IMAGENET_MEAN, IMAGENET_STD)

    def loss(self, images: Tensor, labels: Tensor) -> Tensor:
        return self.net(pixel_values=self.normalize(images), labels=labels).loss

    def predict(self, images: Tensor) -> Tensor:
        return self.net(pixel_values=self.normalize(images)).logits.argmax(1)

    def save(self, folder: Path, meta: dict, optimizer: dict) -> None:
        save_snapshot(self.net, folder)


class Mask2FormerSegmenter(Segmenter):
    """transformers' Mask2FormerForUniversalSegmentation of the restorer's Swin and Mask2Former sizes."""

    def __init__(self, restorer: nn.Module, classes: int) -> None:
        from transformers import Mask2FormerForUniversalSegmentation

        super().__init__()
        config = copy.deepcopy(restorer.m2f_config)
        config.backbone_config = copy.deepcopy(restorer.swin_config)
        config.num_labels, config.train_num_points = classes, M2F_TRAIN_POINTS
        config.id2label = class_names(classes)
        config.label2id = {v: k for k, v in config.id2label.items()}
        self.net = Mask2FormerForUniversalSegmentation(config)
        self.normalize = Normalize(IMAGENET_MEAN, IMAGENET_STD)

    def loss(self, images: Tensor, labels: Tensor) -> Tensor:
        masks, classes = mask_targets(labels)
        return self.net(pixel_values=self.normalize(images), mask_labels=masks, class_labels=classes).loss

    def predict(self, images: Tensor) -> Tensor:
        out = self.net(pixel_values=self.normalize(images))
        return semantic_map(out.class_queries_logits, out.masks_queries_logits, images.shape[-2:])

    def save(self, folder: Path, meta: dict, optimizer: dict) -> None:
        save_snapshot(self.net, folder)


class ViTAdapterSegmenter(Segmenter):
    """The vit_adapter restorer's BEiT, adapter and Mask2Former decoders with ViT-Adapter's Mask2FormerHead
    class embedding (`cls_embed`, classes + 1) and mmseg BaseDecodeHead's 1x1 `conv_seg` (in the released
    files, never called by Mask2FormerHead: kept at mmseg's normal(0, 0.01) init for the layout)."""

    def __init__(self, restorer: nn.Module, classes: int) -> None:
        from transformers.models.mask2former.modeling_mask2former import Mask2FormerLoss

        from restorebench.models.swin_mask2former import mask2former_config

        super().__init__()
        self.net = restorer
        hidden = restorer.query_decoder.transformer_module.decoder.layernorm.normalized_shape[0]
        feat = restorer.decoder.mask_projection.out_channels
        self.cls_embed = nn.Linear(hidden, classes + 1)
        self.conv_seg = nn.Conv2d(feat, classes, 1)
        nn.init.normal_(self.conv_seg.weight, 0, 0.01)
        nn.init.zeros_(self.conv_seg.bias)
        config = mask2former_config(num_labels=classes, train_num_points=M2F_TRAIN_POINTS)
        # as Mask2FormerForUniversalSegmentation weighs them (its get_loss_dict), every layer's terms alike
        self.weights = {"loss_cross_entropy": config.class_weight, "loss_mask": config.mask_weight,
                        "loss_dice": config.dice_weight}
        self.criterion = Mask2FormerLoss(config, self.weights)

    def trainable(self) -> list[nn.Parameter]:
        """What the segmentation loss reaches: not the restoration head nor its 3-way class predictor."""
        skip = ("net.head.", "net.query_decoder.class_predictor.", "conv_seg.")
        return [p for n, p in self.named_parameters() if not n.startswith(skip)]

    def _forward(self, images: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        net = self.net
        pixel = net.decoder(net.features(net.normalize(images)), return_dict=True)
        out = net.query_decoder.transformer_module(list(pixel.multi_scale_features), pixel.mask_features)
        classes = [self.cls_embed(h.transpose(0, 1)) for h in out.intermediate_hidden_states]
        return classes, list(out.masks_queries_logits)

    def loss(self, images: Tensor, labels: Tensor) -> Tensor:
        classes, masks = self._forward(images)
        targets, target_classes = mask_targets(labels)
        aux = [{"masks_queries_logits": m, "class_queries_logits": c} for m, c in zip(masks[:-1], classes[:-1], strict=True)]
        losses = self.criterion(masks[-1], classes[-1], targets, target_classes, auxiliary_predictions=aux)
        return sum(v * next(w for k, w in self.weights.items() if k in name) for name, v in losses.items())

    def predict(self, images: Tensor) -> Tensor:
        classes, masks = self._forward(images)
        return semantic_map(classes[-1], masks[-1], images.shape[-2:])

    def save(self, folder: Path, meta: dict, optimizer: dict) -> None:
        from restorebench.models.vit_adapter import to_mmseg_state

        state = to_mmseg_state(self.net)
        state.update({f"decode_head.cls_embed.{k}": v for k, v in self.cls_embed.state_dict().items()})
        state.update({f"decode_head.conv_seg.{k}": v for k, v in self.conv_seg.state_dict().items()})
        # mmcv 1.x save_checkpoint's file (mmcv/runner/checkpoint.py): meta, state_dict, optimizer
        blob = {"meta": meta, "state_dict": OrderedDict((k, v.detach().cpu()) for k, v in state.items()),
                "optimizer": optimizer}
        with io.atomic_path(folder / CHECKPOINT_FILE) as tmp:
            torch.save(blob, tmp)


def save_snapshot(net: nn.Module, folder: Path) -> None:
    """The hub snapshot layout: transformers' save_pretrained (config.json + model.safetensors), no progress bar."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        net.save_pretrained(folder)
    finally:
        if was:
            hf_logging.enable_progress_bar()
    for path in folder.iterdir():  # safetensors writes 0600; give the mode every other output has (io.py)
        os.chmod(path, 0o666 & ~io._umask())


SEGMENTERS = {"swin_upernet": UperNetSegmenter, "swin_mask2former": Mask2FormerSegmenter,
              "vit_adapter": ViTAdapterSegmenter}


def class_names(classes: int) -> dict[int, str]:
    shapes = ("ellipse", "rectangle", "triangle")
    return {0: "background", **{k: f"{shapes[(k - 1) % 3]}-{k}" for k in range(1, classes)}}


# ----------------------------------------------------------------------------------------- the stage


@torch.no_grad()
def score(seg: Segmenter, images: Tensor, labels: Tensor, classes: int, batch: int = 8) -> dict[str, float]:
    """Held-out pixel accuracy and mIoU (classes present in the labels or the prediction), beside chance: the
    share of the most frequent class (what predicting it everywhere scores) and that constant map's mIoU."""
    seg.eval()
    pred = torch.cat([seg.predict(images[i : i + batch]) for i in range(0, len(images), batch)])
    seg.train()
    counts = torch.bincount(labels.flatten(), minlength=classes).double()
    ious, const = [], []
    majority = int(counts.argmax())
    for c in range(classes):
        p, t = pred == c, labels == c
        if t.any() or p.any():
            ious.append(float((p & t).sum()) / float((p | t).sum()))
        if t.any():
            const.append(float(counts[c] / counts.sum()) if c == majority else 0.0)
    return {"pixel_accuracy": float((pred == labels).double().mean()), "miou": float(np.mean(ious)),
            "chance_accuracy": float(counts.max() / counts.sum()), "chance_miou": float(np.mean(const))}


def segmentation_stage(cfg: Config, model: str, out_dir: Path) -> dict:
    """Train `model`'s variant (the one every task of the profile finetunes) as a segmenter and write out_dir
    atomically (see the module doc). Returns segmentation.json's content."""
    if model not in SEGMENTATION_MODELS:
        raise RestorebenchError("--model", f"{model!r} has no segmentation head to pretrain",
                                f"choose from {list(SEGMENTATION_MODELS)}")
    s = cfg.pretrain.segmentation
    where = f"profiles.{cfg.profile}.pretrain.segmentation"
    if s.size % 32:
        raise RestorebenchError(f"{where}.size", f"{s.size} is not a multiple of 32 (the models' padding multiple)",
                                f"use {max(32, round(s.size / 32) * 32)}")
    variants = {cfg.variant(model, task) for task in cfg.tasks}
    if len(variants) != 1:
        raise RestorebenchError(f"profiles.{cfg.profile}.variants.{model}", f"the tasks use variants {sorted(variants)}; "
                                "one segmentation checkpoint serves one variant", "give every task the same variant")
    variant = variants.pop()
    torch.manual_seed(cfg.seed)
    seg = SEGMENTERS[model](build_model(model, variant=variant), s.classes)
    seg.train()
    opt = torch.optim.AdamW(seg.trainable(), lr=s.lr, weight_decay=s.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0 - step / s.steps)  # mmseg's poly, power 1
    started = time.time()
    losses = []
    for step in range(s.steps):
        images, labels = synthetic_batch(cfg.seed, "train", step * s.batch, s.batch, s.size, s.classes)
        loss = seg.loss(images, labels)
        if not torch.isfinite(loss):
            raise RestorebenchError(where, f"{model}: the segmentation loss is {float(loss)} at step {step}",
                                    "lower lr")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if step % max(1, s.steps // 10) == 0 or step == s.steps - 1:
            log.info("segpretrain %s: step %d/%d loss %.4f", model, step + 1, s.steps, losses[-1])
    seconds = time.time() - started
    held_images, held_labels = synthetic_batch(cfg.seed, "held_out", 0, s.held_out, s.size, s.classes)
    scores = score(seg, held_images, held_labels, s.classes)
    summary = {"model": model, "variant": variant, "profile": cfg.profile, "seed": cfg.seed, "steps": s.steps,
               "batch": s.batch, "size": s.size, "classes": s.classes, "lr": s.lr, "weight_decay": s.weight_decay,
               "class_names": class_names(s.classes), "first_loss": losses[0], "last_loss": losses[-1],
               "train_seconds": seconds, "held_out_images": s.held_out, "held_out": scores,
               "checkpoint": str(checkpoint_path(model)), "params_hash": cfg.digest(),
               "data": "synthetic textured shapes (restorebench.pretrain.segmentation.synthetic_scene)"}  # fmt: skip
    meta = {"time": time.asctime(), "iter": s.steps, "epoch": 1, "seed": cfg.seed, "CLASSES": tuple(class_names(s.classes).values()),
            "PALETTE": [[int(v) for v in derive_rng(0, "palette", c).integers(0, 256, 3)] for c in range(s.classes)],
            "exp_name": f"restorebench segpretrain {model} {variant}", "config": repr(cfg.pretrain.segmentation),
            "hook_msgs": {"best_score": np.float64(scores["miou"])}}  # mmseg's EvalHook writes its mIoU as numpy
    with io.atomic_dir(out_dir) as tmp:
        seg.save(tmp, meta, opt.state_dict())
        io.write_json(tmp / "segmentation.json", summary)
    return summary
