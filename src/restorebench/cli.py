"""The `restorebench` command: one thin subcommand per pipeline stage.

Each command parses its options, loads the config once, calls one library function and writes its
outputs atomically. Snakemake rules and dvc.yaml stages call exactly these commands.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from restorebench.config import Config, ConfigError, load_config
from restorebench.errors import RestorebenchError


class _App(typer.Typer):
    """The typer app, printing a known failure (RestorebenchError) as one line and exiting 1; its traceback
    only with --debug or RESTOREBENCH_DEBUG=1. Other exceptions are bugs and keep their traceback."""

    def __call__(self, *args, **kwargs):
        try:
            return super().__call__(*args, **kwargs)
        except RestorebenchError as err:
            if os.environ.get("RESTOREBENCH_DEBUG", "") not in ("", "0"):
                raise
            typer.secho(f"error: {err}", err=True, fg=typer.colors.RED)
            sys.exit(1)


app = _App(
    help="restorebench: do segmentation transformers make good image restorers? One subcommand per stage.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
config_app = typer.Typer(help="Inspect the resolved configuration.", no_args_is_help=True)
app.add_typer(config_app, name="config")
pipeline_app = typer.Typer(help="The pipeline's definition (restorebench.pipeline) for the orchestrators.",
                           no_args_is_help=True)
app.add_typer(pipeline_app, name="pipeline")


class _State:
    params: Path = Path("params.yaml")
    overrides: list[str] = []


state = _State()


@app.callback()
def main(
    params: Annotated[Path, typer.Option(help="params file (both orchestrators read the same one)")] = Path(
        "params.yaml"
    ),
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", "-S", help="override KEY=VALUE, e.g. -S profile=paper (repeatable)"),
    ] = None,
    threads: Annotated[
        int, typer.Option(help="CPU threads for torch (0: the CPUs this process may use, or OMP_NUM_THREADS); "
                               "Snakemake passes each rule's `threads`")
    ] = 0,
    debug: Annotated[bool, typer.Option("--debug", help="show the traceback of a known failure")] = False,
) -> None:
    if debug:
        os.environ["RESTOREBENCH_DEBUG"] = "1"
    state.params = params
    state.overrides = list(set_ or [])
    from restorebench.data.parallel import set_torch_threads

    set_torch_threads(threads)


def fail(message: str, code: int = 1) -> typer.Exit:
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    return typer.Exit(code)


def load() -> Config:
    try:
        return load_config(state.params, state.overrides)
    except ConfigError as err:
        raise fail(str(err)) from None


def data_dir(cfg: Config, *parts: str) -> Path:
    return Path(cfg.data.root).joinpath(*parts)


Dataset = Annotated[str, typer.Option("--dataset", "-d", help="sidd | gopro | imagenet")]


def _check_dataset(cfg: Config, dataset: str) -> None:
    try:
        cfg.data.dataset(dataset)
    except ConfigError as err:
        raise fail(str(err)) from None


# ---------------------------------------------------------------------------------------------- data


@app.command()
def fetch(dataset: Dataset) -> None:
    """Fetch DATASET into data/raw/{dataset}/ (sample, official URL, or a path) and write its manifest."""
    from restorebench.data.fetch import fetch_and_index

    cfg = load()
    _check_dataset(cfg, dataset)
    ds = cfg.data.dataset(dataset)
    out = data_dir(cfg, "manifests", f"{dataset}.parquet")
    # staged, indexed and checked before the copy and its manifest replace the previous ones
    manifest = fetch_and_index(dataset, ds.source, data_dir(cfg, "raw", dataset), out,
                               cache_dir=Path(cfg.data.cache), sample=cfg.data.sample, seed=cfg.seed,
                               min_free_bytes=int(cfg.data.min_free_gb * 2**30), expected_pairs=ds.expected_pairs,
                               workers=cfg.data.workers)  # fmt: skip
    typer.echo(f"{dataset}: {len(manifest)} rows -> {out}")


@app.command()
def validate(dataset: Dataset) -> None:
    """Validate DATASET against its manifest; write data/validation/{dataset}.json; fail if invalid."""
    import pandas as pd

    from restorebench.data.validate import validate_dataset, write_report

    cfg = load()
    _check_dataset(cfg, dataset)
    ds = cfg.data.dataset(dataset)
    manifest_path = data_dir(cfg, "manifests", f"{dataset}.parquet")
    if not manifest_path.exists():
        raise fail(f"{manifest_path}: manifest not found; run `restorebench fetch --dataset {dataset}` first")
    report = validate_dataset(
        dataset,
        pd.read_parquet(manifest_path),
        data_dir(cfg, "raw", dataset),
        expected_pairs=ds.expected_pairs,
        expected_groups=ds.expected_groups,
        workers=cfg.data.workers,
    )
    out = data_dir(cfg, "validation", f"{dataset}.json")
    write_report(report, out)
    if not report["success"]:
        from restorebench.data.validate import ValidationFailed

        raise ValidationFailed(report, report_path=out)  # a dataset-level problem reads "(dataset): ..."
    typer.echo(f"{dataset}: valid, {report['counts']} -> {out}")


# ---------------------------------------------------------------------------------------------- later stages


Task = Annotated[str, typer.Option("--task", "-t", help="denoise (SIDD) | deblur (GoPro)")]
Model = Annotated[str, typer.Option("--model", "-m", help="a name from MODELS, or identity")]
Strategy = Annotated[str, typer.Option("--strategy", "-s", help="finetuning strategy (none for identity)")]
Pretrain = Annotated[str, typer.Option("--pretrain", "-p", help="none | ipt | dcpt: the restoration-pretrained init")]
Seed = Annotated[int | None, typer.Option("--seed", help="one of `seeds`: trains in place of `seed`, the cell "
                                                          "named STRATEGY-seedN")]


def _check_choices(**choices: tuple[str, list[str] | tuple[str, ...]]) -> None:
    from restorebench.config import check_choice

    try:
        for name, (value, allowed) in choices.items():
            check_choice(name, value, allowed)
    except ConfigError as err:
        raise fail(str(err)) from None


def _training_errors(what: str, err: Exception, *, batch: int, patch: str, hint: str) -> typer.Exit:
    """A clear message for the ways a training run (pretrain or finetune) ends early; on out-of-memory it
    names the run's batch and patch and what to change (`hint`)."""
    from restorebench.train.loop import Preempted

    if isinstance(err, Preempted):
        return fail(str(err), code=143)
    if isinstance(err, RuntimeError) and "out of memory" in str(err).lower():
        return fail(f"{what}: out of GPU memory at batch {batch}, patch {patch}: {str(err).splitlines()[0]}\n"
                    f"  hint: {hint}")
    return fail(f"{what}: {err}")


