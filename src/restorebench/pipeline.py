"""THE definition of the pipeline: the cells of the grid, every artifact path, and for each stage its
command, inputs, outputs, params keys and source files. Snakemake (Snakefile, workflow/rules) imports this
module; dvc.yaml is generated from it (`restorebench pipeline dvc > dvc.yaml`, a test compares).

    pipe = pipeline.load("params.yaml")        # params + overrides, validated by restorebench.config
    pipe.cells()                                # the grid, in params order
    pipe.stages()                               # every stage both orchestrators run

Params keys are written as DVC reads them, with `${profile}` left for DVC to interpolate (so
`dvc exp run -S profile=paper` tracks the paper profile's keys); Snakemake resolves them itself. A key
only the defaults in restorebench.config supply (absent from params.yaml) is not listed: DVC fails on a
listed key the file lacks. The grid, paths and source lists are fixed when dvc.yaml is generated: after
changing a grid list, `official` or `data.root`, regenerate it (a test fails while it is stale).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from restorebench.codepath import source_files
from restorebench.config import (
    TASK_DATASET,
    Config,
    ConfigError,
    cell_name,
    raw_params,
    resolve,
)

PROFILE_KEY = "profiles.${profile}"  # DVC interpolates ${profile}; Snakemake substitutes the active one
OFFICIAL = "official"  # the cell (strategy) of a released checkpoint scored as is: no training

# ---------------------------------------------------------------------------------------------- sources

# Stage -> the modules its command runs (besides cli.py and the model's own file); their imports inside
# restorebench are followed (imports inside functions too), so each list names the entry points only.
# The same files are a Snakemake input and a DVC dep of every job of the stage: one policy for both.
ENTRY_MODULES: dict[str, tuple[str, ...]] = {
    "fetch": ("data.fetch", "data.manifest"),
    "validate": ("data.validate",),
    "prepare": ("data.prepare",),
    "degrade": ("data.prepare",),
    "pretrain_ipt": ("pretrain.runner", "pretrain.ipt", "train.finetune", "train.session", "train.distributed"),
    "pretrain_dcpt": ("pretrain.runner", "pretrain.dcpt", "train.finetune", "train.session", "train.distributed"),
    "finetune": ("train.finetune", "train.session", "train.distributed"),
    "evaluate": ("evaluate", "infer", "train.finetune", "card"),
    "evaluate_official": ("evaluate", "infer", "models"),
    "evaluate_identity": ("evaluate",),
    "aggregate": ("aggregate", "pipeline"),  # the grid's cells come from the pipeline module
    "report": ("report",),
}
# cli.py parses every stage; its own imports are per command (inside functions), so only the module-level
# ones (config, errors, logs, data.parallel's thread setting) are followed.
CLI = "cli"

# Shared train keys (profiles.P.train.K) each training stage reads; the model's recipe
# (train.models.M) is listed per cell. Operational keys (restorebench.train.checkpoint.OPERATIONAL: how
# often to checkpoint / log / validate, compile, sync_every) and `workers` (batches depend on (seed, step)
# only) change no result and are left out, so changing them re-runs nothing.
PRETRAIN_TRAIN_KEYS = ("amp", "channels_last", "deterministic", "ema_decay", "gpus")
FINETUNE_TRAIN_KEYS = ("steps", "batch", "patch", "accumulate", "grad_clip", "ema_decay", "llrd_decay",
                       "holdout", "amp", "channels_last", "deterministic", "gpus")  # fmt: skip
# Params a model's cells read beyond its own entries: IPT's finetuning architecture keeps the pretrained
# head named in pretrain.ipt.heads (train.finetune.cell_model).
MODEL_EXTRA_KEYS = {"ipt": ("pretrain.ipt.heads",)}


@functools.cache
def stage_sources(rule: str, model: str | None = None) -> tuple[str, ...]:
    """The source files a job of `rule` runs: its entry modules' closure, cli.py (with config, errors),
    and the cell's model file (with the model files it imports)."""
    modules = list(ENTRY_MODULES[rule]) + ["config", "errors", "logs", "data.parallel"]
    if model is not None and model != "identity":
        modules.append(f"models.{model}")
    return tuple(sorted(set(source_files(modules)) | set(source_files([CLI], follow=False))))


# ---------------------------------------------------------------------------------------------- cells


