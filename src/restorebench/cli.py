"""The `restorebench` command: one thin subcommand per pipeline stage.

Each command parses its options, loads the config once, calls one library function (which writes its
outputs atomically) and prints one sentence. Snakemake rules and dvc.yaml stages call exactly these
commands. A known failure is a RestorebenchError raised by the library; the app prints it as one line,
`error: <where>: <what> (<hint>)`, and exits 1 (a preempted run 143); --debug keeps the traceback.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from restorebench import __version__, logs
from restorebench.cli_support import Command, Group, SubGroup, choices
from restorebench.config import (
    DATASETS,
    MODEL_NAMES,
    PRETRAIN_METHODS,
    STRATEGIES,
    TASK_DATASET,
    TASKS,
    Config,
    check_choice,
    load_config,
    profile_overrides,
    read_params,
)
from restorebench.errors import RestorebenchError

app = typer.Typer(
    cls=Group,
    help="restorebench: do segmentation transformers make good image restorers? One subcommand per stage.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
config_app = typer.Typer(cls=SubGroup, help="Inspect the resolved configuration.", no_args_is_help=True)
app.add_typer(config_app, name="config")
pipeline_app = typer.Typer(cls=SubGroup, help="The pipeline's definition (restorebench.pipeline) for the orchestrators.",
                           no_args_is_help=True)
app.add_typer(pipeline_app, name="pipeline")


class _State:
    params: Path = Path("params.yaml")
    overrides: list[str] = []


state = _State()


def _version(value: bool) -> None:
    if value:
        typer.echo(f"restorebench {__version__}")
        raise typer.Exit()


# the pipeline's stage commands: each takes the project lock (restorebench.lock.take_project_lock)
STAGES = ("fetch", "validate", "degrade", "prepare", "segpretrain", "pretrain", "finetune", "evaluate", "aggregate",
          "report")


@app.callback()
def main(
    ctx: typer.Context,
    params: Annotated[Path, typer.Option(help="params file (both orchestrators read the same one)")] = Path(
        "params.yaml"
    ),
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", "-S", help="override KEY=VALUE, e.g. -S seed=1 (repeatable)"),
    ] = None,
    profile: Annotated[
        str | None,
        typer.Option("--profile", metavar="NAME", help="profile NAME with the grid it declares (-S profile=NAME "
                                                       "and its `grid` lists), e.g. --profile paper plan"),
    ] = None,
    threads: Annotated[
        int, typer.Option(help="CPU threads for torch (0: the CPUs this process may use, or OMP_NUM_THREADS); "
                               "Snakemake passes each rule's `threads`")
    ] = 0,
    debug: Annotated[bool, typer.Option("--debug", help="show the traceback of a known failure")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="print the version and exit")
    ] = False,
) -> None:
    if debug:
        os.environ["RESTOREBENCH_DEBUG"] = "1"
    logs.setup()
    state.params = params
    state.overrides = list(set_ or [])
    if profile is not None:  # -S after it still wins
        state.overrides = profile_overrides(read_params(params), profile) + state.overrides
    from restorebench.data.parallel import set_torch_threads

    set_torch_threads(threads)
    if ctx.invoked_subcommand in STAGES and "--help" not in sys.argv:  # two orchestrators on one tree: fail here
        from restorebench.lock import take_project_lock

        take_project_lock(ctx.invoked_subcommand)


def load() -> Config:
    return load_config(state.params, state.overrides)


# the allowed values show in --help; a wrong one is refused by check_choice with a did-you-mean
Dataset = Annotated[str, typer.Option("--dataset", "-d", metavar=choices(DATASETS), help="the dataset")]
# the datasets with paired training sets (prepare packs them; ImageNet's pretraining set is `degrade`'s)
PAIRED = tuple(dict.fromkeys(TASK_DATASET.values()))
PairedDataset = Annotated[str, typer.Option("--dataset", "-d", metavar=choices(PAIRED),
                                            help="a dataset with paired training images")]  # fmt: skip
Task = Annotated[str, typer.Option("--task", "-t", metavar=choices(TASKS), help="denoise (SIDD) or deblur (GoPro)")]
Model = Annotated[str, typer.Option("--model", "-m", metavar=choices(MODEL_NAMES), help="the model")]
EvalModel = Annotated[
    str, typer.Option("--model", "-m", metavar=choices(("identity", *MODEL_NAMES)), help="the model, or identity")
]
Strategy = Annotated[str, typer.Option("--strategy", "-s", metavar=choices(STRATEGIES), help="finetuning strategy")]
EvalStrategy = Annotated[
    str, typer.Option("--strategy", "-s", metavar=choices(("none", *STRATEGIES, "official")),
                      help="finetuning strategy (none for identity; official: the released checkpoint)")  # fmt: skip
]
Pretrain = Annotated[
    str, typer.Option("--pretrain", "-p", metavar=choices(PRETRAIN_METHODS),
                      help="the restoration-pretrained init (none: the model's own)")  # fmt: skip
]
Seed = Annotated[int | None, typer.Option("--seed", help="one of `seeds`: trains in place of `seed`, the cell "
                                                          "named STRATEGY-seedN")]  # fmt: skip
EvalSeed = Annotated[int | None, typer.Option("--seed", help="one of `seeds`: scores the cell trained with that "
                                                              "seed (STRATEGY-seedN); without it, the cell "
                                                              "trained with `seed`")]  # fmt: skip


def _check(**given: tuple[str, tuple[str, ...] | list[str]]) -> None:
    for name, (value, allowed) in given.items():
        check_choice(f"--{name}", value, allowed)


# ---------------------------------------------------------------------------------------------- data


@app.command(cls=Command)
def fetch(dataset: Dataset) -> None:
    """Fetch DATASET into data/raw/{dataset}/ (sample, official URL, or a path) and write its manifest."""
    from restorebench.data.fetch import fetch_and_index

    cfg = load()
    ds = cfg.data.dataset(dataset)
    out = Path(cfg.data.root) / "manifests" / f"{dataset}.parquet"
    # staged, indexed and checked before the copy and its manifest replace the previous ones
    manifest = fetch_and_index(dataset, ds.source, Path(cfg.data.root) / "raw" / dataset, out,
                               cache_dir=Path(cfg.data.cache), sample=cfg.data.sample, seed=cfg.seed,
                               min_free_bytes=int(cfg.data.min_free_gb * 2**30), expected_pairs=ds.expected_pairs,
                               workers=cfg.data.workers)  # fmt: skip
    typer.echo(f"fetch {dataset}: {len(manifest)} pairs listed in {out}")


@app.command(cls=Command)
def validate(dataset: Dataset) -> None:
    """Validate DATASET against its manifest; write data/validation/{dataset}.json; fail if invalid."""
    from restorebench.data.validate import validate_stage

    cfg = load()
    ds = cfg.data.dataset(dataset)
    report, out = validate_stage(dataset, root=Path(cfg.data.root), expected_pairs=ds.expected_pairs,
                                 expected_groups=ds.expected_groups, workers=cfg.data.workers)  # fmt: skip
    counts = ", ".join(f"{n} {split}" for split, n in report["counts"].items())
    typer.echo(f"validate {dataset}: valid, {counts} pairs, {report['files_checked']} files decoded -> {out}")


@app.command(cls=Command)
def degrade() -> None:
    """ImageNet's pretraining set (clean patches; degradations synthesised per draw): data/store/imagenet/train/."""
    from restorebench.degrade.stage import degrade_imagenet, describe_degrade

    cfg = load()
    d = cfg.degrade
    stats = degrade_imagenet(root=Path(cfg.data.root), tasks=d.tasks, patch=d.patch, margin=d.margin,
                             patches_per_image=d.patches_per_image, max_images=d.max_images, seed=cfg.seed,
                             workers=cfg.data.workers, where=f"profiles.{cfg.profile}.degrade.tasks")  # fmt: skip
    typer.echo(describe_degrade(stats))


