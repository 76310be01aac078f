"""`Restorer`: what every model of the zoo answers about itself, so that no table elsewhere is keyed by its name.

A model class derives from `Restorer` (the segmentation-derived ones through heads.SegmentationRestorer) and
answers, besides `forward` ((B, 3, H, W) in [0, 1] -> (B, 3, H, W)) and the finetuning interface that
train/strategies.py reads (`parameter_groups()`, `layer_ids()`, `num_layers`):

- `decoder_features()`: the modules whose outputs DCPT's classifier reads (pretrain/dcpt.py), coarse to fine;
- `start_at_identity_()`: zero what makes a randomly initialised model return its input (a no-op where the
  architecture has no input skip to fall back on);
- `adapt_pretrained(state, **ctx)`: how a restoration-pretrained state dict maps into the model a grid cell
  finetunes (IPT keeps one task's head and tail; the others take it as it is);
- `checkpoint_blocks()`: the blocks whose activations may be recomputed in the backward pass instead of kept
  (activation checkpointing, switched by `set_activation_checkpointing`; restorebench.estimate decides when);
- `attention`: "token" (attention over spatial tokens, through torch's scaled_dot_product_attention),
  "channel" (Restormer's transposed attention) or None; `is_transformer` (attention of either kind) says
  whether the transformer speed target (MFU >= 40%) applies (benchmarks/summary.py).

A model module may also define `finetune_kwargs(task, *, head) -> dict`: builder keywords for the
architecture a cell of `task` finetunes (IPT: one same-size task); without it, the variant's own.
"""

from __future__ import annotations

import functools
import types
from typing import Any, ClassVar

import torch
import torch.nn as nn
import torch.utils.checkpoint
from torch import Tensor

from restorebench.errors import RestorebenchError


def zero_(*modules: nn.Module) -> None:
    """Zero every parameter of `modules` in place (the output convs of a residual restorer)."""
    with torch.no_grad():
        for module in modules:
            for p in module.parameters():
                p.zero_()


def _checkpointed_forward(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
    """A block's own forward under torch.utils.checkpoint while it trains (non-reentrant: keyword and
    non-tensor arguments pass through, the RNG state is replayed for dropout / drop path); as is otherwise.
    Bound to the block as an instance attribute (types.MethodType), so a deep copy (EMA) binds its copy."""
    forward = functools.partial(type(self).forward, self)
    if self.training and torch.is_grad_enabled():
        return torch.utils.checkpoint.checkpoint(forward, *args, use_reentrant=False, **kwargs)
    return forward(*args, **kwargs)


class Restorer(nn.Module):
    """Base class of the zoo's models: the defaults of what a model answers about itself (module docstring)."""

    # "token" (spatial tokens, through F.scaled_dot_product_attention), "channel" or None (a CNN)
    attention: ClassVar[str | None] = None

    @property
    def is_transformer(self) -> bool:
        """Built on attention (either kind): the MFU speed target (benchmarks/summary.py) applies, not to plain CNNs."""
        return self.attention is not None

    def decoder_features(self) -> list[tuple[str, nn.Module]]:
        """(qualified name, module) pairs whose forward outputs are the decoder's feature maps, coarse to fine.

        An output may be a (N, C, H, W) map, a tuple/list whose first item is one, a (seq, N, D) token
        sequence over a square grid, or an object with `multi_scale_features` and `mask_features`
        (pretrain/dcpt.py `_as_maps` reads each). Every module listed must run in `forward`.
        """
        raise RestorebenchError(
            f"src/restorebench/models ({type(self).__name__})",
            "the model names no decoder features, so DCPT cannot pretrain it",
            "override decoder_features() in its class",
        )

    def start_at_identity_(self) -> None:
        """Zero the layers that make this randomly initialised model return its input; default: nothing to
        zero (the model has no input skip). Called only for a random init, never on loaded weights."""

    def checkpoint_blocks(self) -> list[nn.Module]:
        """The blocks activation checkpointing may wrap (each recomputes its forward in the backward pass);
        default: none (the model trains as it is)."""
        return []

    def set_activation_checkpointing(self, on: bool) -> bool:
        """Recompute (on) or keep (off) the activations of `checkpoint_blocks()`; parameter names and the
        state dict do not change. Returns whether the model has blocks to checkpoint."""
        blocks = self.checkpoint_blocks()
        for block in blocks:
            if on:
                block.forward = types.MethodType(_checkpointed_forward, block)
            else:
                block.__dict__.pop("forward", None)
        return bool(blocks)

    def adapt_pretrained(self, state: dict[str, Tensor], **ctx: Any) -> dict[str, Tensor]:
        """The restoration-pretrained `state` as this model's state dict (loaded strictly afterwards).

        ctx, as train/finetune.py passes it: `task` (the finetuning task), `head` (the pretrained task whose
        head the cell starts from, params `pretrain.ipt.heads`, or None) and `meta` (the pretraining run's
        pretrain.json). Default: the state is already laid out like this model.
        """
        return dict(state)