@dataclass(frozen=True)
class Cell:
    """One row of the results table: `model` on `task`, trained with `strategy` from `pretrain`'s init;
    strategy "official" is a released checkpoint scored as is, model "identity" the degraded input."""

    task: str
    model: str
    strategy: str
    pretrain: str = "none"
    seed: int | None = None  # set when params.yaml's `seeds` repeats the training cells

    @property
    def name(self) -> str:
        """The file / folder name: full, dcpt-full, official, none (identity); full-seed1 with `seeds`."""
        return cell_name(self.strategy, self.pretrain, self.seed)

    @property
    def dataset(self) -> str:
        return TASK_DATASET[self.task]

    @property
    def trained(self) -> bool:
        return self.model != "identity" and self.strategy != OFFICIAL


# ---------------------------------------------------------------------------------------------- paths
# One function per artifact; arguments may be Snakemake wildcards ("{task}") as well as values.


def raw_dir(root: str, dataset: str) -> str:
    return f"{root}/raw/{dataset}"


def manifest(root: str, dataset: str) -> str:
    return f"{root}/manifests/{dataset}.parquet"


def validation(root: str, dataset: str) -> str:
    return f"{root}/validation/{dataset}.json"


def store(root: str, dataset: str) -> str:
    """A packed training store: data/store/{sidd,gopro}/train, and the degraded ImageNet set."""
    return f"{root}/store/{dataset}/train"


def pretrain_dir(method: str, task: str | None = None, model: str | None = None) -> str:
    """runs/pretrain/ipt/ipt (one multi-task run), runs/pretrain/dcpt/{task}/{model}."""
    return "runs/pretrain/ipt/ipt" if method == "ipt" else f"runs/pretrain/dcpt/{task}/{model}"


def pretrain_metrics(method: str, task: str | None = None, model: str | None = None) -> str:
    return "metrics/pretrain/ipt/ipt.json" if method == "ipt" else f"metrics/pretrain/dcpt/{task}/{model}.json"


def finetune_dir(task: str, model: str, cell: str) -> str:
    return f"runs/finetune/{task}/{model}/{cell}"


def metrics_json(task: str, model: str, cell: str) -> str:
    return f"metrics/finetune/{task}/{model}/{cell}.json"


def eval_dir(task: str, model: str, cell: str) -> str:
    """per_image.csv, provenance.json (what ran) and crops/ of an evaluated cell."""
    return f"results/eval/{task}/{model}/{cell}"


def per_image_csv(task: str, model: str, cell: str) -> str:
    return f"{eval_dir(task, model, cell)}/per_image.csv"


def log_path(rule: str, *values: str) -> str:
    """A job's log (Snakemake's `log:`; DVC shows the output itself): logs/{rule}/{wildcard values}.log."""
    return "/".join(["logs", rule, *values]) + ".log"


TABLE = "results/table.csv"
SUMMARY = "metrics/summary.json"
REPORT = "results/report.html"


# ---------------------------------------------------------------------------------------------- stages


@dataclass(frozen=True)
class Out:
    """An output: `kind` out | metric | plot (a dvclive folder, DVC's only); cache False keeps it in git's
    view (small files); persist keeps it across re-runs (a resumed run appends to its curves)."""

    path: str
    kind: str = "out"
    cache: bool = True
    persist: bool = False
    directory: bool = False