@app.command(cls=Command)
def prepare(dataset: PairedDataset) -> None:
    """Crop DATASET's training pairs into packed sub-images: data/store/{dataset}/train/ (ImageNet's
    pretraining set is packed by `restorebench degrade`)."""
    from restorebench.data.prepare import describe_prepare, prepare_dataset

    if dataset == "imagenet":
        raise RestorebenchError("--dataset", "'imagenet' has no paired training set for prepare; its pretraining "
                                "set (clean patches) is packed by `restorebench degrade`",
                                f"run `restorebench degrade`, or prepare --dataset {' or '.join(PAIRED)}")  # fmt: skip
    _check(dataset=(dataset, PAIRED))
    cfg = load()
    cfg.data.dataset(dataset)
    crop = getattr(cfg.prepare, dataset)
    stats = prepare_dataset(dataset, root=Path(cfg.data.root), size=crop.size, step=crop.step,
                            gopro_input=cfg.prepare.gopro_input, workers=cfg.data.workers)  # fmt: skip
    typer.echo(describe_prepare(dataset, stats))


# ---------------------------------------------------------------------------------------------- training


def _launch(cfg: Config) -> None:
    """Before CUDA starts: pin this job to its own GPU(s) (Snakemake runs several on one machine without
    setting CUDA_VISIBLE_DEVICES), and with train.gpus > 1 re-run this command under torchrun (DDP)."""
    from restorebench.train import distributed

    distributed.pin_devices(cfg.train.gpus)
    distributed.relaunch_under_torchrun(sys.argv[1:], cfg.train.gpus)


