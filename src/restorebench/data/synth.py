"""Degraded inputs synthesised when a sample is drawn, from the clean crops of a degrade store.

The `degrade` stage stores one clean window per item (`clean.u8`: the patch plus `margin` pixels of real
context on each side, raw uint8) and, in meta.json, each task's degradation spec, label and scale. It stores
no degraded image: 110.6 KB per ImageNet image at the paper's 192x192 patch (margin 0), where one degraded
copy per task took 932 KB. A `SynthStore` is the view of one task: `get(i, seed=, draw=)` runs the task's
pipeline (restorebench.degrade) on item i's window with the Generator

    derive_rng(seed, "degrade", item id, task, draw)

and crops the patch back out, so a sample is a pure function of (seed, item, task, draw): the same for any
number of loader workers, in any order, and after a resume. Pretraining passes its step as the draw (a new
degradation every time an item is drawn); fixed sets (held-out PSNR, k-NN) use draw 0.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from restorebench.data.store import Store
from restorebench.degrade.pipeline import build_pipeline, derive_rng
from restorebench.images import to_uint8

CLEAN = "clean"  # the one array of a synthesising store: N x (patch + 2 margin)^2 x 3


class SynthStore(Store):
    """One task of a synthesising degrade store: `get(i, seed=, draw=) -> (lq, gt, meta)`, lq synthesised.

    shapes: `gt` is patch x patch x 3 and `lq_<task>` patch / scale (SR) or patch; both uint8 HxWxC, as a
    stored pair would be. `label` (the task's class) is added to each item's meta.
    """

    def __init__(self, path: str | Path, *, task: str) -> None:
        super().__init__(path, lq=CLEAN, gt=CLEAN)
        info = self.meta["tasks"][task]
        self.task, self.label = task, int(info["label"])
        self.scale, self.margin, self.patch = int(info["scale"]), int(self.meta["margin"]), int(self.meta["patch"])
        self.pipeline = build_pipeline(info["spec"], where=f"{self.path / 'meta.json'}: tasks.{task}.spec")
        side = self.patch // self.scale
        self.lq_name, self.gt_name = f"lq_{task}", "gt"
        self.shapes = {**self.shapes, self.gt_name: (self.patch, self.patch, 3), self.lq_name: (side, side, 3)}

    def get(self, i: int, *, seed: int = 0, draw: int = 0) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        """Item i's clean patch (a view) and its degraded version for (seed, draw), both uint8 HxWx3."""
        if not -self.n <= i < self.n:
            raise IndexError(f"item {i} out of range for a store of {self.n}")
        i = i % self.n
        window = self.array(CLEAN)[i]
        m, p, s = self.margin, self.patch, self.scale
        rng = derive_rng(seed, "degrade", self.index["id"][i], self.task, int(draw))
        out = self.pipeline(window.astype(np.float32) / np.float32(255.0), rng)
        # the window's context is degraded with the patch (blur and resizing see real neighbours), then cut
        # away; m is a multiple of every SR scale, so the cut lands on whole LR pixels
        lq = to_uint8(out[m // s : (m + p) // s, m // s : (m + p) // s], half_up=True)
        meta = {k: v[i] for k, v in self.index.items()}
        meta["label"] = self.label
        return lq, window[m : m + p, m : m + p], meta
