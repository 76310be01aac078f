"""The real finetuning loop, end to end: loader workers, host-to-device copies, the step, the loss reads.

The models section times the step alone on a batch held in memory; this one runs what a grid cell runs,
`restorebench.train.finetune.training_data` (the packed uint8 store, `train.workers` DataLoader processes,
pinned memory on CUDA) feeding `restorebench.train.loop.train`, on a synthetic store of photo-like 512x512
sub-images, for each `sync_every` asked (1: the loss read every step, as before; the profile's: every
`train.sync_every` steps). Per row:

- images/s in steady state: the later windows of the run (the first, with worker start-up, cuDNN autotuning
  and allocator growth, is left out);
- data_wait: the share of that time the loop's host thread spent waiting for a batch;
- GPU utilisation (CUDA): NVML's "a kernel was running" percentage, sampled every 50 ms over the same
  windows (torch.cuda.utilization, which needs nvidia-ml-py); the target is above 90%.

    python benchmarks/loop.py [--models nafnet] [--steps 40] [--sync 1,0]     # or: run_all.py --only loop
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `benchmarks` as a package, from any working folder

from benchmarks import loader as bench_loader  # noqa: E402
from restorebench.config import load_config  # noqa: E402
from restorebench.train import loop  # noqa: E402
from restorebench.train.finetune import init_model, loop_config, training_data  # noqa: E402

SAMPLE_S = 0.05  # NVML utilisation sampling period


class UtilSampler:
    """Samples (time, GPU utilisation %) in a thread while in the `with` block; inert without CUDA/NVML."""

    def __init__(self, device: str) -> None:
        self.samples: list[tuple[float, int]] = []
        self.reason: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if device != "cuda":
            self.reason = "n/a: no GPU"
            return
        try:
            torch.cuda.utilization()
        except Exception as err:  # noqa: BLE001 - no NVML (nvidia-ml-py missing): say so, measure the rest
            self.reason = f"n/a: torch.cuda.utilization failed ({type(err).__name__}: {err})"

    def __enter__(self) -> UtilSampler:
        if self.reason is None:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_S):
            self.samples.append((time.perf_counter(), torch.cuda.utilization()))

    def mean_between(self, start: float, end: float) -> float | None:
        inside = [u for t, u in self.samples if start <= t <= end]
        return statistics.fmean(inside) if inside else None


class Windows:
    """Stands in for dvclive's Live in `loop.train`: notes the wall time of every logged row."""

    def __init__(self) -> None:
        self.step = 0
        self.marks: list[tuple[int, float, float]] = []  # (step, wall, this process's CPU seconds)

    def log_metric(self, name: str, value: float) -> None:
        pass

    def make_summary(self) -> None:
        self.marks.append((self.step, time.perf_counter(), time.process_time()))


