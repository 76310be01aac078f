"""The model zoo: an explicit registry, one file per architecture.

Every model maps (B, 3, H, W) in [0, 1] to (B, 3, H, W) for any H, W (it pads inside and crops back),
and offers `parameter_groups()` -> {"backbone": [...], "decoder": [...], "head": [...]} (lists of
(qualified name, parameter)) plus `layer_ids()` -> {backbone parameter name: layer index} and
`num_layers` for layer-wise learning-rate decay. Every model is a `Restorer` (restorer.py) and answers what
the rest of the pipeline needs to know about it (DCPT's hook points, its identity start, how a pretrained
state maps into it), so nothing outside this folder is keyed by a model's name.

Adding a model: its file here (a `Restorer` subclass, `VARIANTS` with a tiny "demo", `build`), one line in
`_MODULES` below, and its entries in params.yaml (docs/extending.md).

Builders take `variant=` (a named size from the module's VARIANTS, "demo" is the tiny CPU one),
`pretrained=` (hub id, hub-snapshot folder, .safetensors/.pth file, or a finetuned run folder) and the architecture's own keyword
arguments, which override the variant's.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the registry itself imports no torch: config.py derives its model names from it
    import torch.nn as nn

# name -> module under restorebench.models. Modules are imported on first use: the Swin models pull in
# transformers (~3 s), which a NAFNet job should not pay for.
_MODULES = {
    "swin_upernet": "swin_upernet",
    "swin_mask2former": "swin_mask2former",
    "vit_adapter": "vit_adapter",
    "nafnet": "nafnet",
    "restormer": "restormer",
    "ipt": "ipt",
}


class _Registry(Mapping):
    """A read-only name -> module attribute mapping that imports a model's module on first access."""

    _MISSING = object()

    def __init__(self, attr: str, default: Any = _MISSING) -> None:
        self._attr, self._default = attr, default

    def __getitem__(self, name: str) -> Any:
        if name not in _MODULES:
            raise KeyError(name)
        module = importlib.import_module(f"restorebench.models.{_MODULES[name]}")
        if self._default is not self._MISSING:
            return getattr(module, self._attr, self._default)
        return getattr(module, self._attr)

    def __iter__(self) -> Iterator[str]:
        return iter(_MODULES)

    def __len__(self) -> int:
        return len(_MODULES)

    def __repr__(self) -> str:
        return f"<models registry {self._attr}: {list(_MODULES)}>"


def model_module(name: str) -> str:
    """Model `name`'s module under restorebench (models.nafnet): its source file is a dependency of the
    model's stages (restorebench.pipeline)."""
    if name not in _MODULES:
        raise KeyError(name)
    return f"models.{_MODULES[name]}"


def params_keys(name: str) -> tuple[str, ...]:
    """The params keys (under the active profile) a model's cells read beyond its own entries (variants,
    pretrained, train.models): the module's `PARAMS_KEYS`, read from its source without importing it (the
    grid loads no torch)."""
    from restorebench.codepath import module_constant

    return tuple(module_constant(model_module(name), "PARAMS_KEYS", ()))  # type: ignore[arg-type]


MODELS: Mapping[str, Callable[..., nn.Module]] = _Registry("build")
VARIANTS: Mapping[str, tuple[str, ...]] = _Registry("VARIANTS")