def _launch(cfg: Config) -> None:
    """Before CUDA starts: pin this job to its own GPU(s) (Snakemake runs several on one machine without
    setting CUDA_VISIBLE_DEVICES), and with train.gpus > 1 re-run this command under torchrun (DDP)."""
    from restorebench.train import distributed

    try:
        distributed.pin_devices(cfg.train.gpus)
    except (TimeoutError, RuntimeError, ValueError) as err:
        raise fail(str(err)) from None
    distributed.relaunch_under_torchrun(sys.argv[1:], cfg.train.gpus)


def _handled(err: Exception) -> bool:
    from restorebench.train.loop import Preempted, TrainingDiverged

    oom = isinstance(err, RuntimeError) and "out of memory" in str(err).lower()
    return isinstance(err, Preempted | TrainingDiverged | ValueError | FileNotFoundError) or oom


@app.command()
def degrade() -> None:
    """Synthesize the degraded ImageNet pretraining set into data/store/imagenet/train/."""
    import pandas as pd

    from restorebench.data.store import degrade_store

    cfg = load()
    d = cfg.degrade
    if not d.tasks:
        raise fail(f"profiles.{cfg.profile}.degrade.tasks: empty; list at least one task -> pipeline")
    root = Path(cfg.data.root)
    manifest_path = root / "manifests" / "imagenet.parquet"
    if not manifest_path.exists():
        raise fail(f"{manifest_path}: manifest not found; run `restorebench fetch --dataset imagenet` first")
    rows = pd.read_parquet(manifest_path, columns=["split", "pair_id", "gt_path"])
    rows = rows[rows["split"] == "train"]
    if d.max_images:
        rows = rows.head(d.max_images)
    raw = root / "raw" / "imagenet"
    images = ((r.pair_id, raw / r.gt_path) for r in rows.itertuples())  # a stream, not a list
    try:
        stats = degrade_store(
            images,
            root / "store" / "imagenet" / "train",
            tasks=d.tasks,
            patch=d.patch,
            patches_per_image=d.patches_per_image,
            seed=cfg.seed,
            workers=cfg.data.workers,
            total=len(rows),
        )
    except (ValueError, OSError) as err:
        raise fail(f"degrade: {err}") from None
    typer.echo(f"degrade: {stats}")