def _trained(what: str, summary: dict, dest: Path) -> str:
    """`finetune denoise/nafnet/full: 80 steps in 12.3 s (51.2 img/s), val/psnr 31.20 dB -> ...`."""
    val = summary.get("val_psnr") or summary.get("after", {}).get("val/psnr")
    text = f"{what}: {summary['steps']} steps in {summary['train_seconds']:.1f} s ({summary['train_images_per_s']:.1f} img/s)"
    if summary.get("resumed_from"):
        text += f", resumed at step {summary['resumed_from']}"
    if val is not None:
        text += f", val/psnr {val:.2f} dB"
    return f"{text} -> {dest}"


@app.command(cls=Command)
def pretrain(
    method: Annotated[str, typer.Option("--method", metavar=choices(("ipt", "dcpt")), help="the pretraining method")],
    model: Annotated[str, typer.Option("--model", "-m", metavar=choices(MODEL_NAMES),
                                       help="DCPT: the model to pretrain (IPT: ipt)")] = "ipt",  # fmt: skip
    task: Annotated[str | None, typer.Option("--task", "-t", metavar=choices(TASKS),
                                             help="DCPT: the task whose variant and init it pretrains")] = None,  # fmt: skip
) -> None:
    """Restoration pretraining on the degraded ImageNet store: IPT (multi-task + contrastive) or DCPT
    (degradation classification); resumes from its last good checkpoint."""
    from restorebench.train.finetune import pretrain_dir

    cfg = load()
    _check(method=(method, ("ipt", "dcpt")), model=(model, MODEL_NAMES))
    if method == "ipt" and model != "ipt":
        raise RestorebenchError("--model", f"pretrain --method ipt trains the ipt model, not {model!r}", "drop --model")
    if method == "dcpt":
        if task is None:
            raise RestorebenchError("--task", "pretrain --method dcpt needs it: it pretrains that task's variant",
                                    f"add --task {' or --task '.join(TASKS)}")  # fmt: skip
        _check(task=(task, TASKS))
    run_dir = pretrain_dir(method, model, task)
    _launch(cfg)
    if method == "ipt":  # each method's module alone, so a DCPT job loads (and depends on) no IPT code
        from restorebench.pretrain.ipt import pretrain_stage

        summary = pretrain_stage(cfg, run_dir)
    else:
        from restorebench.pretrain.dcpt import pretrain_stage

        summary = pretrain_stage(cfg, model, task, run_dir)
    if summary:  # {} on DDP ranks other than 0
        what = f"pretrain {method}/{model}" + (f" ({task})" if task else "")
        typer.echo(_trained(what, summary, run_dir / "model.safetensors"))


@app.command(cls=Command)
def finetune(task: Task, model: Model, strategy: Strategy, pretrain: Pretrain = "none", seed: Seed = None) -> None:
    """Finetune one grid cell (TASK x MODEL x STRATEGY, from PRETRAIN's weights); resumes from its last
    good checkpoint. Writes runs/finetune/{task}/{model}/{cell}/ (cell: STRATEGY, or PRETRAIN-STRATEGY)."""
    from restorebench.config import cell_name
    from restorebench.train import finetune as ft
    from restorebench.train.session import guarded

    cfg = load()
    _check(task=(task, TASKS), model=(model, MODEL_NAMES), strategy=(strategy, STRATEGIES),
           pretrain=(pretrain, PRETRAIN_METHODS))  # fmt: skip
    if pretrain == "ipt" and model != "ipt":
        raise RestorebenchError("--pretrain", f"ipt applies to the ipt model only, not {model!r}", "use none or dcpt")
    if seed is not None:
        cfg.seed = seed  # train.json and the checkpoint fingerprint record it
    cell = cell_name(strategy, pretrain, seed)
    run_dir = Path("runs/finetune") / task / model / cell
    _launch(cfg)
    summary = guarded(lambda: ft.finetune(cfg, task, model, strategy, run_dir, pretrain=pretrain),
                      what=f"finetune {task}/{model}/{cell}", batch=cfg.train.batch, patch=str(cfg.train.crop(model)),
                      hint="lower the batch and raise train.accumulate (same global batch), or lower the patch")  # fmt: skip
    if summary:  # {} on DDP ranks other than 0
        typer.echo(_trained(f"finetune {task}/{model}/{cell}", summary, run_dir / "model.safetensors"))


