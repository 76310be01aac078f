"""`restorebench plan`: what the whole grid of the resolved profile will cost, before anything runs.

Every stage of restorebench.pipeline (`pipe.stages()`) gets its disk written, host CPU-hours and peak host
memory; every training run (each trained cell of `pipe.cells()`, and each pretraining run) gets its
parameters, global batch, the micro-batch and accumulation it will use on a GPU of `gpu_memory` GiB, the
estimated GPU memory, training TFLOPs per step, steps and GPU-hours at a stated MFU.

Where the figures come from (nothing is typed in by hand):
- GPU memory and FLOPs: restorebench.estimate, a forward + backward of the model at its real size on the
  meta device (saved tensors, FLOP formulas); results are cached per architecture, crop and strategy
  (restorebench.costs; a plan of the paper grid measures about forty models once);
- data stages: seconds, bytes and peak memory per item from src/restorebench/scale_figures.json
  (benchmarks/scale.py measures them; each entry says how it was obtained), times the profile's counts;
- GPU-hours: steps x TFLOPs per step / (peak x MFU). The MFU is the one benchmarks/ measured on a GPU when
  `results/bench_gpu.json` holds it (per model), otherwise ASSUMED_MFU, and the table says which.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from restorebench.config import Config
from restorebench.costs import BUDGET_SHARE, CostCache, stage_costs
from restorebench.estimate import GIB, choose_micro_batch
from restorebench.pipeline import Pipeline, Stage

FIGURES = Path(__file__).with_name("scale_figures.json")
BENCH_GPU = Path("results/bench_gpu.json")  # benchmarks/gpu_check.sh's merged results, when a GPU ran them
ASSUMED_MFU = 0.35  # assumed until benchmarks/ measures one (benchmarks/summary.py targets 40%: transformers)
PEAK_TFLOPS = {True: 989.0, False: 494.0}  # H100 SXM dense: bf16 (amp) / TF32 (benchmarks/NOTES.md)


@dataclass
class StagePlan:
    name: str
    disk_gb: float
    cpu_hours: float
    peak_host_gib: float
    source: str = ""  # where the figures come from


@dataclass
class CellPlan:
    task: str
    model: str
    cell: str
    params: int
    batch: int
    micro_batch: int
    accumulate: int
    gpu_memory_gib: float
    tflops_per_step: float
    steps: int
    gpu_hours: float
    checkpointing: bool = False
    fits: bool = True
    mfu: float = ASSUMED_MFU
    mfu_source: str = "assumed"


@dataclass
class Plan:
    profile: str
    gpu_memory_gib: float
    stages: list[StagePlan] = field(default_factory=list)
    cells: list[CellPlan] = field(default_factory=list)
    free_disk_gb: float | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def total(self) -> dict[str, float]:
        return {"disk_gb": round(sum(s.disk_gb for s in self.stages), 2),
                "cpu_hours": round(sum(s.cpu_hours for s in self.stages), 2),
                "gpu_hours": round(sum(c.gpu_hours for c in self.cells), 1)}  # fmt: skip

    def to_dict(self) -> dict:
        return {"profile": self.profile, "gpu_memory_gib": self.gpu_memory_gib,
                "stages": [asdict(s) for s in self.stages], "cells": [asdict(c) for c in self.cells],
                "total": self.total, "free_disk_gb": self.free_disk_gb, "warnings": self.warnings}  # fmt: skip


# ---------------------------------------------------------------------------------------------- cells


@dataclass
class Run:
    """One training run: a finetuning cell or a pretraining run, as (iters, patch, global batch) stages."""

    task: str
    model: str
    cell: str
    strategy: str
    stages: list[tuple[int, int, int]]
    arch_task: str  # the task whose architecture it trains (cell_model)


def training_runs(pipe: Pipeline) -> list[Run]:
    """Every finetuning cell (trained ones) and every pretraining run of the grid, in pipeline order."""
    cfg, runs = pipe.cfg, []
    for method, task, model in pipe.pretrain_runs():
        if method == "ipt":
            c = cfg.pretrain.ipt
            patch = cfg.train.crop("ipt")  # IPT's tile: the multi-task model at one task's size
            runs.append(Run("imagenet", "ipt", "pretrain-ipt", "full", [(c.steps, patch, c.batch)], cfg.tasks[0]))
        else:
            c = cfg.pretrain.dcpt
            runs.append(Run(task, model, "pretrain-dcpt", "full", [(c.steps, c.patch, c.batch)], task))
    for cell in pipe.cells():
        if cell.trained:
            stages = [(s.iters, s.patch, s.batch) for s in cfg.train.stages(cell.model, cell.task)]
            runs.append(Run(cell.task, cell.model, cell.name, cell.strategy, stages, cell.task))
    return runs


def _measured_mfu() -> dict[str, float]:
    """Each model's best bf16 MFU from benchmarks/gpu_check.sh's merged results, if a GPU ran them."""
    try:
        rows = json.loads(BENCH_GPU.read_text()).get("models", [])
    except (OSError, json.JSONDecodeError, AttributeError):
        return {}
    out: dict[str, float] = {}
    for r in rows:
        if isinstance(r, dict) and r.get("device", "").startswith("cuda") and r.get("dtype") == "bf16" and r.get("mfu"):
            out[r["model"]] = max(out.get(r["model"], 0.0), float(r["mfu"]))
    return out


def plan_run(run: Run, cfg: Config, cache: CostCache, gpu_memory_gib: float, mfu: dict[str, float]) -> CellPlan:
    """The micro-batch, memory, FLOPs and GPU-hours of one run. A recipe with stages (Restormer's
    progressive training) runs one accumulation throughout (train.finetune.training_data); its row shows
    the stage that needs the most memory, its steps and FLOPs are the sums."""
    amp, per_device = cfg.train.amp, cfg.train.gpus
    budget = gpu_memory_gib * GIB * BUDGET_SHARE
    cost, stages = stage_costs(cache, cfg, run.model, run.arch_task, run.strategy, run.stages, budget)
    chosen = choose_micro_batch(stages, budget, batch_statistics=stages[0][1].batch_statistics, per_device=per_device)
    flops = sum(iters * batch * cost(patch, chosen.checkpointing).flops_per_image
                for (iters, patch, batch) in run.stages)  # fmt: skip
    steps = sum(iters for iters, _, _ in run.stages)
    rate, source = (mfu[run.model], "measured") if run.model in mfu else (ASSUMED_MFU, "assumed")
    tflops_per_step = flops / steps / 1e12
    gpu_hours = flops / 1e12 / (PEAK_TFLOPS[amp] * rate) / 3600
    return CellPlan(task=run.task, model=run.model, cell=run.cell, params=stages[0][1].params, batch=chosen.batch,
                    micro_batch=chosen.micro_batch, accumulate=chosen.accumulate,
                    gpu_memory_gib=round(chosen.gpu_bytes / GIB, 2), tflops_per_step=round(tflops_per_step, 2),
                    steps=steps, gpu_hours=round(gpu_hours, 1), checkpointing=chosen.checkpointing,
                    fits=chosen.fits, mfu=rate, mfu_source=source)  # fmt: skip


# ---------------------------------------------------------------------------------------------- stages


def load_figures(path: Path = FIGURES) -> dict[str, dict]:
    """scale_figures.json: stage -> seconds_per_item, bytes_per_item, peak_host_gib, unit, measured (and
    optionally `splits`, the expected_pairs splits an item count takes)."""
    return json.loads(path.read_text())


def _items(pipe: Pipeline, stage: Stage, figures: dict[str, dict]) -> tuple[str, int]:
    """(figures key, item count) of a data stage: the dataset's expected pairs, in the splits the figures
    name (`splits`: SIDD's 1280 validation blocks sit in two .mat files, not in per-pair files), else all."""
    cfg, w = pipe.cfg, dict(stage.wildcards)
    if stage.rule in ("fetch", "validate"):
        d, key = w["dataset"], f"{stage.rule}_{w['dataset']}"
        pairs = cfg.data.dataset(d).expected_pairs
        splits = figures.get(key, {}).get("splits") or list(pairs)
        return key, sum(n for split, n in pairs.items() if split in splits)
    if stage.rule == "prepare":
        d = w["dataset"]
        return f"prepare_{d}", cfg.data.dataset(d).expected_pairs.get("train", 0)
    if stage.rule == "degrade":
        n = cfg.data.imagenet.expected_pairs.get("train", 0)
        n = min(n, cfg.degrade.max_images) if cfg.degrade.max_images else n
        return "degrade_imagenet", n * cfg.degrade.patches_per_image
    raise KeyError(stage.rule)


def plan_stage(pipe: Pipeline, stage: Stage, figures: dict[str, dict], cells: dict[tuple, CellPlan]) -> StagePlan:
    if stage.rule in ("fetch", "validate", "prepare", "degrade"):
        dataset = dict(stage.wildcards).get("dataset", "imagenet")
        if pipe.cfg.data.dataset(dataset).source == "sample":  # the figures are for the real datasets' items
            return StagePlan(stage.name, 0.0, 0.0, 0.0, "the embedded sample (small)")
        key, n = _items(pipe, stage, figures)
        f = figures.get(key)
        if f is None:
            return StagePlan(stage.name, 0.0, 0.0, 0.0, f"no figures for {key} in {FIGURES.name}")
        return StagePlan(stage.name, round(n * f["bytes_per_item"] / 1e9, 2),
                         round(n * f["seconds_per_item"] / 3600, 2), f["peak_host_gib"],
                         f"{n} {f.get('unit', 'items')} x {FIGURES.name} ({f.get('measured', '?')})")  # fmt: skip
    w = dict(stage.wildcards)
    if stage.rule in ("finetune", "pretrain_ipt", "pretrain_dcpt"):
        key = ("imagenet", "ipt", "pretrain-ipt") if stage.rule == "pretrain_ipt" else (
            (w["task"], w["model"], "pretrain-dcpt") if stage.rule == "pretrain_dcpt" else
            (w["task"], w["model"], w["cell"]))  # fmt: skip
        c = cells.get(key)
        if c is None:
            return StagePlan(stage.name, 0.0, 0.0, 0.0, "not a planned run")
        # weights (fp32) + the two newest checkpoints (weights + AdamW's two moments); the loader's host
        # time is in the GPU-hours of its cell (benchmarks/NOTES.md: one core keeps up with the models)
        disk = c.params * 4 * (1 + 2 * 3) / 1e9
        return StagePlan(stage.name, round(disk, 2), 0.0, round(c.params * 4 * 3 / GIB, 2),
                         "weights + 2 checkpoints; host: weights, state dict, checkpoint copy")  # fmt: skip
    if stage.rule == "segpretrain":  # the demo's own checkpoints: ~1 GB host, 33-80 s a job (measured, two at once)
        return StagePlan(stage.name, 0.0, 0.0, 1.0, "demo only: a tiny segmentation model, about a minute")
    return StagePlan(stage.name, 0.0, 0.0, 0.0, "small (scores, tables, reports)")


# ---------------------------------------------------------------------------------------------- the plan


def make_plan(pipe: Pipeline, *, gpu_memory_gib: float = 80.0, cache: CostCache | None = None,
              figures: dict[str, dict] | None = None) -> Plan:  # fmt: skip
    """The plan of `pipe`'s whole grid on GPUs of `gpu_memory_gib` (see the module docstring)."""
    cfg = pipe.cfg
    cache = cache or CostCache()
    figures = load_figures() if figures is None else figures
    mfu = _measured_mfu()
    plan = Plan(cfg.profile, gpu_memory_gib)
    for run in training_runs(pipe):
        plan.cells.append(plan_run(run, cfg, cache, gpu_memory_gib, mfu))
    by_key = {(c.task, c.model, c.cell): c for c in plan.cells}
    plan.stages = [plan_stage(pipe, s, figures, by_key) for s in pipe.stages()]
    for c in plan.cells:
        if not c.fits:
            plan.warnings.append(f"{c.task}/{c.model}/{c.cell}: one image per micro-batch needs "
                                 f"{c.gpu_memory_gib:.1f} GiB, more than the {gpu_memory_gib:g} GiB GPU")  # fmt: skip
    declared = cfg.grid.declared()
    differ = [key for key, value in declared.items() if getattr(cfg, key) != value]
    if differ:
        plan.warnings.append(f"this plans the grid lists as set, not profiles.{cfg.profile}.grid ({', '.join(differ)} "
                             f"differ): `restorebench --profile {cfg.profile} plan` plans the profile's whole grid, "
                             f"`restorebench profile {cfg.profile}` sets it")  # fmt: skip
    probe = Path(cfg.data.root).resolve()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    plan.free_disk_gb = round(shutil.disk_usage(probe).free / 1e9, 1)
    need = plan.total["disk_gb"] + cfg.data.min_free_gb * GIB / 1e9
    if need > plan.free_disk_gb:
        plan.warnings.append(f"data.root ({cfg.data.root}): {plan.free_disk_gb:.1f} GB free on {probe}, the grid "
                             f"writes {plan.total['disk_gb']:.1f} GB (+ data.min_free_gb {cfg.data.min_free_gb:g} GiB)")
    return plan


def render(plan: Plan) -> None:
    """The plan as rich tables on stdout."""
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(150, Console().width))
    stages = Table(title=f"stages (profile {plan.profile})", show_lines=False)
    for col in ("stage", "disk GB", "CPU-hours", "peak host GiB", "from"):
        stages.add_column(col, justify="left" if col in ("stage", "from") else "right")
    for s in plan.stages:
        if s.disk_gb or s.cpu_hours or s.peak_host_gib:
            stages.add_row(s.name, f"{s.disk_gb:,.2f}", f"{s.cpu_hours:,.2f}", f"{s.peak_host_gib:.2f}", s.source)
    quiet = sum(1 for s in plan.stages if not (s.disk_gb or s.cpu_hours or s.peak_host_gib))
    console.print(stages)
    if quiet:
        console.print(f"  + {quiet} stages that write little (evaluate, aggregate, report)")
    cells = Table(title=f"training runs on a {plan.gpu_memory_gib:g} GiB GPU")
    cols = ("task", "model", "cell", "params M", "batch", "micro", "accum", "ckpt", "GPU GiB", "TFLOP/step",
            "steps", "GPU-h", "MFU")  # fmt: skip
    cells.caption = "MFU: * assumed, else measured by benchmarks/gpu_check.sh; ckpt: activation checkpointing"
    for col in cols:
        cells.add_column(col, justify="left" if col in ("task", "model", "cell") else "right")
    for c in plan.cells:
        cells.add_row(c.task, c.model, c.cell, f"{c.params / 1e6:.1f}", str(c.batch), str(c.micro_batch),
                      str(c.accumulate), "yes" if c.checkpointing else "", f"{c.gpu_memory_gib:.1f}"
                      + ("" if c.fits else " !"), f"{c.tflops_per_step:.2f}", f"{c.steps:,}", f"{c.gpu_hours:,.1f}",
                      f"{100 * c.mfu:.0f}%" + ("*" if c.mfu_source == "assumed" else ""))  # fmt: skip
    console.print(cells)
    t = plan.total
    console.print(f"total: {t['disk_gb']:,.1f} GB written, {t['cpu_hours']:,.1f} CPU-hours (data stages), "
                  f"{t['gpu_hours']:,.1f} GPU-hours (H100 peak {PEAK_TFLOPS[True]:g} TFLOP/s bf16 at the MFU shown; "
                  f"assumed {100 * ASSUMED_MFU:.0f}% where no GPU measured it); {plan.free_disk_gb} GB free under "
                  "data.root")  # fmt: skip
    for w in plan.warnings:
        console.print(f"[yellow]warning:[/yellow] {w}")


def run_plan(cfg_pipe: Pipeline, *, gpu_memory_gib: float, as_json: bool) -> Plan:
    plan = make_plan(cfg_pipe, gpu_memory_gib=gpu_memory_gib)
    if as_json:
        print(json.dumps(plan.to_dict(), indent=2))
    else:
        render(plan)
    return plan

