"""All speed checks in one run: training step per model, loader ceiling, evaluation, orchestration.

    python benchmarks/run_all.py                 # CPU: demo variants, eager only; GPU: paper variants, + compiled
    python benchmarks/run_all.py --paper         # paper variants on a CPU too (slow); the H100 run is this
    python benchmarks/run_all.py --quick --only models,loader --models nafnet   # smoke run, seconds

Sections (`--only`, comma-separated; default all):
  models         training images/s, TFLOP/s, MFU, peak memory per model, fp32 and bf16, eager and compiled; the
                 step is the training loop's own (benchmarks/models.py `training_step`).
  loader         pairs/s per core of the packed store (benchmarks/loader.py, workers=0: one process, one core).
  eval           1280x720 images/s through restorebench.infer.restore, tiled as the paper profile's `evaluate`
                 says, alone and with the protocol's scoring (restorebench.evaluate.evaluate).
  loop           the real finetuning loop (benchmarks/loop.py): store, DataLoader workers, copies, step and
                 loss reads, sync_every 1 vs the profile's; steady-state images/s, data_wait, GPU utilisation.
  orchestration  wall time of `snakemake -n results/table.csv --config profile=paper` and of a no-op `dvc repro`
                 on the paper grid, in a temporary copy of the repository (see `orchestration` below).

Writes `--out` (results/bench.json) atomically and prints a table per section, with ratios (compiled/eager,
bf16/fp32) next to the absolute numbers, since shared machines are noisy.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `benchmarks` as a package, from any working folder

from benchmarks import loader as bench_loader  # noqa: E402
from benchmarks import loop as bench_loop  # noqa: E402
from benchmarks import metrics as bench_metrics  # noqa: E402
from benchmarks import models as bench_models  # noqa: E402
from restorebench import io  # noqa: E402
from restorebench.models import MODELS  # noqa: E402

SECTIONS = ("models", "loader", "eval", "loop", "orchestration")
PARAMS = ROOT / "params.yaml"
TARGET_ORCHESTRATION_S = 5.0
# The speed targets: the transformer models (a row's `transformer`: its model's `is_transformer`) at
# >= 40% MFU in bf16; NAFNet >= 2x a plain fp32 eager loop of the same architecture; GPU utilisation > 90%
# while finetuning (the loop section)
TARGET_MFU, TARGET_NAFNET_OVER_PLAIN, TARGET_GPU_UTIL = 0.40, 2.0, 90.0
OUTPUT_ROOTS = ("data/", "metrics/", "results/", "runs/", "logs/")  # pipeline outputs, not copied


# ---------------------------------------------------------------------------------------------- models


def section_models(args: argparse.Namespace, device: str) -> dict:
    paper = args.paper or device == "cuda"
    profile = "paper" if paper else "demo"
    variants = bench_models.profile_variants(profile, args.task, PARAMS)
    train = bench_models.profile_recipe(profile, "nafnet", PARAMS)  # batch and patch are the profile's
    if args.quick:
        batch, size, warmup, steps = 2, 32, 1, 1
    elif device == "cuda":  # two windows of the loop's sync_every (10) steps
        batch, size, warmup, steps = train["batch"], train["patch"], 3, 20
    else:  # the demo profile's batch and patch; a paper-size batch takes minutes per step on a CPU
        demo = bench_models.profile_recipe("demo", "nafnet", PARAMS)
        batch, size, warmup, steps = demo["batch"], demo["patch"], 1, 5
    batch, size, steps = args.batch or batch, args.size or size, args.steps or steps
    compile_on = args.compile if args.compile is not None else device == "cuda"
    # the loss is read every sync_every steps, as the loop does; on a CPU a step is synchronous anyway, and
    # windows of one step keep the median's resistance to other jobs' bursts
    sync_every = bench_models._config(profile, PARAMS).train.sync_every if device == "cuda" else 1
    # a CPU row stops timing after `budget` s (>= 2 steps): bf16 is emulated on most CPUs and very slow
    budget = args.row_budget if args.row_budget is not None else (None if device == "cuda" else 20.0)
    def crop(recipe: dict) -> int:  # what the model's cells train on: its recipe's own patch (IPT's tiles)
        return args.size or recipe["own_patch"] or size

    own = {m: crop(bench_models.profile_recipe(profile, m, PARAMS)) for m in args.models}
    own = {m: p for m, p in own.items() if p != size}
    note = (f"{profile} variants ({args.task}) on {device}"
            + ("" if paper else "; CPU: demo variants by default, --paper forces the paper ones")
            + f"; batch {batch} x {size}x{size}"
            + "".join(f" ({m}: {p}x{p}, its cells' crop)" for m, p in own.items())
            + f", {warmup} warm-up + {steps} timed steps"
            + (f" (at most {budget:.0f} s of them, >= 2 steps)" if budget else ""))
    print(f"\n== models: {note}", flush=True)
    rows = []
    # first (cheap, and a target's baseline): the NAFNet speed target is against "a plain fp32 eager loop
    # of the same architecture": fp32, eager, contiguous (NCHW) memory, torch's default AdamW, the loss read
    # every step
    plain = [m for m in args.plain if m in args.models] if "fp32" in args.dtypes and "eager" in args.modes else []
    for name in plain:
        base = {"model": name, "variant": variants[name], "dtype": "fp32", "compiled": False, "plain": True}
        why = f"past --deadline {args.deadline:.0f} s" if _past_deadline(args) else None
        recipe = bench_models.profile_recipe(profile, name, PARAMS)
        kwargs = dict(compiled=False, warmup=warmup, recipe=recipe, sync_every=1, channels_last=False, fused=False)
        peak, peak_name = (args.peak_tflops, "--peak-tflops") if args.peak_tflops else \
            bench_models.device_peak(device, "fp32")
        rows.append(_model_row(base, why, kwargs, batch=batch, size=crop(recipe), dtype="fp32", steps=steps,
                               device=device, peak=peak, peak_name=peak_name, budget=budget))
        _save_partial(args, "models", {"rows": rows})
    for name in args.models:
        recipe = bench_models.profile_recipe(profile, name, PARAMS)
        for dtype in args.dtypes:
            peak, peak_name = (args.peak_tflops, "--peak-tflops") if args.peak_tflops else \
                bench_models.device_peak(device, dtype)
            for compiled in (False, True):
                base = {"model": name, "variant": variants[name], "dtype": dtype, "compiled": compiled}
                why = None
                if compiled and not compile_on:
                    why = "--no-compile" if args.compile is False else \
                        "off by default on a CPU to keep the run short; pass --compile"
                elif ("compiled" if compiled else "eager") not in args.modes:
                    why = f"not in --modes {','.join(args.modes)}"
                elif _past_deadline(args):
                    why = f"past --deadline {args.deadline:.0f} s"
                kwargs = dict(compiled=compiled, warmup=max(warmup, 2) if compiled else warmup,  # + recompile
                              recipe=recipe, sync_every=sync_every)
                rows.append(_model_row(base, why, kwargs, batch=batch, size=crop(recipe), dtype=dtype,
                                       steps=steps, device=device, peak=peak, peak_name=peak_name, budget=budget))
                _save_partial(args, "models", {"rows": rows})
    ratios = _model_ratios(rows)
    for r in ratios:
        print("  ratios " + f"{r['model']:>17}: " + ", ".join(f"{k} {v:.2f}x" for k, v in r.items()
                                                           if k != "model" and v is not None), flush=True)
    return {"profile": profile, "task": args.task, "device": device, "batch": batch, "size": size,
            "warmup_steps": warmup, "timed_steps": steps, "row_budget_s": budget, "compile": compile_on, "note": note,
            "bf16_on_cpu": "CPU autocast; the training loop itself runs fp32 on a CPU" if device == "cpu" else None,
            "rows": rows, "ratios": ratios}


def _model_row(base: dict, why: str | None, kwargs: dict, *, batch: int, size: int,
               dtype: str, steps: int, device: str, peak: float | None, peak_name: str,
               budget: float | None) -> dict:
    """One timed row (or a skipped one when `why`); an OOM or a compile failure is a result, not a crash."""
    if why is not None:
        row = {**base, "status": "skipped", "reason": why}
    else:
        try:
            r = bench_models.bench(base["model"], base["variant"], batch=batch, size=size, dtype=dtype,
                                   steps=steps, device=device, peak=peak, budget_s=budget, **kwargs)
            row = {**base, **r, "status": "ok", "peak_name": peak_name}
        except torch.OutOfMemoryError as err:
            row = {**base, "status": "oom", "reason": str(err).splitlines()[0]}
        except Exception as err:  # noqa: BLE001
            row = {**base, "status": "failed",
                   "reason": f"{type(err).__name__}: {(str(err).splitlines() or [''])[0][:200]}"}
        finally:
            if device == "cuda":
                torch.cuda.empty_cache()
    print("  " + _model_line(row), flush=True)
    return row


def _past_deadline(args: argparse.Namespace) -> bool:
    return args.deadline is not None and time.perf_counter() - args.t0 > args.deadline


def _save_partial(args: argparse.Namespace, section: str, payload: dict) -> None:
    """Write what is measured so far (the section marked partial), so a run killed at its limit keeps it."""
    io.write_json(args.out, {**args.result, section: {**payload, "partial": True}})


def _model_ratios(rows: list[dict]) -> list[dict]:
    ok = {(r["model"], r["dtype"], r["compiled"]): r["images_per_s"] for r in rows
          if r["status"] == "ok" and not r.get("plain")}
    out = []
    for name in dict.fromkeys(r["model"] for r in rows):
        def ratio(a, b):
            return ok[a] / ok[b] if a in ok and b in ok else None
        out.append({"model": name,
                    "bf16/fp32 eager": ratio((name, "bf16", False), (name, "fp32", False)),
                    "bf16/fp32 compiled": ratio((name, "bf16", True), (name, "fp32", True)),
                    "compiled/eager fp32": ratio((name, "fp32", True), (name, "fp32", False)),
                    "compiled/eager bf16": ratio((name, "bf16", True), (name, "bf16", False))})
    return out


def _model_line(r: dict) -> str:
    mode = "plain" if r.get("plain") else "compiled" if r["compiled"] else "eager"
    head = f"{r['model']:>17} {r['variant']:>13} {r['dtype']:>5} {mode:>8}"
    if r["status"] != "ok":
        return f"{head}  {r['status']}: {r['reason']}"
    syncs = "" if r.get("host_syncs_per_step") is None else f", host syncs/step {r['host_syncs_per_step']}"
    k = r.get("kernels") or {}
    if k.get("gpu_busy_share") is not None:  # CUDA: one profiled step (benchmarks/models.py kernel_breakdown)
        kinds = ", ".join(f"{kind} {100 * v:.0f}%" for kind, v in list(k["by_kind"].items())[:3])
        syncs += f"; GPU busy {100 * k['gpu_busy_share']:.0f}% of a profiled step: {kinds}"
    elif "error" in k:
        syncs += f"; kernel profile failed: {k['error'][:80]}"
    mfu = f"{100 * r['mfu']:.1f}%" if r.get("mfu") is not None else "n/a"
    mem = f"{r['peak_mem_gb']:.2f} GiB" if r.get("peak_mem_gb") is not None else "n/a"
    return (f"{head} {r['params_m']:7.2f}M {r['images_per_s']:9.2f} img/s {r['tflops']:8.4f} TFLOP/s "
            f"MFU {mfu:>6}  peak mem {mem}  ({r['batch']} x {r['size']}^2, {r['timed_steps']} steps, host cpu/wall {r['cpu_per_wall']:.2f}{syncs})")


# ---------------------------------------------------------------------------------------------- loader


def section_loader(args: argparse.Namespace) -> dict:
    images, seconds = (2, 0.3) if args.quick else (8, 2.0)
    formats = ("store", "store_u8", "png")
    print(f"\n== loader: {bench_loader.PATCH}x{bench_loader.PATCH} pairs/s per core (workers=0, 1 thread), "
          f"{images} sub-images of {bench_loader.SUB}, {seconds} s per format", flush=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            sets = bench_loader.build(Path(tmp), images)
            per_core = {n: bench_loader.rate(sets[n], 0, seconds) for n in formats}
    finally:
        torch.set_num_threads(threads)
    for n, v in per_core.items():
        print(f"  {n:>9}: {v:8.0f} pairs/s per core", flush=True)
    ratio = per_core["store"] / per_core["png"]
    print(f"  ceiling (store_u8, what training uses): {per_core['store_u8']:.0f} pairs/s per core; "
          f"store/png {ratio:.1f}x", flush=True)
    return {"patch": bench_loader.PATCH, "subimage": bench_loader.SUB, "images": images, "seconds": seconds,
            "per_core_pairs_per_s": per_core, "ceiling_pairs_per_s_per_core": per_core["store_u8"],
            "store_over_png": ratio}


# ---------------------------------------------------------------------------------------------- eval


def section_eval(args: argparse.Namespace, device: str) -> dict:
    from restorebench import evaluate as ev
    from restorebench.infer import precision, restore, tile_starts
    from restorebench.models import build_model

    paper = args.paper or device == "cuda"
    e = bench_models._config("paper", PARAMS).evaluate  # the paper profile's tiling and precision, on any device
    variant = bench_models.profile_variants("paper" if paper else "demo", "deblur", PARAMS)[args.eval_model]
    n = 1 if args.quick else (5 if device == "cuda" else 2)  # per precision and batch: 5 rates on CUDA
    h, w = bench_metrics.H, bench_metrics.W
    tiles = len(tile_starts(h, e.tile, e.overlap)) * len(tile_starts(w, e.tile, e.overlap)) if e.tile else 1
    passes = -(-tiles // e.batch)
    used = precision(device, autocast=e.autocast, tf32=e.tf32)
    print(f"\n== eval: {args.eval_model} {variant} on {w}x{h}, tile {e.tile} overlap {e.overlap} batch {e.batch} "
          f"({tiles} tiles/image, {passes} pass(es)), profile precision {used}, {n} images after 1 warm-up, "
          f"{device}", flush=True)
    torch.manual_seed(0)
    net = build_model(args.eval_model, variant=variant).to(device).eval()
    lq, gt = bench_metrics.gopro_pair()
    x = torch.from_numpy(lq).permute(2, 0, 1)[None].float().div(255.0)
    item = ev.EvalItem("bench", lq, gt)

    def run(batch: int, autocast: str | None = None, tf32: bool = False) -> torch.Tensor:
        return restore(net, x, tile=e.tile, overlap=e.overlap, batch=batch, device=device, autocast=autocast,
                       tf32=tf32).cpu()  # .cpu() waits for the device, as the evaluate CLI does

    def rate(batch: int, autocast: str | None = None, tf32: bool = False) -> tuple[float, torch.Tensor]:
        out = run(batch, autocast, tf32)  # warm-up; its output is scored
        t0 = time.perf_counter()
        for _ in range(n):
            run(batch, autocast, tf32)
        return n / (time.perf_counter() - t0), out

    def psnr(out: torch.Tensor) -> float:  # the GoPro protocol: output rounded to uint8, data range 255
        return ev.score(out[0].permute(1, 2, 0).double().numpy(), item, ev.PROTOCOLS["deblur"])["psnr"]

    def levels(out: torch.Tensor) -> torch.Tensor:  # as the protocol rounds: uint8 levels
        return out.mul(255).round().double()

    # batch 4: the paper profile's before the speed work (two passes per 1280x720 image), for NOTES.md's 4 -> 6 row
    batches = [e.batch] if args.quick else sorted({1, 4, e.batch})
    by_batch, outputs = {}, {}
    for b in batches:
        by_batch[str(b)], out = rate(b)
        if b == e.batch:
            outputs["fp32"] = out
    rates = {"fp32": by_batch[str(e.batch)], "tf32": None, "bf16": None}
    if device == "cuda":
        rates["tf32"], outputs["tf32"] = rate(e.batch, tf32=True)
        rates["bf16"], outputs["bf16"] = rate(e.batch, autocast="bf16")
        bf16_how = "cuda autocast (restore)"
    else:  # restore's autocast is CUDA-only: the same model under CPU autocast, for the PSNR only
        with torch.autocast("cpu", dtype=torch.bfloat16):
            outputs["bf16"] = run(e.batch)
        bf16_how = "cpu autocast (estimate; no rate: this CPU emulates bf16)"
    psnrs = {k: psnr(v) for k, v in outputs.items()}
    deltas = {k: psnrs[k] - psnrs["fp32"] for k in ("tf32", "bf16") if k in psnrs}
    # RMS change of the rounded output, in uint8 levels: for a model whose own error is E levels RMS, an
    # uncorrelated change of e levels moves its PSNR by about 10 log10(1 + e^2 / E^2) dB
    rms = {k: float((levels(outputs[k]) - levels(outputs["fp32"])).pow(2).mean().sqrt()) for k in deltas}

    def restorer(t: torch.Tensor) -> torch.Tensor:  # the evaluate stage's restorer (infer.cell_restorer)
        return restore(net, t, tile=e.tile, overlap=e.overlap, batch=e.batch, device=device, autocast=e.autocast,
                       tf32=e.tf32).cpu()

    _, summary = ev.evaluate(restorer, "deblur", iter([item] * n), crops_dir=None)
    out = {"model": args.eval_model, "variant": variant, "image": [h, w, 3], "tile": e.tile, "overlap": e.overlap,
           "batch": e.batch, "tiles_per_image": tiles, "passes_per_image": passes, "images": n, "device": device,
           "profile_precision": used, "restore_images_per_s": rates, "restore_images_per_s_fp32_by_batch": by_batch,
           "psnr_db": psnrs, "psnr_delta_db": deltas, "rms_change_levels": rms, "bf16_how": bf16_how,
           "evaluate_images_per_s": summary["images_per_s"],
           "scoring_share": 1 - summary["images_per_s"] / rates[used]}
    print("  restore fp32 by batch: " + ", ".join(f"{b}: {r:.2f}" for b, r in by_batch.items()) + " img/s"
          + (f"; tf32 {rates['tf32']:.2f} ({rates['tf32'] / rates['fp32']:.2f}x), bf16 {rates['bf16']:.2f} "
             f"({rates['bf16'] / rates['fp32']:.2f}x)" if device == "cuda" else "; tf32/bf16 rates: CUDA only"),
          flush=True)
    print(f"  PSNR {psnrs['fp32']:.4f} dB fp32 on the benchmark image (untrained weights); vs fp32: "
          + ", ".join(f"{k} {d:+.4f} dB (RMS change {rms[k]:.3f} levels)" for k, d in deltas.items())
          + f" [bf16: {bf16_how}; adopt if |delta| < 0.01 dB on the test set]", flush=True)
    print(f"  evaluate path (restore {used} + PSNR + both SSIM conventions): {summary['images_per_s']:.2f} img/s "
          f"(evaluate/restore {summary['images_per_s'] / rates[used]:.2f}x)", flush=True)
    return out


# ---------------------------------------------------------------------------------------------- loop


def section_loop(args: argparse.Namespace, device: str, models: dict | None) -> dict:
    profile = "paper" if args.paper or device == "cuda" else "demo"
    steps = args.loop_steps or (4 if args.quick else 40 if device == "cuda" else 20)
    print(f"\n== loop: the finetuning loop end to end ({profile} profile, task denoise, {steps} steps per row, "
          f"steady state after the first window), sync_every 1 vs the profile's, {device}", flush=True)
    out = bench_loop.section(profile=profile, models=args.models, steps=steps, syncs=[1, 0], device=device,
                             params=PARAMS, images=4 if args.quick else 16, stop=lambda: _past_deadline(args),
                             on_row=lambda rows: _save_partial(args, "loop", {"rows": rows}))
    # the loop against the step alone (models section), where both ran the same batch, patch and precision
    step_rates = {} if models is None else {
        (r["model"], r["batch"], r["size"]): r["images_per_s"] for r in models["rows"]
        if r["status"] == "ok" and not r["compiled"] and r["dtype"] == ("bf16" if device == "cuda" else "fp32")}
    for r in out["rows"]:
        step = step_rates.get((r["model"], r["batch"], r["patch"]))
        r["loop_over_step"] = r["images_per_s"] / step if step else None
    return out


# ---------------------------------------------------------------------------------------------- orchestration


def section_orchestration(args: argparse.Namespace) -> dict:
    """Planning overhead of both orchestrators on the paper grid, in a temporary copy of the repository.

    The copy holds the files git sees (tracked, plus untracked files that are not ignored) minus pipeline
    outputs, with params.yaml's `profile:` set to paper (DVC has no `-S` for repro/status; `dvc exp run -S`
    would edit the working tree), and its own `git init` (DVC needs a git repository). Measured, each the
    median of --repeats runs of the whole command (interpreter start-up included):
      fresh: `snakemake -n results/table.csv --config profile=paper` (plans every job of the grid) and
             `dvc status` (nothing built yet).
      built: every DVC output replaced by a placeholder file and committed (`dvc commit -f`), so the grid is
             up to date; then `dvc repro` (a real no-op: every stage checked, none run) and `dvc status`.
             Placeholders are tiny, so a real paper-scale no-op also pays for stat-ing the datasets' files,
             which this does not measure.
    """
    repeats = 1 if args.quick else args.repeats
    bindir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}", "DVC_NO_ANALYTICS": "1"}
    print(f"\n== orchestration: paper grid in a temporary copy, median of {repeats} (target < "
          f"{TARGET_ORCHESTRATION_S:.0f} s)", flush=True)
    if shutil.which("git") is None or not (bindir / "snakemake").exists() or not (bindir / "dvc").exists():
        print("  skipped: needs git, and snakemake and dvc beside this Python", flush=True)
        return {"status": "skipped", "reason": "needs git, snakemake and dvc"}

    def run(cmd: list[str], cwd: Path) -> tuple[float, str]:
        t0 = time.perf_counter()
        p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - t0
        if p.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}): {(p.stderr or p.stdout)[-800:]}")
        return seconds, p.stdout + p.stderr

    def timed(name: str, cmd: list[str], cwd: Path) -> dict:
        times, text = [], ""
        for _ in range(repeats):
            seconds, text = run(cmd, cwd)
            times.append(seconds)
        row = {"command": " ".join(cmd), "median_s": statistics.median(times), "first_s": times[0],
               "times_s": times}
        jobs = re.search(r"^total\s+(\d+)", text, re.M)
        if jobs:
            row["jobs_planned"] = int(jobs.group(1))
        if "dvc repro" in row["command"]:
            row["stages_run"] = text.count("Running stage")
            row["stages_skipped"] = text.count("didn't change, skipping")
        print(f"  {name:<20} {row['median_s']:6.2f} s (first {times[0]:.2f} s)  {row['command']}"
              + (f"  [{row['jobs_planned']} jobs]" if "jobs_planned" in row else "")
              + (f"  [{row['stages_skipped']} stages checked, {row['stages_run']} run]" if "stages_run" in row
                 else ""), flush=True)
        return row

    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split("\0")
    rows: dict = {}
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="restorebench-orch-") as tmp:
        repo = Path(tmp)
        for rel in files:
            if rel and not rel.startswith(OUTPUT_ROOTS) and (ROOT / rel).is_file():
                (repo / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / rel, repo / rel)
        params = (repo / "params.yaml").read_text()
        (repo / "params.yaml").write_text(re.sub(r"(?m)^profile:\s*\S+", "profile: paper", params, count=1))
        run(["git", "init", "-q"], repo)
        snake = [str(bindir / "snakemake"), "-n", "results/table.csv", "--config", "profile=paper"]
        dvc = str(bindir / "dvc")
        for key, name, cmd in (("snakemake_fresh", "snakemake -n, fresh", snake),
                               ("dvc_status_fresh", "dvc status, fresh", [dvc, "status"])):
            try:
                rows[key] = timed(name, cmd, repo)
            except RuntimeError as err:
                problems.append(f"{name}: {err}")
        try:
            setup_s = _build_placeholders(repo, run, dvc)
            rows["dvc_repro_noop"] = timed("dvc repro, no-op", [dvc, "repro"], repo)
            rows["dvc_status_built"] = timed("dvc status, built", [dvc, "status"], repo)
        except RuntimeError as err:
            setup_s = None
            problems.append(f"dvc on the built grid: {err}")
    if rows.get("dvc_repro_noop", {}).get("stages_run"):
        problems.append("dvc repro ran stages on the placeholder grid: the no-op time is not a no-op")
        rows.pop("dvc_repro_noop")
    for p in problems:
        print(f"  PROBLEM: {p}", flush=True)
    checks = {"snakemake -n (paper grid)": rows.get("snakemake_fresh", {}).get("median_s"),
              "dvc repro no-op (paper grid)": rows.get("dvc_repro_noop", {}).get("median_s")}
    verdict = {k: {"seconds": v, "pass": v is not None and v < TARGET_ORCHESTRATION_S} for k, v in checks.items()}
    for k, v in verdict.items():
        took = f"{v['seconds']:.2f} s" if v["seconds"] is not None else "failed"
        print(f"  {k}: {took} -> {'PASS' if v['pass'] else 'FAIL'} (< {TARGET_ORCHESTRATION_S:.0f} s)", flush=True)
    return {"repeats": repeats, "target_s": TARGET_ORCHESTRATION_S, "placeholder_setup_s": setup_s,
            "what": section_orchestration.__doc__.split("\n\n", 1)[1].strip(), "rows": rows, "verdict": verdict, "problems": problems}


def _build_placeholders(repo: Path, run, dvc: str) -> float:
    """Create a placeholder for every output of dvc.yaml (a file where the name has a suffix, else a folder
    with one file) and commit them, so that the whole grid is up to date."""
    script = (
        "from pathlib import Path\nfrom dvc.repo import Repo\n"
        "with Repo('.') as repo:\n"
        "    for stage in repo.index.stages:\n"
        "        for out in stage.outs:\n"
        "            p = Path(str(out.def_path))\n"
        "            if p.suffix:\n"
        "                p.parent.mkdir(parents=True, exist_ok=True); p.write_text('placeholder\\n')\n"
        "            else:\n"
        "                p.mkdir(parents=True, exist_ok=True); (p / 'placeholder').write_text('placeholder\\n')\n"
    )
    t0 = time.perf_counter()
    run([sys.executable, "-c", script], repo)
    run([dvc, "commit", "-f", "-q"], repo)  # a params key missing from params.yaml fails here, named
    return time.perf_counter() - t0


# ---------------------------------------------------------------------------------------------- summary


def summary_table(result: dict) -> list[str]:
    """The compact table printed at the end: one line per model, then one per other section."""
    lines = ["== summary"]
    if "models" in result:
        m = result["models"]
        cols = [("fp32", False), ("bf16", False), ("fp32", True), ("bf16", True)]
        lines.append(f"models ({m['profile']} variants, {m['device']}, batch {m['batch']} x {m['size']}^2): "
                     "training img/s | MFU | peak mem")
        lines.append(f"{'model':>17} {'variant':>13} " + " ".join(
            f"{d + (' comp' if c else ' eager'):>11}" for d, c in cols) + f" {'bf16/fp32':>9} {'comp/eager':>10}"
            f" {'MFU best':>8} {'mem':>9}")
        for name in dict.fromkeys(r["model"] for r in m["rows"]):
            rows = {(r["dtype"], r["compiled"]): r for r in m["rows"] if r["model"] == name and not r.get("plain")}
            cells = []
            for key in cols:
                r = rows.get(key)
                cells.append("-" if r is None else f"{r['images_per_s']:.2f}" if r["status"] == "ok" else r["status"])
            ratio = next(x for x in m["ratios"] if x["model"] == name)
            ok = [r for r in rows.values() if r["status"] == "ok"]
            mfu = [r["mfu"] for r in ok if r.get("mfu") is not None]
            mem = [r["peak_mem_gb"] for r in ok if r.get("peak_mem_gb") is not None]
            comp = ratio["compiled/eager bf16"] or ratio["compiled/eager fp32"]
            lines.append(f"{name:>17} {next(iter(rows.values()))['variant']:>13} "
                         + " ".join(f"{c:>11}" for c in cells)
                         + f" {_x(ratio['bf16/fp32 eager']):>9} {_x(comp):>10}"
                         + f" {f'{100 * max(mfu):.1f}%' if mfu else 'n/a':>8}"
                         + f" {f'{max(mem):.2f}GiB' if mem else 'n/a':>9}"
                         + "".join(sorted({f" (at {r['size']}^2)" for r in ok if r.get("size", m["size"]) != m["size"]})))
    if "loader" in result:
        lo = result["loader"]
        lines.append(f"loader ceiling: {lo['ceiling_pairs_per_s_per_core']:.0f} pairs/s per core (uint8 store, "
                     f"{lo['patch']}^2); float store {lo['per_core_pairs_per_s']['store']:.0f}, png "
                     f"{lo['per_core_pairs_per_s']['png']:.0f}; store/png {lo['store_over_png']:.1f}x")
    if "eval" in result:
        ev = result["eval"]
        r = ev["restore_images_per_s"]
        lines.append(f"eval {ev['model']} {ev['variant']} 1280x720 tile {ev['tile']} batch {ev['batch']} "
                     f"({ev['passes_per_image']} pass(es)): restore {r['fp32']:.2f} img/s fp32"
                     + "".join(f", {r[k]:.2f} {k}" for k in ("tf32", "bf16") if r[k] is not None)
                     + " (fp32 by batch: " + ", ".join(f"{b}: {v:.2f}" for b, v in
                                                       ev["restore_images_per_s_fp32_by_batch"].items())
                     + f"); with scoring ({ev['profile_precision']}) {ev['evaluate_images_per_s']:.2f} img/s "
                     f"({ev['device']})")
        lines.append("eval PSNR vs fp32 (benchmark image, untrained weights): "
                     + ", ".join(f"{k} {d:+.4f} dB (RMS {ev['rms_change_levels'][k]:.3f} levels)"
                                 for k, d in ev["psnr_delta_db"].items())
                     + f" (bf16: {ev['bf16_how']})")
    if "loop" in result:
        lp = result["loop"]
        lines.append(f"loop ({lp['profile']} profile, real loader + loop, steady state): img/s | data_wait | "
                     "GPU util | vs sync_every 1 | loop/step")
        for r in lp["rows"]:
            util = f"{r['gpu_util_pct']:.0f}%" if r["gpu_util_pct"] is not None else "n/a"
            lines.append(f"{r['model']:>17} sync {r['sync_every']:>3}: {r['images_per_s']:9.2f} "
                         f"{100 * r['data_wait']:8.1f}% {util:>9} {_x(r['over_sync_every_1']):>8} "
                         f"{_x(r['loop_over_step']):>9}")
    targets = speed_targets(result)
    if targets:
        lines.append("speed targets:")
    for t in targets:
        value = "-" if t["value"] is None else (f"{100 * t['value']:.1f}%" if "MFU" in t["target"] else
                                                f"{t['value']:.1f}%" if "utilisation" in t["target"] else
                                                f"{t['value']:.2f}x")
        verdict = "n/a" if t["pass"] is None else "PASS" if t["pass"] else "FAIL"
        lines.append(f"  {t['target']}: {value} {verdict}" + (f" ({t['why']})" if t["why"] else ""))
    if "orchestration" in result:
        o = result["orchestration"]
        if o.get("status") == "skipped":
            lines.append(f"orchestration: skipped ({o['reason']})")
        for k, v in o.get("verdict", {}).items():
            took = f"{v['seconds']:.2f} s" if v["seconds"] is not None else "failed"
            lines.append(f"{k}: {took} {'PASS' if v['pass'] else 'FAIL'} (target < {o['target_s']:.0f} s)")
        lines += [f"  problem: {p[:300]}" for p in o.get("problems", [])]
    return lines


def speed_targets(result: dict) -> list[dict]:
    """Each of the speed targets (TARGET_* above) that this run measured something for: value, pass (None: not
    measurable here, with why)."""
    out = []
    device = result["meta"]["device"]
    rows = [r for r in result.get("models", {}).get("rows", []) if r["status"] == "ok"]
    for name in dict.fromkeys(r["model"] for r in rows if r.get("transformer")):
        mfu = [r["mfu"] for r in rows if r["model"] == name and r["dtype"] == "bf16" and not r.get("plain")
               and r.get("mfu") is not None]
        out.append({"target": f"{name} bf16 MFU >= {100 * TARGET_MFU:.0f}%", "value": max(mfu) if mfu else None,
                    "pass": max(mfu) >= TARGET_MFU if mfu else None,
                    "why": None if mfu else "no bf16 MFU in this run (a CPU has no honest peak)"})
    plain = [r["images_per_s"] for r in rows if r["model"] == "nafnet" and r.get("plain")]
    best = [r for r in rows if r["model"] == "nafnet" and not r.get("plain")]
    if plain and best:
        top = max(best, key=lambda r: r["images_per_s"])
        ratio = top["images_per_s"] / plain[0]
        how = f"{top['dtype']} {'compiled' if top['compiled'] else 'eager'}"
        out.append({"target": f"nafnet >= {TARGET_NAFNET_OVER_PLAIN:.0f}x a plain fp32 eager loop", "value": ratio,
                    "pass": ratio >= TARGET_NAFNET_OVER_PLAIN if device == "cuda" else None,
                    "why": f"best: {how}" + ("" if device == "cuda" else "; a CPU, not the target's GPU")})
    for r in result.get("loop", {}).get("rows", []):
        if r["sync_every"] == 1:
            continue
        util = r.get("gpu_util_pct")
        out.append({"target": f"{r['model']} GPU utilisation while finetuning > {TARGET_GPU_UTIL:.0f}%",
                    "value": util, "pass": util > TARGET_GPU_UTIL if util is not None else None,
                    "why": None if util is not None else r.get("gpu_util_note")})
    return out


def merge(paths: list[Path]) -> dict:
    """One result from several runs' bench.json (e.g. gpu_check.sh's parts): model rows pooled, a measured
    row preferred over a skipped one of the same model, precision, mode and plain flag; every other section
    from the last file that has it; ratios and targets recomputed across the parts."""
    import json

    parts = [json.loads(Path(p).read_text()) for p in paths]
    result: dict = {"meta": {**parts[0]["meta"], "merged_from": [str(p) for p in paths]}}
    rows: dict[tuple, dict] = {}
    for part in parts:
        for r in part.get("models", {}).get("rows", []):
            key = (r["model"], r["dtype"], r["compiled"], bool(r.get("plain")))
            if key not in rows or (rows[key]["status"] == "skipped" and r["status"] != "skipped"):
                rows[key] = r
        for name in ("loader", "eval", "loop", "orchestration"):
            if name in part:
                result[name] = part[name]
    models = [p["models"] for p in parts if "models" in p]
    if models:
        merged = list(rows.values())
        result["models"] = {**models[0], "rows": merged, "ratios": _model_ratios(merged), "partial": False}
    result["targets"] = speed_targets(result)
    return result


def _x(v: float | None) -> str:
    return f"{v:.2f}x" if v is not None else "-"


# ---------------------------------------------------------------------------------------------- main


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
        result = merge(args.merge)
        io.write_json(args.out, result)
        print("\n".join(summary_table(result)) + f"\n\nmerged {len(args.merge)} file(s) into {args.out}", flush=True)
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
        result["models"] = section_models(args, device)
    if "loader" in args.only:
        result["loader"] = section_loader(args)
    if "eval" in args.only:
        result["eval"] = section_eval(args, device)
    if "loop" in args.only:
        result["loop"] = section_loop(args, device, result.get("models"))
    if "orchestration" in args.only:
        result["orchestration"] = section_orchestration(args)
    if "models" in result and "loader" in result:
        ceiling = result["loader"]["ceiling_pairs_per_s_per_core"]
        for r in result["models"]["rows"]:
            if r["status"] == "ok":  # loader cores one training process needs at this rate (same patch only)
                r["loader_cores_needed"] = (r["images_per_s"] / ceiling if r["size"] == bench_loader.PATCH
                                            else None)
    result["meta"].update(seconds=time.perf_counter() - t0, loadavg_1min_before_after=[load0, os.getloadavg()[0]])
    result["targets"] = speed_targets(result)
    io.write_json(args.out, result)
    print("\n" + "\n".join(summary_table(result)))
    print(f"\n{len(args.only)} section(s) in {result['meta']['seconds']:.0f} s; load average {load0:.1f} -> "
          f"{os.getloadavg()[0]:.1f}; wrote {args.out}", flush=True)
    return result


if __name__ == "__main__":
    main()