# ---------------------------------------------------------------------------------------------- results


@app.command(cls=Command)
def evaluate(task: Task, model: EvalModel, strategy: EvalStrategy = "none", pretrain: Pretrain = "none",
             seed: EvalSeed = None) -> None:
    """Evaluate MODEL (finetuned with STRATEGY from PRETRAIN's init) on TASK by the published protocol.

    Writes metrics/finetune/{task}/{model}/{cell}.json (PSNR/SSIM only) and, under
    results/eval/{task}/{model}/{cell}/, per_image.csv, provenance.json (what ran: checkpoint sha256, git
    revision, the precision the model ran in: fp32, tf32 or bf16, timing) and sample crops (input | output |
    ground truth); and the run folder's model card (README.md). Cell: STRATEGY or PRETRAIN-STRATEGY.
    """
    from restorebench.config import cell_name
    from restorebench.evaluate import evaluate_cell, official_model
    from restorebench.train.cells import cell_model

    cfg = load()
    _check(task=(task, TASKS), model=(model, ["identity", *MODEL_NAMES]),
           strategy=(strategy, ["none", *STRATEGIES, "official"]), pretrain=(pretrain, PRETRAIN_METHODS))  # fmt: skip
    cell = cell_name(strategy, pretrain, seed)
    e = cfg.evaluate
    official = None
    if model == "identity":
        build = None
    elif strategy == "official":  # a released checkpoint (profiles.P.official.M.T), scored as is
        official = cfg.official.get(model, {}).get(task)
        where = f"profiles.{cfg.profile}.official.{model}.{task}"
        build = lambda: official_model(model, cfg.variant(model, task), official, where=where)  # noqa: E731
    else:
        build = lambda: cell_model(cfg, model, task)  # noqa: E731
    summary, prov, dest = evaluate_cell(
        task=task, model=model, strategy=strategy, pretrain=pretrain, cell=cell, profile=cfg.profile,
        params_hash=cfg.digest(), data_root=Path(cfg.data.root), build=build,
        variant=None if build is None else cfg.variant(model, task), official=official,
        rerun=(f"restorebench -S profile={cfg.profile} finetune --task {task} --model {model} "
               f"--strategy {strategy} --pretrain {pretrain}" + (f" --seed {seed}" if seed is not None else "")),
        max_images=e.max_images, crops=e.crops, crop_size=e.crop_size, tile=e.tile, fallback_tile=e.fallback_tile,
        overlap=e.overlap, batch=e.batch, autocast=e.autocast, tf32=e.tf32,
    )  # fmt: skip
    typer.echo(
        f"evaluate {task}/{model}/{cell}: PSNR {summary['psnr']:.3f} dB, SSIM {summary['ssim_matlab3d']:.4f} "
        f"over {summary['images']} images ({prov['precision']}) -> {dest}"
    )


@app.command(cls=Command)
def aggregate() -> None:
    """Collect the evaluated cells of the current grid (restorebench.pipeline) into results/table.csv (with
    paired-bootstrap significance against the identity floor and each task's best baseline) and
    metrics/summary.json (a DVC metric)."""
    from restorebench import pipeline
    from restorebench.aggregate import build_table, write_outputs

    cfg = load()
    cells = pipeline.load(state.params, state.overrides).table_cells()  # exactly the current grid
    try:
        table, summary = build_table(Path("metrics"), cfg.tasks, variants=cfg.variants,
                                     cells=[(c.task, c.model, c.name) for c in cells])
    except ValueError as err:  # aggregate.py's own errors
        if isinstance(err, RestorebenchError):
            raise
        raise RestorebenchError("metrics/", str(err), "run the evaluate stages first") from err
    write_outputs(table, summary, Path("results/table.csv"), Path("metrics/summary.json"))
    measured = int((table["source"] == "measured").sum())
    typer.echo(f"aggregate: {measured} measured rows -> results/table.csv, metrics/summary.json")