def _outputs(rule: str, root: str, **w: str) -> dict[str, Out]:
    """The named outputs of one job of `rule` (wildcards or values in `w`)."""
    if rule == "fetch":
        return {"raw": Out(raw_dir(root, w["dataset"]), directory=True), "manifest": Out(manifest(root, w["dataset"]))}
    if rule == "validate":  # counts and timings: an output, not a metric (metrics are PSNR/SSIM)
        return {"report": Out(validation(root, w["dataset"]), cache=False)}
    if rule == "prepare":
        return {"store": Out(store(root, w["dataset"]), directory=True)}
    if rule == "degrade":
        return {"store": Out(store(root, "imagenet"), directory=True)}
    if rule in ("pretrain_ipt", "pretrain_dcpt"):
        method = rule.removeprefix("pretrain_")
        run = pretrain_dir(method, w.get("task"), w.get("model"))
        return {"weights": Out(f"{run}/model.safetensors"), "summary": Out(f"{run}/pretrain.json", cache=False),
                "metrics": Out(pretrain_metrics(method, w.get("task"), w.get("model")), kind="metric", cache=False),
                "plots": Out(f"{run}/dvclive/plots/metrics", kind="plot", cache=False, persist=True)}  # fmt: skip
    if rule == "finetune":
        run = finetune_dir(w["task"], w["model"], w["cell"])
        return {"weights": Out(f"{run}/model.safetensors"), "summary": Out(f"{run}/train.json", cache=False),
                "config": Out(f"{run}/config.json", cache=False),
                "plots": Out(f"{run}/dvclive/plots/metrics", kind="plot", cache=False, persist=True)}  # fmt: skip
    if rule in ("evaluate", "evaluate_official", "evaluate_identity"):
        model = "identity" if rule == "evaluate_identity" else w["model"]
        cell = {"evaluate": w.get("cell"), "evaluate_official": OFFICIAL, "evaluate_identity": "none"}[rule]
        folder = eval_dir(w["task"], model, cell)
        outs = {"metrics": Out(metrics_json(w["task"], model, cell), kind="metric", cache=False),
                "per_image": Out(f"{folder}/per_image.csv", cache=False),
                "provenance": Out(f"{folder}/provenance.json", cache=False),
                "crops": Out(f"{folder}/crops", cache=False, directory=True)}  # fmt: skip
        if rule == "evaluate":  # a finetuned cell's model card, beside its weights
            outs["card"] = Out(f"{finetune_dir(w['task'], model, cell)}/README.md", cache=False)
        return outs
    if rule == "aggregate":
        return {"table": Out(TABLE, cache=False), "summary": Out(SUMMARY, kind="metric", cache=False)}
    if rule == "report":
        return {"html": Out(REPORT, cache=False)}
    raise ValueError(f"unknown rule {rule!r}")


def outputs(rule: str, root: str, **wildcards: str) -> dict[str, Out]:
    """A rule's outputs as Snakemake declares them (plots are DVC's notion only)."""
    return {k: o for k, o in _outputs(rule, root, **wildcards).items() if o.kind != "plot"}


@dataclass(frozen=True)
class Stage:
    """One job: `rule` (the Snakemake rule, the DVC stage family) with its wildcard values."""

    rule: str
    wildcards: tuple[tuple[str, str], ...]
    args: str  # the restorebench subcommand and its options
    deps: tuple[str, ...]  # artifacts it reads
    code: tuple[str, ...]  # source files it runs
    params: tuple[str, ...]  # params.yaml keys it reads (PROFILE_KEY for the active profile)
    outs: tuple[tuple[str, Out], ...] = field(default=())
    comment: str = ""

    @property
    def name(self) -> str:
        """The DVC stage name: rule, then the wildcard values (finetune.denoise.nafnet.dcpt-full)."""
        return ".".join([self.rule, *(v for _, v in self.wildcards)])

    @property
    def log(self) -> str:
        return log_path(self.rule, *(v for _, v in self.wildcards))


