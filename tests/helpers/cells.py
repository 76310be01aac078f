"""A finetuned grid cell on disk, as the evaluate stage reads it."""

from __future__ import annotations

from pathlib import Path

import pytest


def finetuned_cell(project_root: Path, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A demo NAFNet cell's weights under root/runs/ and a one-item evaluation set (40x56), as `evaluate`
    reads them; the working directory becomes root."""
    import numpy as np
    from safetensors.torch import save_file

    import restorebench.evaluate as ev
    from restorebench.config import load_config
    from restorebench.train.cells import cell_model

    weights = root / "runs/finetune/denoise/nafnet/full/model.safetensors"
    weights.parent.mkdir(parents=True)
    save_file(cell_model(load_config(project_root / "params.yaml"), "nafnet", "denoise").state_dict(), weights)
    rng = np.random.default_rng(0)
    item = ev.EvalItem("0000_00", *(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8) for _ in range(2)))
    monkeypatch.setattr(ev, "eval_items", lambda task, data_root: iter([item]))
    monkeypatch.chdir(root)


# The demo's segmentation models finetune from checkpoints its segpretrain jobs write (runs/segmentation/M);
# a test that builds them without running segpretrain starts them from a seeded random init instead.
RANDOM_SEG_INIT = ("profiles.demo.pretrained.swin_upernet=null", "profiles.demo.pretrained.swin_mask2former=null",
                   "profiles.demo.pretrained.vit_adapter=null", "pretrain_models.scratch=[]")  # fmt: skip
