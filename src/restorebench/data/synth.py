"""Degraded inputs synthesised when a sample is drawn, from the clean crops of a degrade store.

The `degrade` stage stores one clean window per item (`clean.u8`: the patch plus `margin` pixels of real
context on each side, raw uint8) and, in meta.json, each task's degradation spec, label and scale. It stores
no degraded image: 110.6 KB per ImageNet image at the paper's 192x192 patch (margin 0), where one degraded
copy per task took 932 KB. A `SynthStore` is the view of one task: `get(i, seed=, draw=)` runs the task's
pipeline (restorebench.degrade) on item i's window with the Generator

    derive_rng(seed, "degrade", item id, task, draw)

and crops the patch (or the drawn crop of it) back out, so a sample is a pure function of (seed, item,
task, draw, crop), and the crop is itself drawn from (seed, epoch, item): the same for any
number of loader workers, in any order, and after a resume. Pretraining passes its step as the draw (a new
degradation every time an item is drawn); fixed sets (held-out PSNR, k-NN) use draw 0.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from restorebench.data.store import Store
from restorebench.degrade.chain import build_pipeline
from restorebench.degrade.rng import derive_rng
from restorebench.images import to_uint8

CLEAN = "clean"  # the one array of a synthesising store: N x (patch + 2 margin)^2 x 3
# pixels around a drawn crop that its degradation sees, where the stored window has them (the old stage's
# margin; a 21-tap motion blur or x4 bicubic kernel reaches 10 or 8 pixels out)
CONTEXT = 24


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

    def get(self, i: int, *, seed: int = 0, draw: int = 0,
            crop: tuple[int, int, int] | None = None) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:  # fmt: skip
        """Item i's clean patch (a view) and its degraded version for (seed, draw), both uint8 HxWx3.

        crop: (y, x, size) of a size x size crop of the patch (multiples of the task's scale): only that
        crop is degraded, with up to CONTEXT pixels of the stored window around it (real neighbours where
        the window has them), so a 48x48 draw does not pay for the whole 192x192 patch."""
        if not -self.n <= i < self.n:
            raise IndexError(f"item {i} out of range for a store of {self.n}")
        i = i % self.n
        window = self.array(CLEAN)[i]
        m, s = self.margin, self.scale
        y, x, size = crop if crop is not None else (0, 0, self.patch)
        if y % s or x % s or size % s or min(y, x) < 0 or size < 1 or max(y, x) + size > self.patch:
            raise ValueError(f"crop {(y, x, size)} is not inside the {self.patch}-pixel patch on the x{s} grid")
        c = CONTEXT // s * s  # whole LR pixels, so the LR crop lands on the grid
        y0, x0 = max(0, m + y - c), max(0, m + x - c)
        y1, x1 = min(window.shape[0], m + y + size + c), min(window.shape[1], m + x + size + c)
        rng = derive_rng(seed, "degrade", self.index["id"][i], self.task, int(draw))
        out = self.pipeline(window[y0:y1, x0:x1].astype(np.float32) / np.float32(255.0), rng)
        # the context is degraded with the crop (blur and resizing see real neighbours), then cut away
        ty, tx = (m + y - y0) // s, (m + x - x0) // s
        lq = to_uint8(out[ty : ty + size // s, tx : tx + size // s], half_up=True)
        meta = {k: v[i] for k, v in self.index.items()}
        meta["label"] = self.label
        return lq, window[m + y : m + y + size, m + x : m + x + size], meta


def open_store(path: str | Path, *, task: str | None = None) -> Store:
    """Open a store. For a degradation store (several tasks) name the `task`: its degraded inputs are
    synthesised per draw (SynthStore) or, in a store with one array per task, read
    from `lq_<task>`; the task's label is added to each item's meta."""
    meta_path = Path(path) / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    tasks = meta.get("tasks")
    if task is None:
        if tasks:
            raise ValueError(f"{path}: a degradation store; pass task=, one of {sorted(tasks)}")
        return Store(path)
    if not tasks or task not in tasks:
        raise ValueError(f"{path}: no task {task!r}; tasks here: {sorted(tasks or {})}")
    if meta.get("synthesis"):
        return SynthStore(path, task=task)
    return Store(path, lq=tasks[task]["array"], gt="gt", label=int(tasks[task]["label"]))
