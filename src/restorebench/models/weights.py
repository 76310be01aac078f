"""Reading and loading pretrained weights, safely and loudly.

Three entry points, used by every model file:

- `resolve_pretrained(ref)`: a file, a hub-snapshot folder, or a hub id ("org/name") -> a local path.
- `read_state_dict(path)`: a .safetensors / .pth / .bin file (or a snapshot folder) -> {name: Tensor}.
  Pickled files are read with `torch.load(..., weights_only=True)` only: no arbitrary objects (numpy float
  scalars aside, as mmcv writes them into a checkpoint's meta: models/safe_unpickle.py).
- `load_checked(module, state_dict, required_prefixes=...)`: non-strict load that logs counts and
  raises `WeightsError` (naming the key) on a shape mismatch or when any tensor under a required
  prefix (the pretrained backbone) was not loaded. A silently random backbone would void the study.

`read_pretrained(ref)` combines the first two and also returns the snapshot's config.json (if any), which
is where the architecture of a hub checkpoint comes from.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch.nn as nn
from torch import Tensor

from restorebench.errors import RestorebenchError
from restorebench.models.safe_unpickle import load_pickled

log = logging.getLogger(__name__)

# Container keys unwrapped by `read_state_dict`, in this order of preference at each nesting level:
# BasicSR / NAFNet / Restormer save {"params": ...} and, with EMA, also {"params_ema": ...} (the EMA
# weights are the ones evaluated, so they win when both exist); Lightning / mmcv save {"state_dict": ...};
# many research repos save {"model": ...}; DeepSpeed / some DDP wrappers save {"module": ...}.
CONTAINER_KEYS: tuple[str, ...] = ("params_ema", "params", "state_dict", "model", "module")

# Prefixes added by wrappers, stripped from every key: DataParallel / DDP ("module.") and
# torch.compile ("_orig_mod.").
WRAPPER_PREFIXES: tuple[str, ...] = ("module.", "_orig_mod.")

# File names looked up, in order, inside a snapshot folder.
WEIGHT_FILES: tuple[str, ...] = (
    "model.safetensors",
    "pytorch_model.bin",
    "model.pth",
    "model.pt",
    "open_clip_pytorch_model.bin",
)

_HUB_ID = re.compile(r"^(?:hf[-_]hub:)?([A-Za-z0-9][\w.\-]*/[\w.\-]+)(?:@([\w.\-/]+))?$")

# Buffers that are recomputed deterministically at construction and need not come from a checkpoint.
DEFAULT_ALLOW_MISSING: tuple[str, ...] = (
    r"(^|\.)relative_position_index$",
    r"(^|\.)num_batches_tracked$",
    r"(^|\.)relative_coords_table$",
)


class WeightsError(RestorebenchError, RuntimeError):
    """A checkpoint could not be found, read, or loaded completely (a known failure: the CLI prints it as
    one line; the caller that knows the params key re-raises it naming profiles.<p>.pretrained.<m>)."""

    def __init__(self, message: str, *, where: str | None = None, hint: str | None = None) -> None:
        super().__init__(where, message, hint)


# --------------------------------------------------------------------------------------------- reading


def _unwrap(obj: object, key: str | None) -> Mapping[str, object]:
    """Descend into CONTAINER_KEYS (or the explicit `key`) until a flat name -> tensor mapping is left."""
    if key is not None:
        if not isinstance(obj, Mapping) or key not in obj:
            have = sorted(obj)[:10] if isinstance(obj, Mapping) else type(obj).__name__
            raise WeightsError(f"checkpoint has no container key {key!r}; top-level keys: {have}")
        obj = obj[key]
    for _ in range(4):  # nesting seen in the wild is at most two levels ({"model": {"module": ...}})
        if not isinstance(obj, Mapping):
            break
        if any(isinstance(v, Tensor) for v in obj.values()):
            break
        for k in CONTAINER_KEYS:
            if isinstance(obj.get(k), Mapping):
                obj = obj[k]
                break
        else:
            break
    if not isinstance(obj, Mapping):
        raise WeightsError(f"checkpoint is a {type(obj).__name__}, not a state dict")
    return obj


def _strip_prefixes(sd: Mapping[str, object]) -> dict[str, Tensor]:
    out: dict[str, Tensor] = {}
    for name, value in sd.items():
        if not isinstance(value, Tensor):  # step counters, lr, config stubs saved alongside the weights
            continue
        changed = True
        while changed:
            changed = False
            for p in WRAPPER_PREFIXES:
                if name.startswith(p):
                    name, changed = name[len(p) :], True
        out[name] = value
    return out


def find_weight_file(folder: str | Path) -> Path:
    """The weights file inside a snapshot folder (WEIGHT_FILES order, then a sole *.safetensors/*.pth)."""
    folder = Path(folder)
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    for pattern in ("*.safetensors", "*.pth", "*.pt", "*.bin"):
        found = sorted(folder.glob(pattern))
        if len(found) == 1:
            return found[0]
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        return index
    listing = sorted(p.name for p in folder.iterdir())[:20]
    raise WeightsError(f"no weights file in {folder} (looked for {list(WEIGHT_FILES)}); it holds {listing}")


def read_state_dict(path: str | Path, *, key: str | None = None) -> dict[str, Tensor]:
    """Read a checkpoint into a flat {name: CPU tensor} dict.

    path: a .safetensors file (read with safetensors), a sharded `model.safetensors.index.json`, any other
        file (read with `torch.load(map_location="cpu", weights_only=True)`; never unpickles objects), or a
        snapshot folder (its weights file, see `find_weight_file`).
    key: an explicit container key to take first (e.g. "params" to skip "params_ema"). Without it,
        containers are unwrapped in CONTAINER_KEYS order: params_ema, params, state_dict, model, module.
    Non-tensor entries are dropped; "module." and "_orig_mod." prefixes are stripped.
    """
    path = Path(path)
    if path.is_dir():
        path = find_weight_file(path)
    if not path.is_file():
        raise WeightsError(f"checkpoint file not found: {path}")
    if path.name.endswith(".safetensors.index.json"):
        from safetensors.torch import load_file

        shards = sorted(set(json.loads(path.read_text())["weight_map"].values()))
        raw: Mapping[str, object] = {}
        for shard in shards:
            raw.update(load_file(str(path.parent / shard), device="cpu"))  # type: ignore[attr-defined]
        return _strip_prefixes(_unwrap(raw, key) if key else raw)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            raw = load_file(str(path), device="cpu")
        except Exception as e:  # safetensors raises its own SafetensorError on a corrupt header
            raise WeightsError(f"could not read {path} as safetensors: {e}") from e
        return _strip_prefixes(_unwrap(raw, key) if key else raw)
    try:
        obj = load_pickled(path)
    except Exception as e:
        if not isinstance(e, pickle.UnpicklingError):  # a cut or corrupt file, not a refused object
            raise WeightsError(f"could not read {path} with torch.load: {type(e).__name__}: "
                               f"{str(e).splitlines()[0] if str(e) else ''} (truncated or corrupt?)") from e
        why = [ln.strip() for ln in str(e).splitlines()
               if any(w in ln for w in ("Unsupported global", "unsupported GLOBAL", "refused"))]
        raise WeightsError(
            f"could not read {path} with torch.load(weights_only=True): it pickles an object other than "
            f"tensors, plain containers and numpy float scalars, refused on purpose (code could run while "
            f"loading): {why[0] if why else str(e).splitlines()[0]}",
            hint="if the file is trusted, re-save its state dict with safetensors",
        ) from e
    return _strip_prefixes(_unwrap(obj, key))


def resolve_pretrained(ref: str | os.PathLike[str]) -> Path:
    """A local path for `ref`: an existing file or folder as given; a hub id downloaded (or taken from cache).

    Hub ids are "org/name" (optionally "hf-hub:org/name" as timm writes them, or "org/name@revision");
    timm weights such as "timm/beitv2_base_patch16_224.in1k_ft_in22k_in1k" are hub repos too. Only
    *.json and *.safetensors files are fetched, plus pytorch_model.bin when the repo has no safetensors.
    Offline (HF_HUB_OFFLINE=1 or no network) and not cached -> WeightsError saying how to get the files.
    """
    p = Path(ref).expanduser()
    if p.exists():
        return p
    ref = str(ref)
    m = _HUB_ID.match(ref)
    if m is None or ref.startswith((".", "/", "~")) or ref.endswith((".safetensors", ".pth", ".pt", ".bin")):
        raise WeightsError(f"pretrained weights {ref!r}: no such file or folder, and not a hub id 'org/name'")
    repo_id, revision = m.group(1), m.group(2)
    try:
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(repo_id, revision=revision, allow_patterns=["*.json", "*.safetensors"]))
        if not any(folder.glob("*.safetensors")):
            folder = Path(
                snapshot_download(repo_id, revision=revision, allow_patterns=["*.json", "pytorch_model.bin"])
            )
    except Exception as e:  # offline mode, no network, unknown repo, gated repo: one actionable message
        raise WeightsError(
            f"could not get pretrained weights {repo_id!r} from the Hugging Face hub (offline, unreachable, "
            f"or not in the local cache). Download them ahead of time on a machine with network access:\n"
            f"    huggingface-cli download {repo_id} --local-dir DIR\n"
            f"(`hf download {repo_id} --local-dir DIR` with huggingface_hub >= 1.0) "
            f"and pass pretrained=DIR (a folder with config.json + model.safetensors), or pass a "
            f".safetensors/.pth file. Original error: {type(e).__name__}: {e}"
        ) from e
    return folder


@dataclass
class Pretrained:
    """A read checkpoint: its flat state dict, its config.json (None for a bare file), and where it came from."""

    state_dict: dict[str, Tensor]
    config: dict | None
    path: Path


def read_pretrained(ref: str | os.PathLike[str], *, key: str | None = None) -> Pretrained:
    """resolve_pretrained + read_state_dict + the config.json next to the weights (if a folder)."""
    path = resolve_pretrained(ref)
    config = None
    cfg_file = path / "config.json" if path.is_dir() else path.parent / "config.json"
    if path.is_dir() and cfg_file.is_file():
        config = json.loads(cfg_file.read_text())
    return Pretrained(state_dict=read_state_dict(path, key=key), config=config, path=path)


# --------------------------------------------------------------------------------------------- loading


def adapt_keys(
    sd: Mapping[str, Tensor], own_keys: Iterable[str], rules: Sequence[tuple[str, str]]
) -> dict[str, Tensor]:
    """Rename checkpoint keys onto a module's names with regex rules, only where that helps.

    A key already among `own_keys` is kept as is; otherwise every (pattern, replacement) rule is applied in
    order (re.sub, cumulatively) and the result is used if it is one of `own_keys`; otherwise the key is
    kept unchanged (and will be reported as unexpected). This lets one loader read both the legacy key
    names stored in hub checkpoints and whatever names the installed library version uses.
    """
    own = set(own_keys)
    compiled = [(re.compile(p), r) for p, r in rules]
    out: dict[str, Tensor] = {}
    for k, v in sd.items():
        if k not in own:
            new = k
            for pat, rep in compiled:
                new = pat.sub(rep, new)
            if new in own:
                k = new
        out[k] = v
    return out


@dataclass
class LoadReport:
    """What `load_checked` did. `loaded` are module keys filled from the checkpoint."""

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return f"loaded {len(self.loaded)}, missing {len(self.missing)}, unexpected {len(self.unexpected)}"


def _names(keys: Iterable[str], n: int = 8) -> str:
    keys = list(keys)
    more = f" ... (+{len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def load_checked(
    module: nn.Module,
    state_dict: Mapping[str, Tensor],
    *,
    required_prefixes: Sequence[str] = ("backbone.",),
    allow_missing: Sequence[str] = DEFAULT_ALLOW_MISSING,
    source: str = "checkpoint",
) -> LoadReport:
    """Load `state_dict` into `module` non-strictly, but fail on anything that would silently go wrong.

    Raises WeightsError naming the key(s) when
      - a checkpoint tensor has a different shape from the module's tensor of the same name, or
      - a module tensor (parameter or persistent buffer) under one of `required_prefixes` is not in the
        checkpoint (except names matching a regex in `allow_missing`: buffers rebuilt deterministically).
    Keys outside the required prefixes may be missing (new decoder / head layers) and checkpoint keys the
    module lacks are ignored (dropped segmentation heads); both are logged with their counts.
    """
    own = module.state_dict()
    mismatched = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in state_dict.items()
        if k in own and tuple(v.shape) != tuple(own[k].shape)
    ]
    if mismatched:
        raise WeightsError(
            f"{source}: {len(mismatched)} tensor(s) have the wrong shape (is the variant / config right?): "
            + "; ".join(mismatched[:8])
        )
    allow = [re.compile(p) for p in allow_missing]
    missing = [k for k in own if k not in state_dict]
    required_missing = [
        k
        for k in missing
        if any(k.startswith(p) for p in required_prefixes) and not any(r.search(k) for r in allow)
    ]
    if required_missing:
        raise WeightsError(
            f"{source}: {len(required_missing)} pretrained tensor(s) missing from the checkpoint, so they "
            f"would stay randomly initialised: {_names(required_missing)}"
        )
    if required_prefixes and not any(any(k.startswith(p) for p in required_prefixes) for k in state_dict):
        raise WeightsError(f"{source}: no tensor under {list(required_prefixes)} in the checkpoint")
    result = module.load_state_dict(dict(state_dict), strict=False)
    report = LoadReport(
        loaded=[k for k in own if k in state_dict],
        missing=list(result.missing_keys),
        unexpected=list(result.unexpected_keys),
    )
    log.info("%s: %s", source, report)
    if report.missing:
        log.info("%s: not in checkpoint (newly initialised): %s", source, _names(report.missing))
    if report.unexpected:
        log.info("%s: in checkpoint but unused: %s", source, _names(report.unexpected))
    return report


# ------------------------------------------------------------------- strict loading for the official architectures


def load_strict(
    model: nn.Module, pretrained: str | Path, *, fill_missing: Sequence[str] = (), source: str | None = None
) -> None:
    """Load `pretrained` into `model` with exact key and shape matching, or raise WeightsError naming keys.

    pretrained: a .safetensors/.pth/.pt file, a snapshot folder (model.safetensors ...), or a hub id; read
    with `restorebench.models.weights.read_state_dict` (safetensors first, else torch.load with
    weights_only=True; containers params_ema > params > state_dict > model are unwrapped, "module." is
    stripped). Note: the official test code loads "params" (BasicSR `param_key` default "params";
    Restormer's test scripts `checkpoint["params"]`), while `read_state_dict` prefers "params_ema" when a
    file holds both; the two agree for files that hold only "params".
    fill_missing: names of deterministic buffers that may be absent from a checkpoint and are then kept.
    """
    path = resolve_pretrained(pretrained)
    sd = read_state_dict(path)
    own = model.state_dict()
    for k in fill_missing:
        if k in own and k not in sd:
            sd[k] = own[k]
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    wrong = [
        f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(v.shape)}"
        for k, v in own.items()
        if k in sd and tuple(sd[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or wrong:
        parts = []
        if wrong:
            parts.append(f"{len(wrong)} wrong shape: " + "; ".join(wrong[:5]))
        if missing:
            parts.append(f"{len(missing)} missing: " + ", ".join(missing[:5]))
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected: " + ", ".join(unexpected[:5]))
        raise WeightsError(
            f"{source or path}: checkpoint does not match {type(model).__name__} exactly (wrong variant or "
            f"constructor arguments?): " + " | ".join(parts)
        )
    model.load_state_dict(sd, strict=True)
    log.info("%s: loaded all %d tensors strictly", source or path, len(own))


def resolve_kwargs(
    variants: dict[str, dict],
    default: str,
    variant: str | None,
    kwargs: dict,
    allowed: Sequence[str],
    model: str,
    pretrained: str | Path | None = None,
) -> dict:
    """The variant's config (default variant when None) overridden by kwargs; unknown keys fail loudly.

    When `pretrained` is a snapshot folder whose config.json names a "variant" and/or architecture keywords,
    those fill in what the call leaves unset (other config.json entries are ignored).
    """
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise TypeError(f"{model}: unknown keyword argument(s) {unknown}; allowed: {list(allowed)}")
    if pretrained is not None and (Path(pretrained) / "config.json").is_file():
        snap = json.loads((Path(pretrained) / "config.json").read_text())
        if isinstance(snap, dict):
            variant = variant if variant is not None else snap.get("variant")
            kwargs = {**{k: v for k, v in snap.items() if k in allowed}, **kwargs}
    name = default if variant is None else variant
    if name not in variants:
        raise ValueError(f"{model}: unknown variant {name!r}; choose from {list(variants)}")
    cfg = dict(variants[name])
    cfg.update(kwargs)
    return cfg