@app.command()
def prepare(dataset: Dataset) -> None:
    """Crop DATASET's training pairs into packed sub-images: data/store/{dataset}/train/."""
    import pandas as pd

    from restorebench.data.store import prepare_store

    cfg = load()
    _check_dataset(cfg, dataset)
    if dataset not in ("sidd", "gopro"):
        raise fail(f"prepare: dataset {dataset!r} has no paired training set; choose sidd or gopro")
    crop = getattr(cfg.prepare, dataset)
    root = Path(cfg.data.root)
    manifest_path = root / "manifests" / f"{dataset}.parquet"
    if not manifest_path.exists():
        raise fail(f"{manifest_path}: manifest not found; run `restorebench fetch --dataset {dataset}` first")
    rows = pd.read_parquet(manifest_path)
    rows = rows[rows["split"] == "train"]
    lq_col = "alt_path" if dataset == "gopro" and cfg.prepare.gopro_input == "blur_gamma" else "lq_path"
    raw = root / "raw" / dataset
    pairs = [(r.pair_id, raw / getattr(r, lq_col), raw / r.gt_path) for r in rows.itertuples()]
    try:
        stats = prepare_store(
            pairs,
            root / "store" / dataset / "train",
            size=crop.size,
            step=crop.step,
            workers=cfg.data.workers,
            meta={"dataset": dataset, "lq": lq_col},
        )
    except (ValueError, OSError) as err:
        raise fail(f"prepare {dataset}: {err}") from None
    typer.echo(f"prepare {dataset}: {stats}")


@app.command()
def pretrain(
    method: Annotated[str, typer.Option("--method", help="ipt | dcpt")],
    model: Annotated[str, typer.Option("--model", "-m", help="DCPT: the model to pretrain (IPT: ipt)")] = "ipt",
    task: Annotated[
        str | None, typer.Option("--task", "-t", help="DCPT: the task whose variant and init it pretrains")
    ] = None,
) -> None:
    """Restoration pretraining on the degraded ImageNet store: IPT (multi-task + contrastive) or DCPT
    (degradation classification); resumes from its last good checkpoint."""
    from restorebench.config import MODEL_NAMES, TASKS
    from restorebench.train.finetune import pretrain_dir

    cfg = load()
    _check_choices(method=(method, ("ipt", "dcpt")), model=(model, MODEL_NAMES))
    if method == "ipt" and model != "ipt":
        raise fail(f"pretrain --method ipt trains the ipt model, not {model!r}")
    if method == "dcpt":
        if task is None:
            raise fail("pretrain --method dcpt needs --task (denoise | deblur): it pretrains that task's variant")
        _check_choices(task=(task, TASKS))
    run_dir = pretrain_dir(method, model, task)
    _launch(cfg)
    what = f"pretrain {method}/{model}" + (f" ({task})" if task else "")
    try:
        if method == "ipt":
            from restorebench.pretrain.ipt import pretrain_ipt

            summary = pretrain_ipt(cfg, run_dir)
        else:
            from restorebench.pretrain.dcpt import pretrain_dcpt

            summary = pretrain_dcpt(cfg, model, task, run_dir)
    except Exception as err:
        if _handled(err):
            p = f"profiles.{cfg.profile}.pretrain.{method}"
            run = cfg.pretrain.ipt if method == "ipt" else cfg.pretrain.dcpt
            if method == "dcpt":
                patch = str(cfg.pretrain.dcpt.patch)
            else:  # IPT trains on inputs of its variant's tile size
                from restorebench.models.ipt import variant_patch_size

                patch = str(variant_patch_size(cfg.pretrain.ipt.variant))
            raise _training_errors(what, err, batch=run.batch, patch=patch,
                                   hint=f"lower {p}.batch (pretraining has no gradient accumulation)") from None
        raise
    if not summary:  # a DDP rank other than 0
        return
    after = ", ".join(f"{k} {v:.4g}" for k, v in summary["after"].items() if k.startswith("val"))
    typer.echo(
        f"{what}: {summary['steps']} steps in {summary['train_seconds']:.1f}s "
        f"({summary['train_images_per_s']:.1f} img/s); {after} -> {run_dir / 'model.safetensors'}"
    )