def run_row(cfg, model: str, sync_every: int, steps: int, device: str, run_dir: Path) -> dict:
    """One training run of `model` (strategy full, task denoise) with the loss read every `sync_every` steps."""
    torch.manual_seed(cfg.seed)
    net, _ = init_model(cfg, model, "denoise")
    data = training_data(cfg, "denoise", model)
    windows = max(2, min(4, steps // 5))
    loop_cfg = dataclasses.replace(loop_config(cfg, model, "full", steps), sync_every=sync_every,
                                   log_every=max(1, steps // windows), checkpoint_every=10**9)
    marks = Windows()
    with UtilSampler(device) as util:
        t_start = time.perf_counter()
        _, result = loop.train(net, data.batches, loop_cfg, device=device, run_dir=run_dir, live=marks,
                               progress=False)
    (step0, t0, cpu0), (step1, t1, cpu1) = marks.marks[0], marks.marks[-1]  # steady state: after window 1
    batch = cfg.train.batch
    return {
        "model": model, "variant": cfg.variant(model, "denoise"), "sync_every": sync_every, "steps": steps,
        "batch": batch, "patch": data.patch, "workers": cfg.train.workers, "amp": cfg.train.amp and device == "cuda",
        "first_window_s": t0 - t_start,
        "images_per_s": (step1 - step0) * batch / max(t1 - t0, 1e-9),
        "data_wait": result.data_wait,
        # the main process's CPU seconds per wall second (loader workers not counted): on a CPU, below the
        # thread count means other jobs took cores, and the row's rate is not worth quoting
        "cpu_per_wall": (cpu1 - cpu0) / max(t1 - t0, 1e-9),
        "gpu_util_pct": util.mean_between(t0, t1),
        "gpu_util_samples": sum(t0 <= t <= t1 for t, _ in util.samples),
        "gpu_util_note": util.reason,
    }


def section(*, profile: str, models: list[str], steps: int, syncs: list[int], device: str,
            params: Path, images: int = 16, stop: Callable[[], bool] = lambda: False,
            on_row: Callable[[list[dict]], None] = lambda rows: None) -> dict:
    """Rows for every model x sync_every, on one synthetic store; `syncs` entries of 0 mean the profile's.
    Once `stop()` is true no further row starts (those rows are listed under "skipped"); `on_row(rows)`
    follows every row."""
    asked = " vs ".join(str(s) if s else "the profile's" for s in syncs)
    print(f"\n== loop: the finetuning loop end to end ({profile} profile, task denoise, {steps} steps per row, "
          f"steady state after the first window), sync_every {asked}, {device}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        store = tmp / "data" / "store" / "sidd" / "train"
        bench_loader.make_store(tmp, images, store)
        cfg = load_config(params, [f"profile={profile}", f"profiles.{profile}.data.root={tmp / 'data'}",
                                   f"profiles.{profile}.train.holdout=0"])
        syncs = [s or cfg.train.sync_every for s in syncs]
        rows, skipped = [], []
        for model in models:
            for sync in dict.fromkeys(syncs):
                if stop():
                    skipped.append({"model": model, "sync_every": sync})
                    continue
                row = run_row(cfg, model, sync, steps, device, tmp / "runs" / f"{model}-{sync}")
                rows.append(row)
                print("  " + line(row), flush=True)
                on_row(rows)
    base = {r["model"]: r["images_per_s"] for r in rows if r["sync_every"] == 1}
    for r in rows:
        r["over_sync_every_1"] = r["images_per_s"] / base[r["model"]] if r["model"] in base else None
    return {"profile": profile, "device": device, "steps": steps, "store_images": images, "rows": rows,
            "skipped": skipped}


def against_step(loop: dict, models: dict | None, device: str) -> None:
    """Add `loop_over_step` to each loop row: its rate over the models part's eager rate of the same model,
    batch, patch and precision (bf16 on CUDA, fp32 on a CPU: what the loop trains in); None without one."""
    step_rates = {} if models is None else {
        (r["model"], r["batch"], r["size"]): r["images_per_s"] for r in models["rows"]
        if r["status"] == "ok" and not r["compiled"] and r["dtype"] == ("bf16" if device == "cuda" else "fp32")}
    for r in loop["rows"]:
        step = step_rates.get((r["model"], r["batch"], r["patch"]))
        r["loop_over_step"] = r["images_per_s"] / step if step else None


def line(r: dict) -> str:
    util = f"{r['gpu_util_pct']:.0f}%" if r["gpu_util_pct"] is not None else (r["gpu_util_note"] or "n/a")
    return (f"{r['model']:>17} {r['variant']:>13} sync_every {r['sync_every']:>3}: {r['images_per_s']:9.2f} img/s "
            f"(batch {r['batch']} x {r['patch']}^2, {r['workers']} workers), data_wait {100 * r['data_wait']:.1f}%, "
            f"GPU util {util}, host cpu/wall {r['cpu_per_wall']:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--paper", action="store_true", help="paper profile (default on CUDA)")
    ap.add_argument("--models", default="nafnet")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--sync", default="1,0", help="sync_every values; 0: the profile's train.sync_every")
    args = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    out = section(profile="paper" if args.paper or device == "cuda" else "demo", models=args.models.split(","),
                  steps=args.steps, syncs=[int(s) for s in args.sync.split(",")], device=device,
                  params=ROOT / "params.yaml")
    print(f"{len(out['rows'])} rows")


if __name__ == "__main__":
    main()