@app.command(cls=Command)
def report() -> None:
    """Write results/report.html (tables, figures against the published numbers, training curves, sample
    crops; one self-contained file, readable offline)."""
    from restorebench.evaluate import git_revision
    from restorebench.report import build_report

    cfg = load()
    table = Path("results/table.csv")
    if not table.exists():
        raise RestorebenchError(table, "not found", "run `restorebench aggregate` first")
    meta = {"profile": cfg.profile, "git_revision": git_revision(), "params_hash": cfg.digest()}
    out = build_report(table, Path("results/report.html"), meta=meta)
    typer.echo(f"report -> {out}")


@app.command(cls=Command)
def compare(
    a_rev: Annotated[str, typer.Argument(metavar="A", help="a git revision, branch or experiment")],
    b_rev: Annotated[str, typer.Argument(metavar="B", help="another one (default: the workspace)")] = "workspace",
) -> None:
    """`dvc metrics diff A B` by task, model and cell (DVC prints its files in no fixed order)."""
    from restorebench import pipeline
    from restorebench.views import compare as compare_revisions

    typer.echo(compare_revisions(pipeline.load(state.params, state.overrides), a_rev, b_rev), nl=False)


@app.command(cls=Command, context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def experiments(ctx: typer.Context) -> None:
    """The experiments' changed params and each changed cell's PSNR, one narrow column per revision; extra
    arguments go to `dvc exp show` (e.g. -a, --rev main)."""
    import json
    import subprocess

    from restorebench import pipeline
    from restorebench.views import experiments as experiment_table

    cmd = ["dvc", "exp", "show", "--json", *ctx.args]
    shown = subprocess.run(cmd, capture_output=True, text=True)
    if shown.returncode != 0:
        raise RestorebenchError(" ".join(cmd), (shown.stderr.strip().splitlines() or ["failed"])[-1],
                                "run it inside a DVC project with experiments (dvc exp run)")  # fmt: skip
    typer.echo(experiment_table(pipeline.load(state.params, state.overrides), json.loads(shown.stdout)), nl=False)


@app.command(cls=Command)
def restore(
    input: Annotated[Path, typer.Argument(help="an image (PNG, JPEG, TIFF; 8- or 16-bit) or a folder of them")],
    output: Annotated[Path, typer.Argument(help="a file with an image suffix (one input: out/a.jpg writes a.jpg) "
                                               "or a folder (never an input)")],
    task: Annotated[str | None, typer.Option("--task", "-t", metavar=choices(TASKS),
                                             help="the cell's task (with --weights: checked)")] = None,  # fmt: skip
    model: Annotated[str | None, typer.Option("--model", "-m", metavar=choices(MODEL_NAMES),
                                              help="the cell's model (with --weights: checked)")] = None,  # fmt: skip
    cell: Annotated[str | None, typer.Option(help="grid cell (STRATEGY or PRETRAIN-STRATEGY); default: the "
                                                  "model's best cell in results/table.csv, else full")] = None,
    weights: Annotated[Path | None, typer.Option(help="a finetuned run folder or its model.safetensors "
                                                      "(instead of --cell)")] = None,
    tile: Annotated[int, typer.Option(help="restore images larger than this in overlapping tiles (0: never)")] = 512,
    overlap: Annotated[int, typer.Option(help="tile overlap in pixels")] = 32,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="replace outputs that exist already")] = False,
    max_pixels: Annotated[int | None, typer.Option(help="refuse larger inputs (default PIL's decompression-bomb "
                                                        "limit, 178956970; 0: no limit)")] = None,
) -> None:
    """Restore your own images with a finetuned cell; writes images of each input's bit depth. Replaces no
    existing file without --overwrite. Memory: an image over --tile pixels on a side is restored tile by tile,
    never held as float: about twice the image's own bytes plus one tile (restorebench.restore)."""
    from restorebench.restore import require_project, restore_images

    if cell is not None and weights is not None:
        raise RestorebenchError("--cell / --weights", "pass one, not both")
    _check(**{k: (v, allowed) for k, v, allowed in (("task", task, TASKS), ("model", model, MODEL_NAMES))
              if v is not None})  # fmt: skip
    if weights is None:
        require_project()
        if task is None or model is None:
            raise RestorebenchError("--task / --model", "missing", "name the cell's --task and --model (and --cell), "
                                                                   "or pass --weights")  # fmt: skip
    warnings: list[str] = []
    jobs = restore_images(input, output, task=task, model=model, cell=cell, weights=weights,
                          tile=tile or None, overlap=overlap, overwrite=overwrite, max_pixels=max_pixels,
                          on_start=lambda w, c: warnings.extend(_describe_weights(w, c)))  # fmt: skip
    where = jobs[0].dest if len(jobs) == 1 else output
    typer.echo(f"restored {len(jobs)} image{'s' if len(jobs) != 1 else ''} -> {where}")
    for warning in warnings:  # after the images, so that a failure stays one line
        typer.secho(f"warning: {warning}", err=True, fg=typer.colors.YELLOW)


