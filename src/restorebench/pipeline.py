"""THE definition of the pipeline: the cells of the grid, every artifact path, and for each stage its
command, inputs, outputs, params keys and source files. Snakemake (Snakefile, workflow/rules) imports this
module; dvc.yaml is written from it by restorebench.dvcyaml (`restorebench pipeline dvc -o dvc.yaml`, a
test compares), one templated block per stage family (docs/ARCHITECTURE.md, "The pipeline").

    pipe = pipeline.load("params.yaml")        # params + overrides, validated by restorebench.config
    pipe.cells()                                # the grid, in params order
    pipe.stages()                               # every stage both orchestrators run
    pipe.blocks()                               # the same stages by family (dvc.yaml's blocks)

Params keys are written as DVC reads them, with `${profile}` left for DVC to interpolate (so a run under
`profile: paper` tracks the paper profile's keys); Snakemake resolves them itself. A key
only the defaults in restorebench.config supply (absent from params.yaml) is not listed: DVC fails on a
listed key the file lacks. dvc.yaml's matrix blocks follow the params lists (`models`, `strategies`,
`pretrain_models.*`, `pretrain_strategies`, `datasets`, `seeds`), so `dvc exp run -S 'models=[nafnet]'`
needs no regeneration; adding a task, `official` entries or setting `data.root` does (a test fails while
dvc.yaml is stale).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from restorebench.codepath import command_modules, source_files
from restorebench.config import (
    PRETRAIN_METHODS,
    TASK_DATASET,
    Config,
    ConfigError,
    cell_name,
    raw_params,
    resolve,
)
from restorebench.models import model_module, params_keys

PROFILE_KEY = "profiles.${profile}"  # DVC interpolates ${profile}; Snakemake substitutes the active one
OFFICIAL = "official"  # the cell (strategy) of a released checkpoint scored as is: no training

# ---------------------------------------------------------------------------------------------- sources

# Stage -> the `restorebench` command it runs; the modules that command imports are read from cli.py
# (restorebench.codepath.command_modules) and followed through their imports (inside functions too). A
# pretraining stage runs one method's module only. The same files are a Snakemake input of every job of the
# stage and, fingerprinted, a DVC dep (restorebench.dvcyaml): one policy for both.
RULE_COMMAND = {
    "fetch": "fetch", "validate": "validate", "prepare": "prepare", "degrade": "degrade", "segpretrain": "segpretrain",
    "pretrain_ipt": "pretrain", "pretrain_dcpt": "pretrain", "finetune": "finetune",
    "evaluate": "evaluate", "evaluate_official": "evaluate", "evaluate_identity": "evaluate",
    "aggregate": "aggregate", "report": "report",
}  # fmt: skip
# The stages whose jobs run one model's code (its module and what that imports): their DVC code dep is a
# fingerprint per model.
MODEL_RULES = ("segpretrain", "pretrain_ipt", "pretrain_dcpt", "finetune", "evaluate", "evaluate_official")
CLI = "cli"  # cli.py parses every stage: its own file is a dependency, its per-command imports are not
# Snakemake runs every job with its rule's `threads` (1: jobs run side by side); DVC's commands get the same.
THREADS = 1


def entry_modules(rule: str) -> tuple[str, ...]:
    """The restorebench modules `rule`'s command imports (read from cli.py); a pretraining stage keeps its own
    method's module and drops the other methods'."""
    modules = command_modules(RULE_COMMAND[rule])
    if rule.startswith("pretrain_"):
        method = rule.removeprefix("pretrain_")
        others = {f"pretrain.{m}" for m in PRETRAIN_METHODS if m not in ("none", method)}
        modules = [m for m in modules if m not in others]
    return tuple(modules)


# Shared train keys (profiles.P.train.K) each training stage reads; the model's recipe
# (train.models.M) is listed per cell. Operational keys (restorebench.train.checkpoint.OPERATIONAL: how
# often to checkpoint / log / validate, compile, sync_every) and `workers` (batches depend on (seed, step)
# only) change no result and are left out, so changing them re-runs nothing.
PRETRAIN_TRAIN_KEYS = ("amp", "channels_last", "deterministic", "ema_decay", "gpus")
FINETUNE_TRAIN_KEYS = ("steps", "batch", "patch", "accumulate", "grad_clip", "ema_decay", "llrd_decay",
                       "holdout", "amp", "channels_last", "deterministic", "gpus")  # fmt: skip


@functools.cache
def stage_sources(rule: str, model: str | None = None) -> tuple[str, ...]:
    """The source files a job of `rule` runs: what its command imports (and cli.py's module-level imports),
    followed through their imports, cli.py itself, and the job's model file (with the model files it
    imports)."""
    modules = [*entry_modules(rule), *command_modules(None)]
    if model is not None and model != "identity":
        modules.append(model_module(model))
    return tuple(sorted(set(source_files(modules)) | set(source_files([CLI], follow=False))))


def code_key(rule: str, model: str | None = None) -> str:
    """The name of a job's code fingerprint (restorebench.dvcyaml): the rule, and the model for MODEL_RULES."""
    return f"{rule}-{model}" if rule in MODEL_RULES and model not in (None, "identity") else rule


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


