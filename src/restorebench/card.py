"""What a finetuned run folder says about itself: config.json, the weights' metadata and the model card.

runs/finetune/{task}/{model}/{cell}/
  model.safetensors  the weights; its header metadata repeats config.json (strings), so a copied file alone
                     still says what it is
  config.json        {"format": FORMAT, "model", "variant", "kwargs", "task", "cell", ...}: enough for
                     `build_model(pretrained=<folder>)` and `restorebench restore` to rebuild the exact
                     architecture and load the weights strictly
  README.md          the model card (written by evaluate): how it was trained (profile, steps, data, learning
                     rate, time, from train.json), the protocol scores beside the task's identity floor, and a
                     warning first when these are demo weights (demo_warning); `restorebench restore` prints
                     the same facts (run_facts)
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


def run_facts(run_dir: str | Path, root: str | Path | None = None) -> dict:
    """What the model card and `restorebench restore` state about a finetuned run folder:
    {"config": config.json (or the weights' metadata), "train": train.json ({} when absent), "scores": the cell's
    metrics (metrics/finetune/{task}/{model}/{cell}.json) or None, "images": how many images they cover,
    "floor": the task's identity floor (the degraded input scored by the same protocol:
    metrics/finetune/{task}/identity/none.json) or None, "floor_images", "floor_path"}.
    `root`: the project holding metrics/ (default: the folder above runs/ when run_dir is
    runs/finetune/T/M/C; else the scores and floor are unknown, None)."""
    run_dir = Path(run_dir)
    folder = run_dir if run_dir.is_dir() else run_dir.parent
    config = read_run_config(run_dir) or {}
    facts: dict = {"config": config, "train": _json(folder / "train.json") or {}, "scores": None, "images": None,
                   "floor": None, "floor_images": None, "floor_path": None}  # fmt: skip
    if root is None:
        parts = folder.resolve().parts
        root = folder.resolve().parents[4] if len(parts) > 5 and parts[-5:-3] == ("runs", "finetune") else None
    if root is None or not {"task", "model", "cell"} <= set(config):
        return facts
    metrics, results = Path(root) / "metrics" / "finetune" / config["task"], Path(root) / "results" / "eval" / config["task"]
    facts["scores"] = _json(metrics / config["model"] / f"{config['cell']}.json")
    facts["images"] = (_json(results / config["model"] / config["cell"] / "provenance.json") or {}).get("images")
    facts["floor_path"] = f"metrics/finetune/{config['task']}/identity/none.json"
    facts["floor"] = _json(metrics / "identity" / "none.json")
    facts["floor_images"] = (_json(results / "identity" / "none" / "provenance.json") or {}).get("images")
    return facts


def _json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


# A run trained for under this share of its model's published recipe is demo weights too.
DEMO_SHARE = 0.1


def demo_warning(facts: dict, recipe_steps: int | None = None) -> str | None:
    """One line when the run is demo weights: trained under the demo profile, or for under DEMO_SHARE of
    `recipe_steps` (its model's published recipe on its task, when the caller knows it); else None."""
    profile, steps = facts["config"].get("profile"), facts["train"].get("steps")
    trained = f"{steps} training steps" if steps is not None else "training"
    if profile == "demo":
        why = f"{trained} under the demo profile"
    elif recipe_steps and steps is not None and steps < DEMO_SHARE * recipe_steps:
        why = f"{trained} of the published recipe's {recipe_steps}"
    else:
        return None
    return f"demo weights ({why}): they show that the pipeline runs end to end; they are not a real restorer"


def _duration(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def training_lines(facts: dict) -> list[tuple[str, str]]:
    """(what, value) of the run's training, from its config.json and train.json; "not recorded" where an
    older train.json lacks a field."""
    c, t = facts["config"], facts["train"]
    missing = "not recorded"
    data = missing
    if t.get("train_images") is not None:
        data = (f"{t.get('dataset', c.get('task'))} training set: {t['train_images']} image pairs "
                f"({t.get('train_subimages', '?')} sub-images), {t.get('holdout_images', 0)} held out for val/psnr")  # fmt: skip
    lr = f"{t['lr']:.3g} peak ({t.get('lr_schedule', 'schedule not recorded')})" if t.get("lr") is not None else missing
    time = missing
    if t.get("train_seconds") is not None:
        time = f"{_duration(t['train_seconds'])} on {t.get('device', '?')}" + (
            f" x{t['gpus']}" if (t.get("gpus") or 1) > 1 else "")  # fmt: skip
    return [("profile", f"`{c.get('profile', '?')}`"), ("steps", str(t.get("steps", missing))), ("data", data),
            ("learning rate", lr), ("training time", time), ("init", str(c.get("init", missing)))]  # fmt: skip


def floor_text(facts: dict) -> str:
    """The task's identity floor (the degraded input scored by the same protocol) beside the cell's PSNR:
    `30.90 dB on the same 8 images (this cell +0.13 dB)`, or why it cannot be stated (never a guess)."""
    floor, scores = facts["floor"], facts["scores"]
    if floor is None or "psnr" not in floor:
        where = facts["floor_path"] or f"metrics/finetune/{facts['config'].get('task', 'TASK')}/identity/none.json"
        return (f"not known: {where} not found (`restorebench evaluate --task {facts['config'].get('task', 'TASK')} "
                "--model identity` writes it)")  # fmt: skip
    n, m = facts["images"], facts["floor_images"]
    if n is not None and m is not None and n != m:
        return f"{floor['psnr']:.2f} dB, but on {m} images, not this cell's {n}: not comparable"
    text = f"{floor['psnr']:.2f} dB" + (f" on the same {n} image{'s' if n != 1 else ''}" if n is not None else "")
    if scores and "psnr" in scores:
        text += f" (this cell {scores['psnr'] - floor['psnr']:+.2f} dB)"
    return text


def model_card(config: dict, scores: dict | None = None, provenance: dict | None = None,
               facts: dict | None = None, recipe_steps: int | None = None) -> str:  # fmt: skip
    """A short Markdown model card: what the run is, how it was trained (profile, steps, data, learning rate,
    time), how it scored beside the task's identity floor, how to use it; demo weights say so first.
    `facts`: run_facts (default: the config alone, nothing known of the training or the floor)."""
    c, run = config, f"runs/finetune/{config['task']}/{config['model']}/{config['cell']}"
    facts = dict(facts or {"train": {}, "floor": None, "floor_images": None, "floor_path": None, "images": None})
    facts.update(config=config, scores=scores)
    if facts.get("images") is None and provenance:
        facts["images"] = provenance.get("images")
    lines = [f"# {c['model']} ({c['variant']}) for {c['task']}, cell {c['cell']}", ""]
    warning = demo_warning(facts, recipe_steps)
    if warning:
        lines += [f"> **Warning: {warning}.**", ""]
    lines += [
        f"A restorebench grid cell: `{c['model']}` at variant `{c['variant']}`, finetuned for `{c['task']}` with the "
        f"`{c['strategy']}` strategy from {c['init']} (restoration pretraining: `{c['pretrain']}`), seed {c['seed']}, "
        f"loss `{c['loss']}`, profile `{c['profile']}`.",
        "",
        f"- params hash: `{c['params_hash']}`",
        f"- git revision: `{c['git_revision']}`",
    ]
    if provenance and provenance.get("checkpoint_sha256"):
        lines.append(f"- model.safetensors sha256: `{provenance['checkpoint_sha256']}`")
    lines += ["", "## Training", "", "| | |", "|---|---|"]
    lines += [f"| {what} | {value} |" for what, value in training_lines(facts)]
    lines += ["", "## Scores (the task's published protocol)", ""]
    if scores:
        images = facts["images"] if facts["images"] is not None else ""
        lines += ["| PSNR (dB) | SSIM (matlab3d) | SSIM (basicsr) | images |", "|---|---|---|---|",
                  f"| {scores['psnr']:.3f} | {scores['ssim_matlab3d']:.4f} | {scores['ssim_basicsr']:.4f} | {images} |",
                  "", f"Identity floor (the degraded input, scored by the same protocol): {floor_text(facts)}."]  # fmt: skip
    else:
        lines.append("Not evaluated yet: `restorebench evaluate` writes the scores here.")
    lines += ["", "## Use", "", f"    restorebench restore INPUT OUTPUT --weights {run}",
              "", "    from restorebench.models import build_model",
              f"    net = build_model(pretrained=\"{run}\")  # the exact architecture, weights loaded strictly", ""]
    return "\n".join(lines)


def write_model_card(run_dir: Path, scores: dict | None = None, provenance: dict | None = None,
                     recipe_steps: int | None = None) -> bool:  # fmt: skip
    """Write run_dir/README.md from its config.json, train.json and the project's metrics (run_facts; the
    identity floor's metrics file must be there already: the evaluate_identity stage); False (nothing
    written) when there is no config.json. `recipe_steps`: see demo_warning."""
    config = read_run_config(run_dir)
    if config is None:
        return False
    facts = run_facts(run_dir)
    io.write_text(run_dir / "README.md", model_card(config, scores, provenance, facts, recipe_steps))
    return True