def _describe_weights(weights: Path, config: dict) -> list[str]:
    """Print which weights restore, how they were trained and scored; return the warnings for demo weights
    (printed on stderr once the images are written)."""
    from restorebench.restore import describe

    text, warning = describe(weights, config, recipe_steps=_published_steps(config))
    typer.echo(f"weights: {weights} ({text})")
    return [warning] if warning else []


def _published_steps(config: dict) -> int | None:
    """The steps of the run's model on its task in the params file's paper profile (the published recipe),
    to tell weights trained for a small share of it; None for a demo run (warned anyway) or where the params
    file or its paper profile cannot say."""
    if config.get("profile") == "demo" or not state.params.is_file():
        return None
    try:
        paper = load_config(state.params, ["profile=paper"])
        return sum(stage.iters for stage in paper.train.stages(config["model"], config["task"]))
    except (RestorebenchError, KeyError):
        return None


# ---------------------------------------------------------------------------------------------- tools


@app.command(cls=Command)
def models(
    names: Annotated[list[str] | None, typer.Argument(metavar="[MODEL]...", help="only these models")] = None,
    macs: Annotated[bool, typer.Option("--macs", help="also count GMACs at 256x256 (slow for paper models)")] = False,
) -> None:
    """List models and variants: parameter counts (total, per group), what the active profile loads into each
    variant it uses (its `pretrained` entry: a checkpoint, or a random init) and the share of the parameters
    that checkpoint fills; one row as soon as it is counted (on the meta device: no weights are allocated);
    GMACs with --macs. `--profile paper models` shows the paper profile's."""
    from restorebench.models import VARIANTS
    from restorebench.models.summary import table_lines

    for name in names or []:
        check_choice("MODEL", name, tuple(VARIANTS))
    cfg = load() if state.params.is_file() else None  # outside a project: what each variant could load
    for text in table_lines(names, macs=macs, profile=cfg and cfg.profile, variants=cfg and cfg.variants,
                            pretrained=cfg and cfg.pretrained, params=state.params):  # fmt: skip
        typer.echo(text)


@app.command(cls=Command)
def doctor() -> None:
    """Report Python, torch, CUDA/GPU, disk space, the environment against requirements.lock, datasets
    present and valid, and hub reachability."""
    from restorebench.doctor import run_doctor

    ok = run_doctor(load())
    raise typer.Exit(0 if ok else 1)


@pipeline_app.command("dvc", cls=Command)
def pipeline_dvc(
    output: Annotated[Path | None, typer.Option("--output", "-o", help="write here (default: print)")] = None,
    check: Annotated[bool, typer.Option(help="exit 1 if --output (dvc.yaml) differs from a fresh generation")] = False,
) -> None:
    """dvc.yaml generated from restorebench.pipeline and the params: `restorebench pipeline dvc -o dvc.yaml`."""
    from restorebench import io, pipeline
    from restorebench.dvcyaml import dvc_yaml

    load()  # a bad params file fails here, with its key
    text = dvc_yaml(pipeline.load(state.params, state.overrides))
    if output is None:
        typer.echo(text, nl=False)
    elif check:
        if not output.exists() or output.read_text() != text:
            raise RestorebenchError(output, "differs from a fresh generation", f"run `restorebench pipeline dvc -o {output}`")
    else:
        with io.atomic_path(output, suffix=".yaml") as tmp:
            tmp.write_text(text)