@app.command()
def finetune(task: Task, model: Model, strategy: Strategy, pretrain: Pretrain = "none", seed: Seed = None) -> None:
    """Finetune one grid cell (TASK x MODEL x STRATEGY, from PRETRAIN's weights); resumes from its last
    good checkpoint. Writes runs/finetune/{task}/{model}/{cell}/ (cell: STRATEGY, or PRETRAIN-STRATEGY)."""
    from restorebench.config import MODEL_NAMES, PRETRAIN_METHODS, STRATEGIES, TASKS, cell_name
    from restorebench.train.finetune import finetune as run_cell

    cfg = load()
    _check_choices(task=(task, TASKS), model=(model, MODEL_NAMES), strategy=(strategy, STRATEGIES),
                   pretrain=(pretrain, PRETRAIN_METHODS))  # fmt: skip
    if pretrain == "ipt" and model != "ipt":
        raise fail(f"--pretrain ipt applies to the ipt model only, not {model!r}")
    if seed is not None:
        cfg.seed = seed  # train.json and the checkpoint fingerprint record it
    cell = cell_name(strategy, pretrain, seed)
    run_dir = Path("runs/finetune") / task / model / cell
    _launch(cfg)
    try:
        summary = run_cell(cfg, task, model, strategy, run_dir, pretrain=pretrain)
    except Exception as err:
        if _handled(err):
            raise _training_errors(f"finetune {task}/{model}/{cell}", err, batch=cfg.train.batch,
                                   patch=str(cfg.train.crop(model)),
                                   hint="lower the batch and raise train.accumulate (same global batch), or "
                                        "lower the patch") from None
        raise
    if not summary:  # a DDP rank other than 0
        return
    typer.echo(
        f"{task}/{model}/{cell}: {summary['steps']} steps in {summary['train_seconds']:.1f}s "
        f"({summary['train_images_per_s']:.1f} img/s) -> {run_dir / 'model.safetensors'}"
    )


@app.command()
def evaluate(task: Task, model: Model, strategy: Strategy = "none", pretrain: Pretrain = "none",
             seed: Seed = None) -> None:
    """Evaluate MODEL (finetuned with STRATEGY from PRETRAIN's init) on TASK by the published protocol.

    Writes metrics/finetune/{task}/{model}/{cell}.json (PSNR/SSIM only) and, under
    results/eval/{task}/{model}/{cell}/, per_image.csv, provenance.json (what ran: checkpoint sha256, git
    revision, the precision the model ran in: fp32, tf32 or bf16, timing) and sample crops (input | output |
    ground truth); and the run folder's model card (README.md). Cell: STRATEGY or PRETRAIN-STRATEGY.
    """
    from restorebench import evaluate as ev
    from restorebench.config import MODEL_NAMES, PRETRAIN_METHODS, TASK_DATASET, TASKS, cell_name

    cfg = load()
    _check_choices(task=(task, TASKS), model=(model, ["identity", *MODEL_NAMES]),
                   pretrain=(pretrain, PRETRAIN_METHODS))  # fmt: skip
    cell = cell_name(strategy, pretrain, seed)
    checkpoint = None
    extra: dict = {}
    if model == "identity":
        restorer = ev.identity
        extra = {"params": 0, "init": "none", "pretrain": "none", "precision": "fp32"}  # no model: the input as is
    elif strategy == "official":  # a released checkpoint (profiles.P.official.M.T), scored as is
        restorer, checkpoint, extra = _load_official(cfg, task, model)
    else:
        restorer, checkpoint, extra = _load_finetuned(cfg, task, model, cell, strategy, pretrain)
    data_root = Path(cfg.data.root)
    dataset = TASK_DATASET[task]
    out_dir = Path("results/eval") / task / model / cell
    try:
        table, summary = ev.evaluate(
            restorer,
            task,
            ev.eval_items(task, data_root),
            max_images=cfg.evaluate.max_images,
            crops_dir=out_dir / "crops",
            crops=cfg.evaluate.crops,
            crop_size=cfg.evaluate.crop_size,
        )
    except (FileNotFoundError, KeyError, ValueError) as err:
        raise fail(f"evaluate {task}/{model}/{cell}: {err}") from None
    record = {**extra, "model": model, "strategy": strategy, "pretrain": pretrain, "cell": cell,
              "profile": cfg.profile}
    record.update(ev.provenance(params_hash=cfg.digest(), data_files=[data_root / "manifests" / f"{dataset}.parquet"],
                                checkpoint=checkpoint))  # fmt: skip
    dest = Path("metrics/finetune") / task / model / f"{cell}.json"
    prov = ev.write_results(table, summary, metrics_path=dest, out_dir=out_dir, record=record)
    if checkpoint is not None:  # the cell's run folder (an official cell's holds only its card)
        from restorebench.card import write_model_card

        write_model_card(Path("runs/finetune") / task / model / cell, {k: summary[k] for k in ev.METRIC_KEYS}, prov)
    typer.echo(
        f"{task}/{model}/{cell}: PSNR {summary['psnr']:.3f} dB, SSIM {summary['ssim_matlab3d']:.4f} "
        f"over {summary['images']} images ({prov['precision']}) -> {dest}"
    )