def build_model(name: str | None = None, *, variant: str | None = None, pretrained: str | None = None,
                **kwargs) -> nn.Module:
    """Build model `name` (see MODELS) at `variant`, optionally loading `pretrained` weights.

    `pretrained` may be a finetuned run folder (runs/finetune/T/M/C/, its config.json written by finetune, see
    restorebench.card): the model, variant and architecture keywords come from that config (`name` may then be
    omitted; given, it must agree), and its model.safetensors is loaded with strict key and shape matching.
    """
    run = None
    if pretrained is not None:
        from restorebench.card import read_run_config

        run = read_run_config(pretrained)
    if run is not None:
        if name is not None and name != run["model"]:
            raise ValueError(f"{pretrained}: a finetuned {run['model']!r} run, not {name!r}")
        name, variant = run["model"], variant if variant is not None else run["variant"]
        kwargs = {**run.get("kwargs", {}), **kwargs}
    if name is None:
        raise ValueError("build_model: name a model, or pass pretrained=<a finetuned run folder>")
    if name not in MODELS:
        import difflib

        close = difflib.get_close_matches(name, list(MODELS), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown model {name!r}; choose from {sorted(MODELS)}{hint}")
    if variant is not None and variant not in VARIANTS[name]:
        raise ValueError(f"model {name!r}: unknown variant {variant!r}; choose from {list(VARIANTS[name])}")
    if run is None:
        return MODELS[name](variant=variant, pretrained=pretrained, **kwargs)
    from restorebench.models.weights import WeightsError, find_weight_file, read_state_dict

    path = Path(pretrained)
    weights = find_weight_file(path) if path.is_dir() else path
    _check_architecture({"model": name, "variant": variant, "kwargs": kwargs}, weights)  # before any allocation
    net = MODELS[name](variant=variant, pretrained=None, **kwargs)
    try:
        net.load_state_dict(read_state_dict(weights), strict=True)
    except RuntimeError as err:
        raise WeightsError(f"{weights}: does not fit {name} variant {variant} as its config.json says: {str(err)[:400]}") from None
    return net


def _check_architecture(config: dict, weights: Path) -> None:
    """Before a model is built from a run config: its `kwargs` must be keywords the model takes, and the
    architecture they describe must hold exactly the parameters the weights file holds. Both are measured
    without allocating: the model is built on the meta device, the file's tensor shapes read from its
    header. So a file whose metadata asks for an absurd size (a width of 10**6) is refused in one line
    instead of allocating gigabytes. Raises RestorebenchError naming the file."""
    import torch

    from restorebench.errors import RestorebenchError
    model, variant, kwargs = config["model"], config.get("variant"), config.get("kwargs", {})
    if model not in MODELS:
        raise RestorebenchError(weights, f"names model {model!r}, not one of {sorted(MODELS)}")
    if variant is not None and variant not in VARIANTS[model]:
        raise RestorebenchError(weights, f"names {model} variant {variant!r}, not one of {list(VARIANTS[model])}")
    try:
        with torch.device("meta"):
            net = MODELS[model](variant=variant, pretrained=None, **kwargs)
    except (TypeError, ValueError) as err:
        raise RestorebenchError(weights, f"architecture keywords {sorted(kwargs)} do not fit {model}: "
                                         f"{str(err).splitlines()[0][:200]}") from None  # fmt: skip
    wanted = sum(p.numel() for p in net.state_dict().values())
    held = _file_elements(weights)
    if held is not None and wanted != held:
        raise RestorebenchError(weights, f"its metadata describes a {model} of {wanted:,} tensor elements but the "
                                         f"file holds {held:,}", "the metadata does not match the weights; use the "
                                         "run folder's config.json or retrain")  # fmt: skip


def _file_elements(weights: Path) -> int | None:
    """Tensor elements in a .safetensors file, from its header (no tensor read); None for other files."""
    if weights.suffix != ".safetensors" or not weights.is_file():
        return None
    from math import prod

    with open(weights, "rb") as f:
        size = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(size))
    return sum(prod(v["shape"]) for k, v in header.items() if k != "__metadata__")


# name -> whether the model offers deep supervision: an `aux_loss` keyword that makes it keep `aux_outputs`
# (one full-resolution image per intermediate decoder layer) in training mode; the recipe's aux_loss turns
# it on and the pixel objective adds their losses (train.loop.pixel_objective). Default: no.
AUX_LOSS: Mapping[str, bool] = _Registry("AUX_LOSS", False)


def _no_finetune_kwargs(task: str, *, head: str | None = None) -> dict[str, Any]:
    return {}


# name -> finetune_kwargs(task, *, head) -> builder keywords of the architecture a cell of `task` finetunes
# (a model module's optional `finetune_kwargs`; IPT's: one same-size task). Default: none.
FINETUNE_KWARGS: Mapping[str, Callable[..., dict[str, Any]]] = _Registry("finetune_kwargs", _no_finetune_kwargs)