class Pipeline:
    """The grid and stages of one params file (+ overrides), validated through restorebench.config."""

    def __init__(self, raw: dict, cfg: Config) -> None:
        self.raw, self.cfg = raw, cfg
        self.root = cfg.data.root.rstrip("/")
        self._check_datasets()

    # --- params

    def has(self, key: str) -> bool:
        """Whether params.yaml sets `key` (with PROFILE_KEY: in every profile, as DVC may switch)."""
        profiles = list(self.raw["profiles"]) if PROFILE_KEY in key else [None]
        return all(_lookup(self.raw, key.replace(PROFILE_KEY, f"profiles.{p}")) is not _MISSING for p in profiles)

    def value(self, key: str) -> Any:
        """The value of `key` in the active profile (what Snakemake tracks for it)."""
        return _lookup(self.raw, key.replace(PROFILE_KEY, f"profiles.{self.cfg.profile}"))

    def values(self, stage: Stage) -> dict[str, Any]:
        """A stage's params keys with their values in the active profile (Snakemake's params: a change
        re-runs the job, as DVC's params do)."""
        return {k.replace(PROFILE_KEY, f"profiles.{self.cfg.profile}"): self.value(k) for k in stage.params}

    def _keys(self, *keys: str) -> tuple[str, ...]:
        """The keys params.yaml sets: for every profile, as DVC's ${profile} template; for the active
        profile only, as that profile's key (e.g. an `official` file the other profile lacks)."""
        active = f"profiles.{self.cfg.profile}"
        out = [k if self.has(k) else k.replace(PROFILE_KEY, active) for k in keys
               if self.has(k) or self.has(k.replace(PROFILE_KEY, active))]  # fmt: skip
        return tuple(out)

    # --- the grid

    def cells(self) -> list[Cell]:
        """Every trained cell (once per seed of `seeds` when set), then the official ones, in the order of
        the params lists."""
        c = self.cfg
        seeds = c.seeds or [None]
        cells = []
        for task in c.tasks:
            cells += [Cell(task, m, s, seed=n) for m in c.models for s in c.strategies for n in seeds]
            for method, models in c.pretrain_models.items():
                cells += [Cell(task, m, s, method, n) for m in models for s in c.pretrain_strategies for n in seeds]
            # a released checkpoint is its own entry: listed for a model, it is scored whether or not
            # `models` trains that model (IPT's is, though ipt trains only from its pretraining)
            cells += [Cell(task, m, OFFICIAL) for m, files in c.official.items() if files.get(task)]
        return cells

    def table_cells(self) -> list[Cell]:
        """What the table holds: each task's identity floor, then the grid."""
        return [Cell(t, "identity", "none") for t in self.cfg.tasks] + self.cells()

    def pretrain_runs(self) -> list[tuple[str, str | None, str | None]]:
        """(method, task, model) of the pretraining runs some cell finetunes from."""
        runs = []
        for cell in self.cells():
            key = ("ipt", None, None) if cell.pretrain == "ipt" else (cell.pretrain, cell.task, cell.model)
            if cell.pretrain != "none" and key not in runs:
                runs.append(key)
        return runs

    def _check_datasets(self) -> None:
        needed = [(f"tasks: {t}", TASK_DATASET[t]) for t in self.cfg.tasks]
        if self.pretrain_runs():
            needed.append(("pretraining (pretrain_models)", "imagenet"))
        for what, dataset in needed:
            if dataset not in self.cfg.datasets:
                raise ConfigError("datasets", f"{what} needs {dataset!r}, not in {self.cfg.datasets}",
                                  f"add {dataset} to datasets or drop what needs it")  # fmt: skip

    # --- stages

    def stages(self) -> list[Stage]:
        """Every job, upstream first."""
        c, root, P = self.cfg, self.root, PROFILE_KEY
        out = []
        for d in c.datasets:
            out.append(self._stage("fetch", {"dataset": d}, f"fetch --dataset {d}", [],
                                   ["profile", "seed", f"{P}.data.{d}", f"{P}.data.sample"]))
        for d in c.datasets:
            out.append(self._stage("validate", {"dataset": d}, f"validate --dataset {d}",
                                   [raw_dir(root, d), manifest(root, d)], ["profile", f"{P}.data.{d}"]))
        for d in dict.fromkeys(x.dataset for x in self.cells() if x.trained):  # the stores cells train on
            keys = ["profile", f"{P}.prepare.{d}"] + ([f"{P}.prepare.gopro_input"] if d == "gopro" else [])
            out.append(self._stage("prepare", {"dataset": d}, f"prepare --dataset {d}",
                                   [validation(root, d), manifest(root, d)], keys))
        runs = self.pretrain_runs()
        if runs:
            out.append(self._stage("degrade", {}, "degrade", [validation(root, "imagenet"),
                                   manifest(root, "imagenet")], ["profile", "seed", f"{P}.degrade"]))
        train = [f"{P}.train.{k}" for k in PRETRAIN_TRAIN_KEYS]
        for method, task, model in runs:
            keys = ["profile", "seed", *train, f"{P}.pretrain.holdout", f"{P}.pretrain.{method}"]
            if method == "ipt":
                out.append(self._stage("pretrain_ipt", {}, "pretrain --method ipt", [store(root, "imagenet")],
                                       keys, model="ipt"))
                continue
            keys += self._model_keys(model, task)
            out.append(self._stage("pretrain_dcpt", {"task": task, "model": model},
                                   f"pretrain --method dcpt --task {task} --model {model}", [store(root, "imagenet")],
                                   keys, model=model, comment=f"DCPT pretrains the exact architecture (variant, init) "
                                   f"that {task} finetunes"))  # fmt: skip
        for task in c.tasks:
            out.append(self._stage("evaluate_identity", {"task": task},
                                   f"evaluate --task {task} --model identity --strategy none",
                                   [validation(root, TASK_DATASET[task])], ["profile", f"{P}.evaluate"],
                                   comment="the floor: the degraded input scored by the task's protocol"))
        for cell in self.cells():
            out += self._cell_stages(cell)
        cells = self.table_cells()
        grid_keys = ["datasets", "tasks", "models", "strategies", "pretrain_models", "pretrain_strategies", "seeds",
                     f"{P}.official"]  # fmt: skip
        out.append(self._stage("aggregate", {}, "aggregate",
                               [f for x in cells for f in (metrics_json(x.task, x.model, x.name),
                                                           per_image_csv(x.task, x.model, x.name),
                                                           f"{eval_dir(x.task, x.model, x.name)}/provenance.json")]
                               + [validation(root, d) for d in c.datasets], grid_keys))  # fmt: skip
        out.append(self._stage("report", {}, "report", [TABLE] + [f"{eval_dir(x.task, x.model, x.name)}/crops"
                                                                   for x in cells], ["profile"]))
        return out

    def _model_keys(self, model: str, task: str) -> list[str]:
        P = PROFILE_KEY
        return [f"{P}.variants.{model}.{task}", f"{P}.pretrained.{model}",
                *(f"{P}.{k}" for k in MODEL_EXTRA_KEYS.get(model, ()))]  # fmt: skip

    def _cell_stages(self, cell: Cell) -> list[Stage]:
        P, root = PROFILE_KEY, self.root
        t, m, w = cell.task, cell.model, {"task": cell.task, "model": cell.model, "cell": cell.name}
        cmd = f"--task {t} --model {m} --strategy {cell.strategy} --pretrain {cell.pretrain}"
        cmd += f" --seed {cell.seed}" if cell.seed is not None else ""  # the cell's seed, in place of `seed`
        stages = []
        evaluate_keys = ["profile", f"{P}.evaluate", f"{P}.variants.{m}.{t}",
                         *(f"{P}.{k}" for k in MODEL_EXTRA_KEYS.get(m, ()))]  # fmt: skip
        if cell.trained:
            deps = [store(root, cell.dataset)]
            if cell.pretrain != "none":
                run = pretrain_dir(cell.pretrain, t, m)
                deps += [f"{run}/model.safetensors"] + ([f"{run}/pretrain.json"] if cell.pretrain == "ipt" else [])
            keys = ["profile", *(["seed"] if cell.seed is None else []),
                    *(f"{P}.train.{k}" for k in FINETUNE_TRAIN_KEYS), f"{P}.train.models.{m}", *self._model_keys(m, t)]
            stages.append(self._stage("finetune", w, f"finetune {cmd}", deps, keys, model=m))
            weights = [f"{finetune_dir(t, m, cell.name)}/model.safetensors"]
        else:  # a released checkpoint: the file the params name
            weights = [self.cfg.official[m][t]]
            evaluate_keys.append(f"{P}.official.{m}.{t}")
        rule = "evaluate" if cell.trained else "evaluate_official"  # an official cell has no run folder
        w = w if cell.trained else {"task": t, "model": m}
        stages.append(self._stage(rule, w, f"evaluate {cmd}", weights + [validation(root, cell.dataset)],
                                  evaluate_keys, model=m))
        return stages

    def _stage(self, rule: str, wildcards: dict[str, str], args: str, deps: list[str], params: list[str], *,
               model: str | None = None, comment: str = "") -> Stage:
        outs = _outputs(rule, self.root, **wildcards)
        return Stage(rule, tuple(wildcards.items()), args, tuple(deps), stage_sources(rule, model),
                     self._keys(*params), tuple(outs.items()), comment)  # fmt: skip

    def stage(self, rule: str, **wildcards: str) -> Stage:
        """The job of `rule` with these wildcard values (Snakemake's lookup)."""
        self._index()
        try:
            return self._by_job[(rule, frozenset(wildcards.items()))]
        except KeyError:
            raise KeyError(f"{rule} {wildcards}: no such job in the grid of params.yaml") from None

    def _index(self) -> dict[str, list[Stage]]:
        if not hasattr(self, "_by_rule"):
            self._by_rule: dict[str, list[Stage]] = {}
            self._by_job = {(s.rule, frozenset(s.wildcards)): s for s in self.stages()}
            for s in self._by_job.values():
                self._by_rule.setdefault(s.rule, []).append(s)
        return self._by_rule

    def wildcard_values(self, rule: str, name: str) -> list[str]:
        """The values wildcard `name` takes in `rule`'s jobs (Snakemake's wildcard_constraints)."""
        return sorted({dict(s.wildcards)[name] for s in self._index().get(rule, [])})


