"""All speed checks in one run: training step per model, loader ceiling, evaluation, orchestration.

    python benchmarks/run_all.py                 # CPU: demo variants, eager only; GPU: paper variants, + compiled
    python benchmarks/run_all.py --paper         # paper variants on a CPU too (slow); the H100 run is this
    python benchmarks/run_all.py --quick --only models,loader --models nafnet   # smoke run, seconds

Sections (`--only`, comma-separated; default all):
  models         training images/s, TFLOP/s, MFU, peak memory per model, fp32 and bf16, eager and compiled; the
                 step is the training loop's own (benchmarks/models.py: `section`, `training_step`).
  loader         pairs/s per core of the packed store (benchmarks/loader.py, workers=0: one process, one core).
  eval           1280x720 images/s through restorebench.infer.restore, tiled as the paper profile's `evaluate`
                 says, alone and with the protocol's scoring (benchmarks/evaluate.py).
  loop           the real finetuning loop (benchmarks/loop.py): store, DataLoader workers, copies, step and
                 loss reads, sync_every 1 vs the profile's; steady-state images/s, data_wait, GPU utilisation.
  orchestration  wall time of `snakemake -n results/table.csv --config profile=paper` and of a no-op `dvc repro`
                 on the paper grid, in a temporary copy of the repository (benchmarks/orchestration.py).

This file is the driver: each part's logic is in its module (above); the summary table, the speed targets
and --merge are benchmarks/summary.py. It parses the flags, runs the parts asked for, joins their results
(loader cores a model row needs; the loop against the step), writes `--out` (results/bench.json)
atomically, rewriting it after every model or loop row, and prints a table per part, with ratios
(compiled/eager, bf16/fp32) next to the absolute numbers, since shared machines are noisy.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import re
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `benchmarks` as a package, from any working folder

from benchmarks import evaluate as bench_evaluate  # noqa: E402
from benchmarks import loader as bench_loader  # noqa: E402
from benchmarks import loop as bench_loop  # noqa: E402
from benchmarks import models as bench_models  # noqa: E402
from benchmarks import orchestration as bench_orchestration  # noqa: E402
from benchmarks import summary  # noqa: E402
from restorebench import io  # noqa: E402
from restorebench.models import MODELS  # noqa: E402

SECTIONS = ("models", "loader", "eval", "loop", "orchestration")
PARAMS = ROOT / "params.yaml"


def _past_deadline(args: argparse.Namespace) -> str | None:
    """Why no new model or loop row starts (past --deadline), or None."""
    if args.deadline is not None and time.perf_counter() - args.t0 > args.deadline:
        return f"past --deadline {args.deadline:.0f} s"
    return None


def _save_partial(args: argparse.Namespace, section: str, payload: dict) -> None:
    """Write what is measured so far (the section marked partial), so a run killed at its limit keeps it."""
    io.write_json(args.out, {**args.result, section: {**payload, "partial": True}})


def _cpu_has_native_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return bool(re.search(r"\b(avx512_bf16|amx_bf16)\b", flags))


def _csv(choices: tuple[str, ...] | list[str], what: str):
    def parse(text: str) -> list[str]:
        items = [t.strip() for t in text.split(",") if t.strip()]
        bad = [t for t in items if t not in choices]
        if bad or not items:
            raise argparse.ArgumentTypeError(f"{what}: {bad or text!r} unknown; choose from {', '.join(choices)}")
        return items
    return parse


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--only", type=_csv(SECTIONS, "--only"), default=list(SECTIONS), help=",".join(SECTIONS))
    ap.add_argument("--quick", action="store_true", help="tiny batches and steps: a smoke run in seconds")
    ap.add_argument("--paper", action="store_true", help="paper variants on a CPU too (default on a GPU)")
    ap.add_argument("--models", type=_csv(tuple(MODELS), "--models"), default=list(MODELS))
    ap.add_argument("--dtypes", type=_csv(("fp32", "bf16"), "--dtypes"), default=["fp32", "bf16"])
    ap.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                    help="also time torch.compile (default: on for CUDA, off on a CPU)")
    ap.add_argument("--modes", type=_csv(("eager", "compiled"), "--modes"), default=["eager", "compiled"],
                    help="models: which of eager / compiled rows to time (compiled also needs --compile on a CPU)")
    ap.add_argument("--plain", type=_csv(tuple(MODELS), "--plain"), default=["nafnet"],
                    help="models also timed as a plain fp32 eager loop (NCHW, default AdamW, loss read every "
                         "step): the baseline of the NAFNet >= 2x speed target")
    ap.add_argument("--deadline", type=float, default=None,
                    help="seconds after the start past which no new model or loop row starts (they are "
                         "recorded as skipped); bench.json is rewritten after every model row either way")
    ap.add_argument("--task", default="denoise", choices=("denoise", "deblur"), help="whose variants (models)")
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--size", type=int, default=None)
    ap.add_argument("--steps", type=int, default=None, help="timed training steps per row")
    ap.add_argument("--row-budget", type=float, default=None,
                    help="seconds of timed steps per model row, >= 2 steps (default: 20 on a CPU, none on CUDA)")
    ap.add_argument("--peak-tflops", type=float, default=None, help="override the device peak for MFU")
    ap.add_argument("--eval-model", default="nafnet", choices=tuple(MODELS))
    ap.add_argument("--loop-steps", type=int, default=None,
                    help="loop: training steps per row (default 40 on CUDA, 20 on a CPU, 4 with --quick)")
    ap.add_argument("--repeats", type=int, default=3, help="orchestration: runs per command")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "bench.json")
    ap.add_argument("--merge", type=Path, nargs="+", default=None, metavar="BENCH_JSON",
                    help="run nothing: merge these bench.json files (e.g. gpu_check.sh's parts) into --out")
    args = ap.parse_args(argv)
    if args.merge:
        result = summary.merge(args.merge)
        io.write_json(args.out, result)
        print("\n".join(summary.summary_table(result)) + f"\n\nmerged {len(args.merge)} file(s) into {args.out}", flush=True)
        return result

    device = "cuda" if torch.cuda.is_available() else "cpu"
    started, t0, load0 = dt.datetime.now(dt.UTC), time.perf_counter(), os.getloadavg()[0]
    args.t0 = t0
    from restorebench.evaluate import git_revision

    result: dict = {"meta": {
        "argv": sys.argv[1:] if argv is None else argv, "started_utc": started.isoformat(timespec="seconds"),
        "git_revision": git_revision(ROOT), "device": device,
        "device_name": torch.cuda.get_device_name(0) if device == "cuda" else platform.processor() or "cpu",
        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "cpu_native_bf16": _cpu_has_native_bf16(), "torch": torch.__version__,
        "python": platform.python_version(), "platform": platform.platform(), "quick": args.quick,
        "sections": args.only}}
    args.result = result
    print(f"restorebench benchmarks on {result['meta']['device_name']} ({device}, {os.cpu_count()} CPUs, torch "
          f"{torch.__version__}){' [quick]' if args.quick else ''}; load average {load0:.1f}", flush=True)
    if "models" in args.only:
        result["models"] = bench_models.section(
            paper=args.paper, task=args.task, device=device, models=args.models, dtypes=args.dtypes,
            modes=args.modes, plain=args.plain, compiled=args.compile, params=PARAMS, quick=args.quick,
            batch=args.batch, size=args.size, steps=args.steps, row_budget=args.row_budget,
            peak_tflops=args.peak_tflops, stop=lambda: _past_deadline(args),
            on_row=lambda rows: _save_partial(args, "models", {"rows": rows}))
    if "loader" in args.only:
        result["loader"] = bench_loader.section(quick=args.quick)
    if "eval" in args.only:
        result["eval"] = bench_evaluate.section(model=args.eval_model, paper=args.paper, device=device,
                                                params=PARAMS, quick=args.quick)
    if "loop" in args.only:
        profile = "paper" if args.paper or device == "cuda" else "demo"
        steps = args.loop_steps or (4 if args.quick else 40 if device == "cuda" else 20)
        result["loop"] = bench_loop.section(
            profile=profile, models=args.models, steps=steps, syncs=[1, 0], device=device, params=PARAMS,
            images=4 if args.quick else 16, stop=lambda: _past_deadline(args) is not None,
            on_row=lambda rows: _save_partial(args, "loop", {"rows": rows}))
        bench_loop.against_step(result["loop"], result.get("models"), device)
    if "orchestration" in args.only:
        result["orchestration"] = bench_orchestration.section(repeats=args.repeats, quick=args.quick)
    if "models" in result and "loader" in result:
        ceiling = result["loader"]["ceiling_pairs_per_s_per_core"]
        for r in result["models"]["rows"]:
            if r["status"] == "ok":  # loader cores one training process needs at this rate (same patch only)
                r["loader_cores_needed"] = (r["images_per_s"] / ceiling if r["size"] == bench_loader.PATCH
                                            else None)
    result["meta"].update(seconds=time.perf_counter() - t0, loadavg_1min_before_after=[load0, os.getloadavg()[0]])
    result["targets"] = summary.speed_targets(result)
    io.write_json(args.out, result)
    print("\n" + "\n".join(summary.summary_table(result)))
    print(f"\n{len(args.only)} section(s) in {result['meta']['seconds']:.0f} s; load average {load0:.1f} -> "
          f"{os.getloadavg()[0]:.1f}; wrote {args.out}", flush=True)
    return result


if __name__ == "__main__":
    main()
