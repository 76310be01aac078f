"""Typed configuration: params.yaml (+ overrides) -> one resolved, validated `Config`.

params.yaml has a few top-level keys that both orchestrators read (`profile`, the grid lists, `seed`)
and a `profiles` mapping whose sections hold everything that differs between the demo and the paper-scale
run. The active profile's section is merged over the dataclass defaults; every profile is checked on load,
so a typo in `paper` fails even while `demo` is active.

Errors name the key's path, the bad value and the allowed values, with a did-you-mean.

The schema (one dataclass per section, restorebench.schema) and the value checks (restorebench.bounds) live
in their own modules; their public names are importable from here too.
"""

from __future__ import annotations

import functools
import hashlib
import json
import pickle
import types
import typing
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf

from restorebench.bounds import Bounds, ConfigError, bounded, check_bounds, check_choice, did_you_mean
from restorebench.schema import (
    COMPILE_MODES,
    DATASETS,
    LOSS_NAMES,
    MODEL_NAMES,
    OPTIMIZERS,
    OPTIONAL_TOP_LEVEL,
    PRETRAIN_METHODS,
    REQUIRED_PRETRAIN_METHODS,
    SCHEDULES,
    STRATEGIES,
    TASK_DATASET,
    TASKS,
    TOP_LEVEL,
    Config,
    CropConfig,
    DataConfig,
    DatasetConfig,
    DCPTPretrainConfig,
    DegradeConfig,
    EvalConfig,
    IPTPretrainConfig,
    ModelTrainConfig,
    PrepareConfig,
    PretrainConfig,
    PretrainRunConfig,
    ProfileConfig,
    SampleConfig,
    StageConfig,
    TrainConfig,
    cell_name,
    check_recipe,
    merge_over,
    resolve_recipe,
)  # fmt: skip

# the public names of the schema and the checks, importable from here as before the split
__all__ = [
    "COMPILE_MODES", "DATASETS", "LOSS_NAMES", "MODEL_NAMES", "OPTIMIZERS", "PRETRAIN_METHODS", "SCHEDULES",
    "STRATEGIES", "TASK_DATASET", "TASKS", "Bounds", "Config", "ConfigError", "CropConfig", "DataConfig",
    "DatasetConfig", "DCPTPretrainConfig", "DegradeConfig", "EvalConfig", "IPTPretrainConfig", "ModelTrainConfig",
    "PrepareConfig", "PretrainConfig", "PretrainRunConfig", "ProfileConfig", "SampleConfig", "StageConfig",
    "TrainConfig", "bounded", "cell_name", "check_bounds", "check_choice", "check_recipe", "did_you_mean",
    "load_config", "raw_params", "read_params", "resolve", "resolve_recipe",
]  # fmt: skip

# ---------------------------------------------------------------------------------------------- loading


def _merge_profile(name: str, section: Any) -> ProfileConfig:
    """Merge one profile section over the defaults, turning OmegaConf's errors into named ones."""
    base = OmegaConf.structured(ProfileConfig)
    if section is None:
        section = {}
    if not isinstance(section, dict):
        raise ConfigError(f"profiles.{name}: expected a mapping, got {type(section).__name__}")
    _check_keys(ProfileConfig, section, f"profiles.{name}")
    return merge_over(base, section, f"profiles.{name}", ProfileConfig)


def _check_keys(schema: Any, section: dict, path: str) -> None:
    """Walk a user section against the schema's types: unknown keys fail with the allowed keys listed and a
    did-you-mean, in every dataclass, including those held in mappings (train.models.<model>)."""
    if is_dataclass(schema):
        hints = typing.get_type_hints(schema)
        allowed = [f.name for f in fields(schema)]
        for key, value in section.items():
            if key not in allowed:
                raise ConfigError(
                    f"{path}.{key}: unknown key; allowed keys are {sorted(allowed)}{did_you_mean(key, allowed)}"
                )
            _check_value(hints[key], value, f"{path}.{key}")
    elif typing.get_origin(schema) is dict:
        item_type = typing.get_args(schema)[1]
        for key, value in section.items():
            _check_value(item_type, value, f"{path}.{key}")


