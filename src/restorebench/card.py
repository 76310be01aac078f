"""What a finetuned run folder says about itself: config.json, the weights' metadata and the model card.

runs/finetune/{task}/{model}/{cell}/
  model.safetensors  the weights; its header metadata repeats config.json (strings), so a copied file alone
                     still says what it is
  config.json        {"format": FORMAT, "model", "variant", "kwargs", "task", "cell", ...}: enough for
                     `build_model(pretrained=<folder>)` and `restorebench restore` to rebuild the exact
                     architecture and load the weights strictly
  README.md          the model card (written by evaluate, with the protocol scores)
"""

from __future__ import annotations

import json
from pathlib import Path

from restorebench import io

FORMAT = "restorebench-finetuned/1"
_JSON_FIELDS = ("kwargs", "seed")  # the run config's non-string fields, JSON-encoded in the weights' metadata


def run_config(*, model: str, variant: str, kwargs: dict, task: str, cell: str, strategy: str, pretrain: str,
               seed: int, init: str, loss: str, profile: str, params_hash: str, git_revision: str) -> dict:  # fmt: skip
    """The config.json of a finetuned run (`kwargs`: the architecture's keyword arguments beyond the variant)."""
    return {"format": FORMAT, "model": model, "variant": variant, "kwargs": kwargs, "task": task, "cell": cell,
            "strategy": strategy, "pretrain": pretrain, "seed": seed, "init": init, "loss": loss,
            "profile": profile, "params_hash": params_hash, "git_revision": git_revision}  # fmt: skip


def safetensors_metadata(config: dict) -> dict[str, str]:
    """config as safetensors header metadata (string values only; dicts and lists as JSON)."""
    return {k: v if isinstance(v, str) else json.dumps(v, sort_keys=True) for k, v in config.items()}


def read_run_config(path: str | Path) -> dict | None:
    """The run config of a finetuned run folder, or of a weights file (its folder's config.json, else the
    file's own header metadata); None when it is not one (a hub snapshot, a bare checkpoint)."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    cfg_file = folder / "config.json"
    if cfg_file.is_file():
        try:
            data = json.loads(cfg_file.read_text())
        except json.JSONDecodeError:
            data = None
        if isinstance(data, dict) and data.get("format") == FORMAT:
            return _checked(cfg_file, data, decode=False)
    if path.is_file() and path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
        except Exception:  # not readable as safetensors: the caller's loader says why
            return None
        if meta.get("format") == FORMAT:
            return _checked(path, meta, decode=True)
    return None


def _checked(path: Path, meta: dict, *, decode: bool) -> dict:
    """A run config (config.json, or a weights file's header metadata with its JSON fields decoded when
    `decode`): `model` and `variant` present, `kwargs` a mapping; anything else is a RestorebenchError
    naming the file and the key."""
    from restorebench.errors import RestorebenchError

    config: dict = dict(meta)
    for key in _JSON_FIELDS if decode else ():
        if key in meta:
            try:
                config[key] = json.loads(meta[key])
            except json.JSONDecodeError as err:
                raise RestorebenchError(path, f"header metadata {key!r} is not valid JSON ({err})",
                                        "the file was edited or cut; use the run folder's own copy") from None
    missing = [k for k in ("model", "variant") if not isinstance(config.get(k), str)]
    if missing:
        raise RestorebenchError(path, f"run config has no {missing[0]!r} key; it cannot say which "
                                      "architecture it is", "use the run folder (with its config.json)")  # fmt: skip
    if not isinstance(config.get("kwargs", {}), dict):
        raise RestorebenchError(path, "run config 'kwargs' is not a mapping of architecture keywords")
    return config


def write_run_config(run_dir: Path, config: dict) -> None:
    io.write_json(run_dir / "config.json", config)


def model_card(config: dict, scores: dict | None = None, provenance: dict | None = None) -> str:
    """A short Markdown model card: what the run is, how it was trained, how it scored, how to use it."""
    c, run = config, f"runs/finetune/{config['task']}/{config['model']}/{config['cell']}"
    lines = [
        f"# {c['model']} ({c['variant']}) for {c['task']}, cell {c['cell']}",
        "",
        f"A restorebench grid cell: `{c['model']}` at variant `{c['variant']}`, finetuned for `{c['task']}` with the "
        f"`{c['strategy']}` strategy from {c['init']} (restoration pretraining: `{c['pretrain']}`), seed {c['seed']}, "
        f"loss `{c['loss']}`, profile `{c['profile']}`.",
        "",
        f"- params hash: `{c['params_hash']}`",
        f"- git revision: `{c['git_revision']}`",
    ]
    if provenance and provenance.get("checkpoint_sha256"):
        lines.append(f"- model.safetensors sha256: `{provenance['checkpoint_sha256']}`")
    lines += ["", "## Scores (the task's published protocol)", ""]
    if scores:
        images = (provenance or {}).get("images", "")
        lines += ["| PSNR (dB) | SSIM (matlab3d) | SSIM (basicsr) | images |", "|---|---|---|---|",
                  f"| {scores['psnr']:.3f} | {scores['ssim_matlab3d']:.4f} | {scores['ssim_basicsr']:.4f} | {images} |"]
    else:
        lines.append("Not evaluated yet: `restorebench evaluate` writes the scores here.")
    lines += ["", "## Use", "", f"    restorebench restore INPUT OUTPUT --weights {run}",
              "", "    from restorebench.models import build_model",
              f"    net = build_model(pretrained=\"{run}\")  # the exact architecture, weights loaded strictly", ""]
    return "\n".join(lines)


def write_model_card(run_dir: Path, scores: dict | None = None, provenance: dict | None = None) -> bool:
    """Write run_dir/README.md from its config.json; False (nothing written) when there is no config.json."""
    config = read_run_config(run_dir)
    if config is None:
        return False
    io.write_text(run_dir / "README.md", model_card(config, scores, provenance))
    return True