def segmentation_dir(model: str) -> str:
    """The demo's segmentation checkpoint of `model` (segpretrain): the folder its `pretrained` entry names
    (or holds, for ViT-Adapter's .pth)."""
    return f"runs/segmentation/{model}"


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


METRICS_DIR = "metrics/finetune"  # every cell's metrics JSON: metrics_json()
EVAL_DIR = "results/eval"  # every cell's eval_dir()
TABLE = "results/table.csv"
SUMMARY = "metrics/summary.json"
REPORT = "results/report.html"


# ---------------------------------------------------------------------------------------------- stages


@dataclass(frozen=True)
class Out:
    """An output. DVC caches it (`dvc push` / `dvc pull` carry it) unless `cache` is False: then git keeps it
    (small files .gitignore spares: metrics, validation reports, the table; a test checks). Which files are
    DVC metrics, dvc.yaml's top-level `metrics` says (restorebench.views). A run's dvclive curves are no
    output: they persist across re-runs (a resumed run appends to them), and dvc.yaml's top-level `plots`
    show them."""

    path: str
    cache: bool = True
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
    if rule == "segpretrain":  # the checkpoint and segmentation.json (held-out accuracy) inside
        return {"checkpoint": Out(segmentation_dir(w["model"]), directory=True)}
    if rule in ("pretrain_ipt", "pretrain_dcpt"):
        method = rule.removeprefix("pretrain_")
        run = pretrain_dir(method, w.get("task"), w.get("model"))
        return {"weights": Out(f"{run}/model.safetensors"), "summary": Out(f"{run}/pretrain.json"),
                "metrics": Out(pretrain_metrics(method, w.get("task"), w.get("model")), cache=False)}
    if rule == "finetune":
        run = finetune_dir(w["task"], w["model"], w["cell"])
        return {"weights": Out(f"{run}/model.safetensors"), "summary": Out(f"{run}/train.json"),
                "config": Out(f"{run}/config.json")}
    if rule in ("evaluate", "evaluate_official", "evaluate_identity"):
        model = "identity" if rule == "evaluate_identity" else w["model"]
        cell = {"evaluate": w.get("cell"), "evaluate_official": OFFICIAL, "evaluate_identity": "none"}[rule]
        folder = eval_dir(w["task"], model, cell)
        # the folder: per_image.csv, provenance.json, crops/ (and timing.json, which git ignores)
        outs = {"metrics": Out(metrics_json(w["task"], model, cell), cache=False),
                "results": Out(folder, directory=True)}
        if rule == "evaluate":  # a finetuned cell's model card, beside its weights
            outs["card"] = Out(f"{finetune_dir(w['task'], model, cell)}/README.md")
        return outs
    if rule == "aggregate":
        return {"table": Out(TABLE, cache=False), "summary": Out(SUMMARY, cache=False)}
    if rule == "report":
        return {"html": Out(REPORT)}
    raise ValueError(f"unknown rule {rule!r}")


def outputs(rule: str, root: str, **wildcards: str) -> dict[str, Out]:
    """A rule's named outputs (Snakemake's `output:`, DVC's outs and metrics)."""
    return _outputs(rule, root, **wildcards)


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
    code_id: str = ""  # the name of its sources' fingerprint (code_key): its DVC code dep
    init: str = ""  # a training job's init (none, ipt, dcpt, scratch): whether it reads `pretrained`

    @property
    def name(self) -> str:
        """The DVC stage name: rule, then the wildcard values (finetune.denoise.nafnet.dcpt-full)."""
        return ".".join([self.rule, *(v for _, v in self.wildcards)])

    @property
    def log(self) -> str:
        return log_path(self.rule, *(v for _, v in self.wildcards))