@pipeline_app.command("code", cls=Command)
def pipeline_code(
    output: Annotated[Path, typer.Option("--output", "-o", help="the folder of fingerprints")] = Path(".restorebench/code"),
) -> None:
    """Fingerprint the sources of every stage family (dvc.yaml's `code` stage: each stage's code dep)."""
    from restorebench.dvcyaml import write_fingerprints

    typer.echo(f"pipeline code: {write_fingerprints(output)} fingerprints -> {output}")


@app.command("profile", cls=Command)
def use_profile(
    name: Annotated[str, typer.Argument(metavar="NAME", help="a profile of the params file (demo, paper)")],
) -> None:
    """Switch the params file to profile NAME: `profile` and the top-level grid lists (models, strategies,
    pretrain_models, pretrain_strategies) set to what profiles.NAME.grid declares, every other line kept; the
    dvc.yaml beside it regenerated (its metrics list and the demo-only stages follow the grid and profile).
    Then `dvc repro`, `dvc exp run` or `snakemake` run that profile's whole grid; `restorebench profile demo`
    switches back."""
    from restorebench import io, pipeline
    from restorebench.config import use_profile as write_profile
    from restorebench.dvcyaml import GENERATED_MARK, dvc_yaml

    changed = write_profile(state.params, name)
    said = ", ".join(changed) if changed else "nothing: it is already set"
    typer.echo(f"profile {name}: {state.params} changed {said}")
    dvc_file = state.params.parent / "dvc.yaml"
    if dvc_file.is_file() and dvc_file.read_text().startswith(GENERATED_MARK):
        text = dvc_yaml(pipeline.load(state.params, state.overrides))
        if text != dvc_file.read_text():
            with io.atomic_path(dvc_file, suffix=".yaml") as tmp:
                tmp.write_text(text)
            typer.echo(f"profile {name}: {dvc_file} regenerated for its grid (commit both)")


@app.command(cls=Command)
def plan(
    gpu_memory: Annotated[float, typer.Option("--gpu-memory", help="GiB of memory of the GPU each cell runs on")] = 80.0,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON (stages, cells, total) instead of tables")] = False,
) -> None:
    """Before anything runs: every stage's disk, CPU-hours and host memory, every training run's micro-batch,
    GPU memory, TFLOPs and GPU-hours, and the totals (`restorebench --profile paper plan`: the paper study)."""
    from restorebench import pipeline
    from restorebench.plan import run_plan

    load()  # a bad params file fails here, with its key
    run_plan(pipeline.load(state.params, state.overrides), gpu_memory_gib=gpu_memory, as_json=as_json)


@config_app.command("show", cls=Command)
def config_show(
    section: Annotated[str | None, typer.Argument(help="one top-level section (e.g. train), or all")] = None,
) -> None:
    """Print the resolved configuration of the active profile (or one SECTION of it) as YAML; a 0 whose
    meaning is not a plain zero (a recipe's `steps: 0` takes train.steps) carries a comment saying it."""
    import yaml

    from restorebench.cli_support import annotate_zeros

    cfg = load()
    resolved = cfg.to_dict()
    if section is not None:
        check_choice("SECTION", section, tuple(resolved))
        resolved = {section: resolved[section]}
    typer.echo(annotate_zeros(yaml.safe_dump(resolved, sort_keys=False).rstrip(), cfg))


@app.command(cls=Command)
def segpretrain(model: Model) -> None:
    """Demo: train MODEL (swin_upernet, swin_mask2former, vit_adapter) as a segmenter on a seeded synthetic set
    and write its checkpoint in the published format to runs/segmentation/{model}/ (the hub snapshot layout;
    ViT-Adapter's mmseg .pth), the checkpoint the demo's `pretrained` entries name."""
    from restorebench.pretrain import segmentation as seg

    cfg = load()
    _check(model=(model, seg.SEGMENTATION_MODELS))
    summary = seg.segmentation_stage(cfg, model, seg.output_path(model))
    held = summary["held_out"]
    typer.echo(f"segpretrain {model}: {summary['steps']} steps in {summary['train_seconds']:.1f} s, held-out pixel "
               f"accuracy {held['pixel_accuracy']:.3f} (chance {held['chance_accuracy']:.3f}), mIoU {held['miou']:.3f} "
               f"-> {seg.checkpoint_path(model)}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
