"""The architecture a cell trains: the profile's variant of the model plus the cell's own keywords.

Shared by the finetune stage (train/finetune.py), the DCPT pretraining of the same architecture, and the
cost measurements that size a run to its GPU (restorebench.costs, restorebench.plan), so all three build the
same network. Imports only the params and the model registry.
"""

from __future__ import annotations

import torch

from restorebench.config import Config
from restorebench.errors import RestorebenchError
from restorebench.models import AUX_LOSS, FINETUNE_KWARGS, MODELS, build_model


def cell_kwargs(cfg: Config, model: str, task: str) -> dict:
    """The architecture keywords a cell of TASK adds to the profile's variant: the model's own finetuning
    keywords (its module's `finetune_kwargs`; IPT: one same-size task named after the pretrained head it
    starts from, pretrain.ipt.heads), and aux_loss=True when the recipe asks for deep supervision. Recorded
    in the run's config.json, so the run rebuilds from it."""
    kwargs = FINETUNE_KWARGS[model](task, head=cfg.pretrain.ipt.heads.get(task))
    if cfg.train.recipe(model, task).aux_loss:
        if not AUX_LOSS[model]:
            with_aux = [name for name in MODELS if AUX_LOSS[name]]
            raise RestorebenchError(f"profiles.{cfg.profile}.train.models.{model}.aux_loss", f"{model} has no intermediate decoder "
                                    f"outputs to supervise", f"deep supervision exists for {with_aux}")  # fmt: skip
        kwargs["aux_loss"] = True
    return kwargs


def cell_model(cfg: Config, model: str, task: str, pretrained: str | None = None) -> torch.nn.Module:
    """The architecture a cell of TASK trains: the profile's variant with `cell_kwargs`."""
    return build_model(model, variant=cfg.variant(model, task), pretrained=pretrained,
                       **cell_kwargs(cfg, model, task))