def snakemake_overrides(config: dict, prefix: str = "") -> list[str]:
    """Snakemake's --config entries as restorebench overrides (KEY=VALUE, the -S syntax): a mapping is
    flattened to dotted keys (`--config 'profiles={demo: {train: {steps: 5}}}'` is
    profiles.demo.train.steps=5), a list written as a YAML flow list. Values are passed as written, for
    restorebench to parse as YAML (Snakemake parses mappings and lists with YAML's base loader, which keeps
    every scalar a string)."""

    def text(value: Any) -> str:
        if isinstance(value, list):
            return "[" + ", ".join(text(v) for v in value) + "]"
        if isinstance(value, dict):
            return "{" + ", ".join(f"{k}: {text(v)}" for k, v in value.items()) + "}"
        return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)

    out = []
    for key, value in config.items():
        if isinstance(value, dict) and value:
            out += snakemake_overrides(value, f"{prefix}{key}.")
        else:
            out.append(f"{prefix}{key}={text(value)}")
    return out


_MISSING = object()


def _lookup(raw: dict, key: str) -> Any:
    node: Any = raw
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


def load(params: str | Path = "params.yaml", overrides: Iterable[str] = ()) -> Pipeline:
    """The pipeline of `params` with `overrides` (KEY=VALUE, as `restorebench -S`); the params are
    validated by restorebench.config (a ConfigError names the key)."""
    raw = raw_params(params, list(overrides))
    return Pipeline(raw, resolve(raw))