def _restorer(cfg: Config, net):
    """`net` as a restorer with the profile's tiling and precision; (restorer, metrics fields)."""
    import torch

    from restorebench.infer import ProtocolRestorer, precision

    e = cfg.evaluate
    device = "cuda" if torch.cuda.is_available() else "cpu"
    net.to(device)
    # whole images (the protocols); tiles only when an image runs out of memory (recorded in the metrics)
    restorer = ProtocolRestorer(net, device=device, fallback_tile=e.fallback_tile, overlap=e.overlap,
                                batch=e.batch, autocast=e.autocast, tf32=e.tf32, tile=e.tile)
    return restorer, {"params": sum(p.numel() for p in net.parameters()),
                      "precision": precision(device, autocast=e.autocast, tf32=e.tf32)}


def _load_official(cfg: Config, task: str, model: str):
    """The released checkpoint profiles.P.official.M.T, built at the profile's variant (strict keys)."""
    from restorebench.models import build_model

    key = f"profiles.{cfg.profile}.official.{model}.{task}"
    path = cfg.official.get(model, {}).get(task)
    if not path:
        raise fail(f"{key}: no released checkpoint named; the cell `official` needs one")
    if not Path(path).is_file():
        raise fail(f"{key}: {path} not found (download the release file, see params.yaml)")
    try:
        net = build_model(model, variant=cfg.variant(model, task), pretrained=path)
    except (RuntimeError, ValueError, KeyError) as err:
        raise fail(f"{key}: {path} does not load into {model} variant {cfg.variant(model, task)}: {err}") from None
    restorer, extra = _restorer(cfg, net)
    return restorer, Path(path), {**extra, "init": f"official:{path}", "pretrain": "none"}


def _load_finetuned(cfg: Config, task: str, model: str, cell: str, strategy: str, pretrain: str):
    """The finetuned weights of one grid cell, as a restorer with the profile's tiling and precision."""
    from restorebench.models.weights import read_state_dict
    from restorebench.train.finetune import cell_model

    run = Path("runs/finetune") / task / model / cell
    weights = run / "model.safetensors"
    if not weights.exists():
        raise fail(
            f"{weights}: no finetuned weights; run `restorebench finetune --task {task} --model {model} "
            f"--strategy {strategy} --pretrain {pretrain}` first"
        )
    net = cell_model(cfg, model, task)
    try:
        net.load_state_dict(read_state_dict(weights), strict=True)  # a cut file: WeightsError naming it
    except RuntimeError as err:
        raise fail(f"{weights} does not fit {model} variant {cfg.variant(model, task)}: {err}") from None
    restorer, extra = _restorer(cfg, net)
    meta_path = run / "train.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    extra.update({k: meta[k] for k in ("init", "pretrain", "train_seconds", "seed") if k in meta})
    return restorer, weights, extra


@app.command()
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
    except ValueError as err:
        raise fail(str(err)) from None
    write_outputs(table, summary, Path("results/table.csv"), Path("metrics/summary.json"))
    measured = int((table["source"] == "measured").sum())
    typer.echo(f"{measured} measured rows -> results/table.csv, metrics/summary.json")


@app.command()
def report() -> None:
    """Write results/report.html (tables, figures against the published numbers, training curves, sample
    crops; one self-contained file, readable offline)."""
    from restorebench.evaluate import git_revision
    from restorebench.report import build_report

    cfg = load()
    table = Path("results/table.csv")
    if not table.exists():
        raise fail(f"{table}: not found; run `restorebench aggregate` first")
    meta = {"profile": cfg.profile, "git_revision": git_revision(), "params_hash": cfg.digest()}
    out = build_report(table, Path("results/report.html"), meta=meta)
    typer.echo(f"report -> {out}")