def _check_value(schema: Any, value: Any, path: str) -> None:
    """One value against its declared type's shape (mapping / list / scalar); mappings are walked."""
    origin = typing.get_origin(schema)
    if origin in (typing.Union, types.UnionType):  # X | None: a value given is checked as X
        args = [a for a in typing.get_args(schema) if a is not type(None)]
        if len(args) == 1 and value is not None:
            return _check_value(args[0], value, path)
    mapping = is_dataclass(schema) or origin is dict
    if isinstance(value, dict):
        if mapping:
            _check_keys(schema, value, path)
        elif origin is not typing.Union and schema is not Any and not (
            isinstance(schema, type) and issubclass(schema, dict)
        ):
            raise ConfigError(f"{path}: expected a {getattr(schema, '__name__', schema)}, got a mapping")
    elif value is not None and (mapping or origin is list):
        want = "mapping" if mapping else "list"
        if not (want == "list" and isinstance(value, list)):
            raise ConfigError(f"{path}: expected a {want}, got {value!r}")


def _apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply `a.b.c=value` overrides (values parsed as YAML) to the raw params mapping."""
    out = json.loads(json.dumps(raw))
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected KEY=VALUE, e.g. profile=paper")
        key, text = item.split("=", 1)
        value = yaml.safe_load(text) if text != "" else ""
        parts = key.strip().split(".")
        node = out
        for i, part in enumerate(parts[:-1]):
            nxt = node.get(part)
            if nxt is None:
                nxt = node[part] = {}
            if not isinstance(nxt, dict):
                raise ConfigError(f"override {key}: {'.'.join(parts[: i + 1])} is not a mapping")
            node = nxt
        node[parts[-1]] = value
    return out


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last silently; DVC,
    reading the same file, refuses it)."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise ConfigError(f"{self.name}:{line}", f"duplicate key {key!r} (first at line {seen[key]})",
                                  "keep one of them")  # fmt: skip
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def read_params(path: str | Path = "params.yaml") -> dict:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: params file not found (run from the project root or pass --params)")
    if not path.is_file():
        raise ConfigError(path, "not a file", "pass --params the params YAML file, e.g. params.yaml")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(path, f"not UTF-8 text (byte {err.start})", "save the params file as UTF-8") from None
    try:
        loader = _UniqueKeyLoader(text)
        loader.name = str(path)
        try:
            raw = loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return raw


def _check_grid(grid: dict, at: str) -> None:
    """The grid lists (top-level, or a profile's declared `grid` over them; `at` prefixes the key names)."""
    for key, allowed in (("models", MODEL_NAMES), ("strategies", STRATEGIES), ("pretrain_strategies", STRATEGIES)):
        for i, value in enumerate(grid[key]):
            check_choice(f"{at}{key}[{i}]", value, allowed)
    _check_pretrain_models(grid["pretrain_models"], grid["models"], at)


def profile_overrides(raw: dict, name: str) -> list[str]:
    """Profile NAME with the grid it declares, as overrides (KEY=VALUE): `profile=NAME` and each list of
    profiles.NAME.grid (`restorebench --profile NAME`, and what `restorebench profile NAME` writes)."""
    profiles = raw.get("profiles")
    if not isinstance(profiles, dict):
        raise ConfigError("profiles: missing top-level key")
    check_choice("profile", name, list(profiles))
    grid = _merge_profile(name, profiles[name]).grid.declared()
    return [f"profile={name}"] + [f"{key}={json.dumps(value)}" for key, value in grid.items()]


def _check_pretrain_models(pretrain_models: dict, models: list[str], at: str = "") -> None:
    """pretrain_models maps each restoration pretraining to the models finetuned from it. IPT trains the ipt
    model only; DCPT and the scratch control any model of the grid (a subset of `models`, so that cutting
    `models` for a sweep cannot leave cells of models the sweep dropped). `scratch` may be left out."""
    methods = [m for m in PRETRAIN_METHODS if m != "none"]
    for method, listed in pretrain_models.items():
        check_choice(f"{at}pretrain_models.{method}", method, methods)
        if not isinstance(listed, list):
            raise ConfigError(f"{at}pretrain_models.{method}: expected a list of models ([] turns it off), got {listed!r}")
        allowed = ["ipt"] if method == "ipt" else list(models)
        for i, model in enumerate(listed):
            if method != "ipt" and model in MODEL_NAMES and model not in models:
                raise ConfigError(f"{at}pretrain_models.{method}[{i}]: {model!r} is not in `models` {models}; "
                                  f"{method} cells are a subset of the grid's models (drop it here too)")
            check_choice(f"{at}pretrain_models.{method}[{i}]", model, allowed)
    for method in REQUIRED_PRETRAIN_METHODS:
        if method not in pretrain_models:
            raise ConfigError(f"{at}pretrain_models.{method}: missing; list the models finetuned from it ([] for none)")


def _check_scratch(pretrain_models: dict, profiles: dict[str, ProfileConfig]) -> None:
    """The scratch control drops a model's segmentation checkpoint: it means something only where the
    model's `pretrained` names one, in every profile (a null entry already trains from a seeded random init,
    as the plain cells)."""
    for i, model in enumerate(pretrain_models.get("scratch", [])):
        for name, prof in profiles.items():
            if prof.pretrained.get(model) is None:
                raise ConfigError(f"pretrain_models.scratch[{i}]",
                                  f"{model!r} has no checkpoint in profiles.{name}.pretrained (null: its plain "
                                  "cells already start from a seeded random init)",
                                  f"drop {model} from pretrain_models.scratch, or name its checkpoint there")


SPLITS = ("train", "val", "test")


def _check_relations(prof: ProfileConfig, at: str) -> None:
    """Checks between fields, and names that refer to other keys (each with a did-you-mean)."""
    for ds in DATASETS:
        d = getattr(prof.data, ds)
        for key in ("expected_pairs", "expected_groups"):
            for split in getattr(d, key):
                check_choice(f"{at}.data.{ds}.{key}.{split}", split, SPLITS)
    e, t = prof.evaluate, prof.train
    if e.tile is not None and e.overlap >= e.tile:
        raise ConfigError(f"{at}.evaluate.overlap: must be < evaluate.tile ({e.tile}), got {e.overlap}")
    for ds in ("sidd", "gopro"):
        crop = getattr(prof.prepare, ds)
        if crop.step > crop.size:
            raise ConfigError(f"{at}.prepare.{ds}.step: must be <= prepare.{ds}.size ({crop.size}) so that "
                              f"sub-images cover the image, got {crop.step}")
    if t.batch % t.accumulate:
        raise ConfigError(f"{at}.train.batch: must be a multiple of train.accumulate ({t.accumulate}), got {t.batch}")
    for model, recipe in t.models.items():
        if recipe.min_lr > recipe.lr:
            raise ConfigError(f"{at}.train.models.{model}.min_lr: must be <= its lr ({recipe.lr:g}), "
                              f"got {recipe.min_lr:g}")
    _check_degradations(prof, at)


def _check_degradations(prof: ProfileConfig, at: str) -> None:
    """degrade.tasks pipelines name known degradations with known parameters; the pretraining sections name
    degrade tasks that exist; IPT's heads name IPT tasks."""
    from restorebench.degrade.chain import DEGRADATIONS, allowed_params

    tasks = prof.degrade.tasks
    for task, spec in tasks.items():
        where = f"{at}.degrade.tasks.{task}"
        if not isinstance(spec, list):
            raise ConfigError(f"{where}: expected a list of steps like [{{name: gaussian_noise, sigma: 30}}]")
        for i, step in enumerate(spec):
            if not isinstance(step, dict) or "name" not in step:
                raise ConfigError(f"{where}[{i}]: each step is a mapping with a 'name' key, got {step!r}")
            check_choice(f"{where}[{i}].name", step["name"], sorted(DEGRADATIONS))
            allowed = allowed_params(step["name"])
            for key in step:
                if key != "name":
                    check_choice(f"{where}[{i}].{key}", key, allowed)
    if tasks:  # an empty mapping: the profile builds no degraded store, nothing to refer to
        for i, name in enumerate(prof.pretrain.dcpt.degradations):
            check_choice(f"{at}.pretrain.dcpt.degradations[{i}]", name, list(tasks))
        for head, task in prof.pretrain.ipt.tasks.items():
            check_choice(f"{at}.pretrain.ipt.tasks.{head}", task, list(tasks))
    for task, head in prof.pretrain.ipt.heads.items():
        check_choice(f"{at}.pretrain.ipt.heads.{task}", task, TASKS)
        if head is not None:
            check_choice(f"{at}.pretrain.ipt.heads.{task}", head, list(prof.pretrain.ipt.tasks))


def raw_params(path: str | Path = "params.yaml", overrides: list[str] | None = None) -> dict:
    """params.yaml as a mapping, with `overrides` (KEY=VALUE) applied; not yet validated (see resolve)."""
    return _apply_overrides(read_params(path), overrides or [])


def load_config(path: str | Path = "params.yaml", overrides: list[str] | None = None) -> Config:
    """Read params.yaml, apply overrides, validate every profile, return the active one resolved.

    Validating both profiles with OmegaConf takes about a second, which every pipeline job would pay (60 in
    the demo, two at a time on a 2-core machine: ~30 s of its wall time). So a resolved Config is kept in
    `.restorebench/config/` beside the params file, named by the sha256 of the file's bytes, the overrides
    and the sources that resolve it (this module, the schema, the bounds, the model registry): any change to
    one of them is another name, so a kept result is never stale. A file that fails validation is never
    kept; an unreadable or damaged entry is resolved again."""
    path = Path(path)
    overrides = list(overrides or [])
    try:
        key = hashlib.sha256(path.read_bytes() + json.dumps(overrides).encode() + _resolver_digest()).hexdigest()
    except OSError:  # a missing or unreadable file: read_params says which
        return resolve(raw_params(path, overrides))
    kept = path.parent / CONFIG_CACHE / f"{key}.pickle"
    try:
        cfg = pickle.loads(kept.read_bytes())  # written by this function only (the project's own folder)
        if isinstance(cfg, Config):
            return cfg
    except Exception:  # absent, or damaged: resolve again  # noqa: BLE001
        pass
    cfg = resolve(raw_params(path, overrides))
    try:
        from restorebench import io

        with io.atomic_path(kept, suffix=".pickle") as tmp:
            tmp.write_bytes(pickle.dumps(cfg))
    except OSError:  # a read-only project: resolving each time is only slower
        pass
    return cfg


CONFIG_CACHE = ".restorebench/config"  # git ignores .restorebench/ (load_config)


@functools.cache
def _resolver_digest() -> bytes:
    """sha256 of the sources whose code turns a params file into a Config."""
    here = Path(__file__).parent
    files = ("config.py", "schema.py", "bounds.py", "errors.py", "models/__init__.py")
    return hashlib.sha256(b"".join((here / name).read_bytes() for name in files)).digest()


def resolve(raw: dict) -> Config:
    for key, value in raw.items():
        if key not in TOP_LEVEL:
            raise ConfigError(
                f"{key}: unknown top-level key; allowed keys are {sorted(TOP_LEVEL)}{did_you_mean(key, list(TOP_LEVEL))}"
            )
        want = TOP_LEVEL[key]
        if not isinstance(value, want) or (want is int and isinstance(value, bool)):
            raise ConfigError(f"{key}: expected {want.__name__}, got {value!r}")
    for key in TOP_LEVEL:
        if key not in raw and key not in OPTIONAL_TOP_LEVEL:
            raise ConfigError(f"{key}: missing top-level key")
    profiles = raw["profiles"]
    resolved = {name: _merge_profile(name, section) for name, section in profiles.items()}
    check_choice("profile", raw["profile"], list(resolved))
    for i, value in enumerate(raw["datasets"]):
        check_choice(f"datasets[{i}]", value, DATASETS)
    for i, value in enumerate(raw["tasks"]):
        check_choice(f"tasks[{i}]", value, TASKS)
    _check_grid(raw, "")
    for name, prof in resolved.items():
        _check_grid({**raw, **prof.grid.declared()}, f"profiles.{name}.grid.")
    seeds = raw.get("seeds")
    if seeds is not None and (not seeds or not all(isinstance(v, int) and not isinstance(v, bool) for v in seeds)
                              or len(set(seeds)) != len(seeds)):
        raise ConfigError("seeds", f"expected a list of distinct integers, got {seeds!r}",
                          "e.g. seeds: [0, 1, 2]; leave it out to train each cell once with `seed`")
    for name, prof in resolved.items():
        for model, per_task in prof.variants.items():
            check_choice(f"profiles.{name}.variants.{model}", model, MODEL_NAMES)
            for task in per_task:
                check_choice(f"profiles.{name}.variants.{model}.{task}", task, TASKS)
        for model in prof.pretrained:
            check_choice(f"profiles.{name}.pretrained.{model}", model, MODEL_NAMES)
        for model, per_task in prof.official.items():
            check_choice(f"profiles.{name}.official.{model}", model, MODEL_NAMES)
            for task in per_task:
                check_choice(f"profiles.{name}.official.{model}.{task}", task, TASKS)
        missing = [m for m in MODEL_NAMES if m not in prof.pretrained]
        if missing:
            raise ConfigError(f"profiles.{name}.pretrained: no entry for {missing}; give each model a checkpoint "
                              "or null (a seeded random init), since DVC tracks each model's entry")
        for model, recipe in prof.train.models.items():
            where = f"profiles.{name}.train.models.{model}"
            check_choice(where, model, MODEL_NAMES)
            for task in recipe.tasks:
                check_choice(f"{where}.tasks.{task}", task, TASKS)
            for task in [None, *recipe.tasks]:
                at = where if task is None else f"{where}.tasks.{task}"
                resolved_recipe = resolve_recipe(recipe, task, where)
                check_bounds(resolved_recipe, at)
                check_recipe(resolved_recipe, at)
        check_bounds(prof, f"profiles.{name}")
        _check_relations(prof, f"profiles.{name}")
    # (a declared grid's scratch list is checked where it is applied: `restorebench profile`, `--profile`)
    _check_scratch(raw["pretrain_models"], resolved)
    active = resolved[raw["profile"]]
    return Config(
        profile=raw["profile"],
        seed=raw["seed"],
        datasets=list(raw["datasets"]),
        tasks=list(raw["tasks"]),
        models=list(raw["models"]),
        strategies=list(raw["strategies"]),
        pretrain_models={k: list(v) for k, v in raw["pretrain_models"].items()},
        pretrain_strategies=list(raw["pretrain_strategies"]),
        **{f.name: getattr(active, f.name) for f in fields(ProfileConfig)},
        seeds=list(seeds) if seeds is not None else None,
    )


def use_profile(path: str | Path, name: str) -> list[str]:
    """Set params file PATH to profile NAME and the grid it declares (`restorebench profile NAME`): the
    `profile` key and each top-level grid list are rewritten in place, as flow lists, and every other byte of
    the file (comments, anchors, layout) is kept. The result is validated before the file is replaced
    (atomically). Returns the keys whose value changed."""
    from restorebench import io

    path = Path(path)
    text = path.read_text(encoding="utf-8")
    raw = read_params(path)
    resolve(raw)  # a bad file (its profiles' grids too) fails here with the key, before any write
    overrides = profile_overrides(raw, name)
    try:
        resolve(_apply_overrides(raw, overrides))
    except ConfigError as err:  # a check only the applied grid meets (its scratch controls' checkpoints)
        raise ConfigError(f"{path}: profiles.{name}.grid, set as the top-level lists, fails: {err}") from None
    top = {key.value: (key, value) for key, value in yaml.compose(text).value}
    edits: list[tuple[int, int, str]] = []  # (start, end, new text) spans of `text`
    changed = []
    for item in overrides:
        key, value_text = item.split("=", 1)
        value = yaml.safe_load(value_text)
        if raw.get(key) == value:
            continue
        changed.append(key)
        if not isinstance(value, dict):
            node = top[key][1]
            edits.append((node.start_mark.index, node.end_mark.index, _flow(value)))
            continue
        node = top[key][1]  # pretrain_models: a mapping of lists; each list replaced, cut or added
        if not isinstance(node, yaml.MappingNode) or node.flow_style:
            edits.append((node.start_mark.index, node.end_mark.index, _flow(value)))
            continue
        entries = {k.value: (k, v) for k, v in node.value}
        for method, (k, v) in entries.items():
            if method not in value:  # the whole line goes
                start = text.rfind("\n", 0, k.start_mark.index) + 1
                end = text.find("\n", v.end_mark.index)
                edits.append((start, len(text) if end < 0 else end + 1, ""))
            elif yaml.safe_load(text[v.start_mark.index:v.end_mark.index]) != value[method]:
                edits.append((v.start_mark.index, v.end_mark.index, _flow(value[method])))
        indent = " " * (node.value[0][0].start_mark.column if node.value else 2)
        added = "".join(f"\n{indent}{m}: {_flow(v)}" for m, v in value.items() if m not in entries)
        if added:
            last = node.value[-1][1].end_mark.index if node.value else node.start_mark.index
            edits.append((last, last, added))
    for start, end, new in sorted(edits, reverse=True):
        text = text[:start] + new + text[end:]
    if yaml.safe_load(text) != _apply_overrides(raw, overrides):  # the rewrite says exactly what was meant
        raise ConfigError(path, f"could not rewrite the grid lists for profile {name} in place",
                          f"set them by hand: restorebench --profile {name} config show prints them")
    if changed:
        with io.atomic_path(path, suffix=".yaml") as tmp:
            tmp.write_text(text, encoding="utf-8")
    return changed


def _flow(value: Any) -> str:
    """A name, a list of names or a mapping of lists as one line of YAML (flow style)."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_flow(v)}" for k, v in value.items()) + "}"
    return "[" + ", ".join(str(v) for v in value) + "]"