# ---------------------------------------------------------------------------------------------- dvc.yaml

DVC_HEADER = """\
# GENERATED from src/restorebench/pipeline.py and params.yaml by `restorebench pipeline dvc > dvc.yaml`;
# do not edit (a test fails when this file differs from a fresh generation). Regenerate after changing a
# grid list (datasets, tasks, models, strategies, pretrain_models, pretrain_strategies), `official`,
# `data.root`, or a stage's imports.
#   dvc repro                       # demo profile
#   dvc exp run -S profile=paper    # paper-scale run (params keys follow ${profile})
# Commands read params.yaml themselves; `params` lists, per stage, the keys it reads, and `deps` the source
# files it runs, so a change re-runs exactly the stages that read it.
"""


def _dvc_out(out: Out) -> Any:
    opts: dict[str, Any] = {}
    if out.kind == "plot":
        opts["x"] = "step"
    if not out.cache:
        opts["cache"] = False
    if out.persist:
        opts["persist"] = True
    return {out.path: opts} if opts else out.path


def dvc_yaml(pipe: Pipeline) -> str:
    """dvc.yaml for `pipe`: one explicit stage per job, named as Stage.name."""
    import yaml

    stages: dict[str, dict] = {}
    for s in pipe.stages():
        entry: dict[str, Any] = {"cmd": f"restorebench {s.args}"}
        if s.comment:
            entry["desc"] = s.comment
        entry["deps"] = list(s.deps) + list(s.code)
        if s.params:
            entry["params"] = list(s.params)
        for kind, section in (("out", "outs"), ("metric", "metrics"), ("plot", "plots")):
            listed = [_dvc_out(o) for _, o in s.outs if o.kind == kind]
            if listed:
                entry[section] = listed
        stages[s.name] = entry
    body = {"stages": stages,
            # `dvc plots show` / `dvc plots diff main my-branch`: every cell's score (and each stage's curves)
            "plots": [{TABLE: {"template": "scatter", "x": "model", "y": "psnr"}}]}  # fmt: skip
    return DVC_HEADER + yaml.safe_dump(body, sort_keys=False, width=120, default_flow_style=False)