@app.command()
def restore(
    input: Annotated[Path, typer.Argument(help="an image (PNG, JPEG, TIFF; 8- or 16-bit) or a folder of them")],
    output: Annotated[Path, typer.Argument(help="a .png file (one input) or a folder (never an input)")],
    task: Annotated[str | None, typer.Option("--task", "-t", help="denoise | deblur (with --weights: checked)")] = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="a name from MODELS (with --weights: checked)")] = None,
    cell: Annotated[str | None, typer.Option(help="grid cell (STRATEGY or PRETRAIN-STRATEGY); default: the "
                                                  "model's best cell in results/table.csv, else full")] = None,
    weights: Annotated[Path | None, typer.Option(help="a finetuned run folder or its model.safetensors "
                                                      "(instead of --cell)")] = None,
    tile: Annotated[int, typer.Option(help="restore images larger than this in overlapping tiles (0: never)")] = 512,
    overlap: Annotated[int, typer.Option(help="tile overlap in pixels")] = 32,
) -> None:
    """Restore your own images with a finetuned cell; writes PNGs of each input's bit depth."""
    from restorebench.restore import describe, restore_images

    if cell is not None and weights is not None:
        raise fail("pass --cell or --weights, not both")
    if weights is None and (task is None or model is None):
        raise fail("name the cell's --task and --model (and --cell), or pass --weights")
    jobs = restore_images(input, output, task=task, model=model, cell=cell, weights=weights,
                          tile=tile or None, overlap=overlap,
                          on_start=lambda w, c: typer.echo(f"weights: {w} ({describe(c)})"))  # fmt: skip
    where = jobs[0].dest if len(jobs) == 1 else output
    typer.echo(f"restored {len(jobs)} image{'s' if len(jobs) != 1 else ''} -> {where}")


# ---------------------------------------------------------------------------------------------- tools


@app.command()
def models() -> None:
    """List models and variants: parameter counts (total, per group), the share a segmentation checkpoint
    fills, GMACs at 256x256."""
    from rich.console import Console
    from rich.table import Table

    from restorebench.models import VARIANTS
    from restorebench.models.summary import summarize

    table = Table(title="restorebench models")
    cols = ("model", "variant", "params (M)", "backbone", "decoder", "head", "from ckpt", "GMACs@256")
    for col in cols:
        table.add_column(col, justify="right" if col not in ("model", "variant") else "left", no_wrap=True)
    notes: list[str] = []
    for name, variants in VARIANTS.items():
        for variant in variants:
            row = summarize(name, variant)
            share = row["from_checkpoint"]
            if row["note"]:  # a variant that does not start from a segmentation checkpoint says so
                notes.append(f"({len(notes) + 1}) {name} {variant}: {row['note']}")
            table.add_row(
                name,
                variant + (f" ({len(notes)})" if row["note"] else ""),
                f"{row['params'] / 1e6:.2f}",
                *(f"{row['groups'][g] / 1e6:.2f}" for g in ("backbone", "decoder", "head")),
                f"{100 * share:.1f}%" if share is not None else "-",
                f"{row['gmacs']:.1f}" if row["gmacs"] is not None else "-",
            )
    table.caption = "\n".join(["from ckpt: share of the parameters its segmentation checkpoint fills", *notes])
    Console().print(table)


@app.command()
def doctor() -> None:
    """Report Python, torch, CUDA/GPU, disk space, datasets present and valid, and hub reachability."""
    from restorebench.doctor import run_doctor

    ok = run_doctor(load())
    raise typer.Exit(0 if ok else 1)


@pipeline_app.command("dvc")
def pipeline_dvc(
    output: Annotated[Path | None, typer.Option("--output", "-o", help="write here (default: print)")] = None,
    check: Annotated[bool, typer.Option(help="exit 1 if --output (dvc.yaml) differs from a fresh generation")] = False,
) -> None:
    """dvc.yaml generated from restorebench.pipeline and the params: `restorebench pipeline dvc -o dvc.yaml`."""
    from restorebench import io, pipeline

    load()  # a bad params file fails here, with its key
    text = pipeline.dvc_yaml(pipeline.load(state.params, state.overrides))
    if output is None:
        typer.echo(text, nl=False)
    elif check:
        if not output.exists() or output.read_text() != text:
            raise fail(f"{output}: differs from a fresh generation; run `restorebench pipeline dvc -o {output}`")
    else:
        with io.atomic_path(output, suffix=".yaml") as tmp:
            tmp.write_text(text)


@config_app.command("show")
def config_show() -> None:
    """Print the resolved configuration of the active profile as YAML."""
    import yaml

    typer.echo(yaml.safe_dump(load().to_dict(), sort_keys=False).rstrip())


def run() -> None:  # pragma: no cover - console entry
    app(prog_name="restorebench")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