ITEM = "${{item.{}}}"  # a matrix value in a template job (DVC's syntax)


@dataclass(frozen=True)
class Block:
    """A stage family: `name` (dvc.yaml's stage), `axes` (matrix axis -> the params list its values follow,
    e.g. model -> "models"), a `template` job with ITEM placeholders (None: the family has one job, written
    as is), and its jobs with their axis values, in order."""

    name: str
    axes: dict[str, str]
    template: Stage | None
    items: list[tuple[dict[str, str], Stage]]

    @classmethod
    def single(cls, stage: Stage) -> Block:
        return cls(stage.name, {}, None, [({}, stage)])


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
        """(method, task, model) of the pretraining runs some cell finetunes from (scratch has none)."""
        runs = []
        for cell in self.cells():
            key = ("ipt", None, None) if cell.pretrain == "ipt" else (cell.pretrain, cell.task, cell.model)
            if cell.pretrain not in ("none", "scratch") and key not in runs:
                runs.append(key)
        return runs

    def segmentation_runs(self) -> list[str]:
        """The models whose `pretrained` entry (active profile) is the demo's own segmentation checkpoint
        (segmentation_dir), which some training job loads: the segpretrain jobs."""
        loads = {c.model for c in self.cells() if c.trained and c.pretrain in ("none", "dcpt")}
        return [m for m in self.cfg.models if m in loads
                and str(self.cfg.pretrained.get(m) or "").startswith(segmentation_dir(m))]  # fmt: skip

    def init_deps(self, model: str, init: str) -> list[str]:
        """The checkpoint a training job of `model` from `init` loads, when a stage writes it."""
        return [segmentation_dir(model)] if init in ("none", "dcpt") and model in self.segmentation_runs() else []

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
        return [stage for block in self.blocks() for _, stage in block.items]

    def blocks(self) -> list[Block]:
        """The jobs by family: each Block holds its jobs with the matrix values that name them and, where
        its jobs differ only in those values, a template job with `${item.<axis>}` placeholders (what
        dvc.yaml writes as one `matrix` stage; restorebench.dvcyaml checks the template expands to the jobs)."""
        c, root, P = self.cfg, self.root, PROFILE_KEY
        out: list[Block] = []

        def fetch(d: str, template: bool = False) -> Stage:
            return self._stage("fetch", {"dataset": d}, f"fetch --dataset {d}", [],
                               ["profile", "seed", f"{P}.data.{d}", f"{P}.data.sample"], template=template)

        def validate(d: str, template: bool = False) -> Stage:
            return self._stage("validate", {"dataset": d}, f"validate --dataset {d}",
                               [raw_dir(root, d), manifest(root, d)], ["profile", f"{P}.data.{d}"], template=template)

        for name, build in (("fetch", fetch), ("validate", validate)):
            out.append(Block(name, {"dataset": "datasets"}, build(ITEM.format("dataset"), True),
                             [({"dataset": d}, build(d)) for d in c.datasets]))  # fmt: skip
        for d in dict.fromkeys(x.dataset for x in self.cells() if x.trained):  # the stores cells train on
            keys = ["profile", f"{P}.prepare.{d}"] + ([f"{P}.prepare.gopro_input"] if d == "gopro" else [])
            out.append(Block.single(self._stage("prepare", {"dataset": d}, f"prepare --dataset {d}",
                                                [validation(root, d), manifest(root, d)], keys)))
        runs = self.pretrain_runs()
        if runs:
            out.append(Block.single(self._stage("degrade", {}, "degrade", [validation(root, "imagenet"),
                                    manifest(root, "imagenet")], ["profile", "seed", f"{P}.degrade"])))  # fmt: skip
        for m in self.segmentation_runs():  # the demo's segmentation checkpoints (pretrain/segmentation.py)
            keys = ["profile", "seed", f"{P}.pretrain.segmentation", *(f"{P}.variants.{m}.{t}" for t in c.tasks)]
            out.append(Block.single(self._stage("segpretrain", {"model": m}, f"segpretrain --model {m}", [], keys,
                                                model=m, comment="the demo's own segmentation checkpoint")))  # fmt: skip
        if ("ipt", None, None) in runs:
            out.append(Block.single(self._pretrain("ipt", None, "ipt")))
        for task in c.tasks:
            models = [m for method, t, m in runs if method == "dcpt" and t == task]
            if models:
                out.append(Block(f"pretrain_dcpt_{task}", {"model": "pretrain_models.dcpt"},
                                 self._pretrain("dcpt", task, ITEM.format("model"), template=True),
                                 [({"model": m}, self._pretrain("dcpt", task, m)) for m in models]))  # fmt: skip
        for task in c.tasks:
            out.append(Block.single(self._stage(
                "evaluate_identity", {"task": task}, f"evaluate --task {task} --model identity --strategy none",
                [validation(root, TASK_DATASET[task])], ["profile", f"{P}.evaluate"],
                comment="the floor: the degraded input scored by the task's protocol")))  # fmt: skip
        for task in c.tasks:
            out += self._cell_blocks(task)
        grid_keys = ["datasets", "tasks", "models", "strategies", "pretrain_models", "pretrain_strategies", "seeds",
                     f"{P}.official"]  # fmt: skip
        # aggregate and report read every cell's files: their folders are the deps (DVC links the folders to
        # the stages writing inside them; Snakemake's jobs list the files, aggregate_inputs)
        out.append(Block.single(self._stage("aggregate", {}, "aggregate", [METRICS_DIR, EVAL_DIR]
                                            + [validation(root, d) for d in c.datasets], grid_keys)))  # fmt: skip
        out.append(Block.single(self._stage("report", {}, "report", [TABLE, EVAL_DIR], ["profile"])))
        return out

    def aggregate_inputs(self) -> list[str]:
        """The files aggregate reads: each table cell's metrics JSON, per-image CSV and provenance."""
        return [f for x in self.table_cells() for f in (metrics_json(x.task, x.model, x.name),
                eval_dir(x.task, x.model, x.name))]  # fmt: skip

    def job_inputs(self, stage: Stage) -> list[str]:
        """The artifacts a job reads as Snakemake lists them: aggregate and report name each cell's
        files (a folder no rule writes cannot be a Snakemake input), every other job its `deps`."""
        if stage.rule == "aggregate":
            return self.aggregate_inputs() + [d for d in stage.deps if d not in (METRICS_DIR, EVAL_DIR)]
        if stage.rule == "report":
            return [TABLE] + [eval_dir(x.task, x.model, x.name) for x in self.table_cells()]
        return list(stage.deps)

    def _pretrain(self, method: str, task: str | None, model: str, template: bool = False) -> Stage:
        P = PROFILE_KEY
        keys = ["profile", "seed", *(f"{P}.train.{k}" for k in PRETRAIN_TRAIN_KEYS), f"{P}.pretrain.holdout",
                f"{P}.pretrain.{method}"]  # fmt: skip
        if method == "ipt":
            return self._stage("pretrain_ipt", {}, "pretrain --method ipt", [store(self.root, "imagenet")], keys,
                               model="ipt")  # fmt: skip
        assert task is not None
        deps = [store(self.root, "imagenet"), *self.init_deps(model, "dcpt")]
        return self._stage("pretrain_dcpt", {"task": task, "model": model},
                           f"pretrain --method dcpt --task {task} --model {model}", deps,
                           keys + self._model_keys(model, task), model=model, template=template, init="dcpt",
                           comment=f"DCPT pretrains the exact architecture (variant, init) that {task} finetunes")  # fmt: skip

    def _model_keys(self, model: str, task: str) -> list[str]:
        P = PROFILE_KEY
        extra = () if model.startswith("${") else params_keys(model)
        return [f"{P}.variants.{model}.{task}", f"{P}.pretrained.{model}", *(f"{P}.{k}" for k in extra)]

    def _cell_blocks(self, task: str) -> list[Block]:
        """A task's finetune and evaluate jobs: one pair of blocks per init (pretrain none, then each
        restoration pretraining), over its models x strategies (x seeds); then the released checkpoints."""
        c, blocks = self.cfg, []
        seeds = c.seeds or [None]
        inits = [("none", "models", list(c.models), "strategies", list(c.strategies))]
        inits += [(m, f"pretrain_models.{m}", list(models), "pretrain_strategies", list(c.pretrain_strategies))
                  for m, models in c.pretrain_models.items() if models]  # fmt: skip
        for pretrain, models_key, models, strategies_key, strategies in inits:
            axes = {"model": models_key, "strategy": strategies_key} | ({"seed": "seeds"} if c.seeds else {})
            items = [({"model": m, "strategy": s} | ({"seed": str(n)} if n is not None else {}), Cell(task, m, s, pretrain, n))
                     for m in models for s in strategies for n in seeds]  # fmt: skip
            if not items:
                continue
            placeholder = Cell(task, ITEM.format("model"), ITEM.format("strategy"), pretrain,
                               ITEM.format("seed") if c.seeds else None)  # type: ignore[arg-type]
            suffix = "" if pretrain == "none" else f"_{pretrain}"
            for i, rule in enumerate(("finetune", "evaluate")):
                blocks.append(Block(f"{rule}_{task}{suffix}", axes, self._cell_stages(placeholder, template=True)[i],
                                    [(v, self._cell_stages(cell)[i]) for v, cell in items]))  # fmt: skip
        for m, files in c.official.items():  # a released checkpoint: the file the params name, scored as is
            if files.get(task):
                blocks.append(Block.single(self._cell_stages(Cell(task, m, OFFICIAL))[0]))
        return blocks

    def _cell_stages(self, cell: Cell, template: bool = False) -> list[Stage]:
        P, root = PROFILE_KEY, self.root
        t, m, w = cell.task, cell.model, {"task": cell.task, "model": cell.model, "cell": cell.name}
        cmd = f"--task {t} --model {m} --strategy {cell.strategy} --pretrain {cell.pretrain}"
        cmd += f" --seed {cell.seed}" if cell.seed is not None else ""  # the cell's seed, in place of `seed`
        extra = () if template else params_keys(m)
        stages = []
        evaluate_keys = ["profile", f"{P}.evaluate", f"{P}.variants.{m}.{t}", *(f"{P}.{k}" for k in extra)]
        if cell.trained:
            deps = [store(root, cell.dataset), *self.init_deps(m, cell.pretrain)]
            if cell.pretrain in ("ipt", "dcpt"):
                run = pretrain_dir(cell.pretrain, t, m)
                deps += [f"{run}/model.safetensors"] + ([f"{run}/pretrain.json"] if cell.pretrain == "ipt" else [])
            keys = ["profile", *(["seed"] if cell.seed is None else []),
                    *(f"{P}.train.{k}" for k in FINETUNE_TRAIN_KEYS), f"{P}.train.models.{m}", *self._model_keys(m, t)]
            stages.append(self._stage("finetune", w, f"finetune {cmd}", deps, keys, model=m, template=template,
                                      init=cell.pretrain))
            weights = [f"{finetune_dir(t, m, cell.name)}/model.safetensors"]
        else:  # a released checkpoint: the file the params name
            weights = [self.cfg.official[m][t]]
            evaluate_keys.append(f"{P}.official.{m}.{t}")
        rule = "evaluate" if cell.trained else "evaluate_official"  # an official cell has no run folder
        w = w if cell.trained else {"task": t, "model": m}
        # the task's floor: the model card sets the cell's score beside it (restorebench.card)
        floor = [metrics_json(t, "identity", "none")] if cell.trained else []
        stages.append(self._stage(rule, w, f"evaluate {cmd}", weights + [validation(root, cell.dataset)] + floor,
                                  evaluate_keys, model=m, template=template))
        return stages

    def _stage(self, rule: str, wildcards: dict[str, str], args: str, deps: list[str], params: list[str], *,
               model: str | None = None, comment: str = "", template: bool = False, init: str = "") -> Stage:
        """A job; `template`: with placeholders for values, its params kept as written (the check that
        params.yaml sets them is made on the jobs it stands for) and no source list."""
        outs = _outputs(rule, self.root, **wildcards)
        # a template keeps the keys that hold a placeholder (foldable() checks them on its jobs)
        keys = tuple(k2 for k in params for k2 in ((k,) if template and "${item." in k else self._keys(k)))
        code = () if template else stage_sources(rule, model)
        return Stage(rule, tuple(wildcards.items()), args, tuple(deps), code, keys, tuple(outs.items()), comment,
                     code_key(rule, model), init)  # fmt: skip

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
