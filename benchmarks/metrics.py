"""Metric speed per 1280x720x3 image (GoPro size): NumPy reference vs torch, both SSIM conventions.

    python benchmarks/metrics.py [--repeats 5] [--out results/bench_metrics.json]

CPU rows always; CUDA rows (torch, batch of images on the GPU, per-image time) when a device exists.
Target: both SSIM conventions together under 0.5 s per image on CPU. Prints a table and
writes JSON with the machine description, the median and min seconds per image of every row.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import scipy
import torch

from restorebench import metrics as M

H, W = 720, 1280
TARGET_BOTH_SSIM_S = 0.5


def gopro_pair(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A GoPro-sized uint8 pair: smooth content plus noise (values do not change the cost)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:H, 0:W]
    base = np.stack([0.5 + 0.4 * np.sin(xx / 23.0 + c) * np.cos(yy / 17.0) for c in range(3)], -1)
    target = np.clip(base + 0.03 * rng.standard_normal(base.shape), 0, 1)
    pred = np.clip(target + 0.05 * rng.standard_normal(base.shape), 0, 1)
    return np.round(pred * 255).astype(np.uint8), np.round(target * 255).astype(np.uint8)


def _time(fn: Callable[[], object], repeats: int, per: int = 1, sync: bool = False) -> dict[str, float]:
    fn()  # warm-up (allocations, CUDA kernels)
    times, cpu = [], []
    for _ in range(repeats):
        if sync:
            torch.cuda.synchronize()
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        if sync:
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) / per)
        cpu.append((time.process_time() - c0) / per)
    # wall time is the target; process CPU time shows the cost without other jobs' contention
    return {"median_s": statistics.median(times), "min_s": min(times), "cpu_median_s": statistics.median(cpu)}


def run(repeats: int) -> list[dict]:
    pu, tu = gopro_pair()
    pf, tf = pu / 255.0, tu / 255.0
    rows: list[dict] = []

    def add(
        impl: str,
        device: str,
        what: str,
        inp: str,
        fn: Callable[[], object],
        per: int = 1,
        sync: bool = False,
    ) -> None:
        r = _time(fn, repeats, per, sync)
        rows.append({"impl": impl, "device": device, "metric": what, "input": inp, "batch": per, **r})
        print(
            f"{impl:6s} {device:5s} {what:28s} {inp:14s} batch {per:2d}  "
            f"median {r['median_s'] * 1e3:7.1f} ms  min {r['min_s'] * 1e3:7.1f} ms  "
            f"cpu {r['cpu_median_s'] * 1e3:7.1f} ms",
            flush=True,
        )

    for inp, p, t, dr in (("uint8/255", pu, tu, 255), ("float64 [0,1]", pf, tf, 1)):
        add("numpy", "cpu", "psnr", inp, lambda p=p, t=t, dr=dr: M.psnr(p, t, data_range=dr))
        for conv in M.CONVENTIONS:
            add(
                "numpy",
                "cpu",
                f"ssim {conv}",
                inp,
                lambda p=p, t=t, dr=dr, conv=conv: M.ssim(p, t, data_range=dr, convention=conv),
            )
        add(
            "numpy",
            "cpu",
            "ssim both (ssim_conventions)",
            inp,
            lambda p=p, t=t, dr=dr: M.ssim_conventions(p, t, data_range=dr),
        )
    add(
        "numpy",
        "cpu",
        "psnr-Y + ssim-Y basicsr",
        "uint8/255",
        lambda: (
            M.psnr(pu, tu, data_range=255, y_channel=True),
            M.ssim(pu, tu, data_range=255, y_channel=True),
        ),
    )

    tp = torch.from_numpy(pu).permute(2, 0, 1)[None].contiguous()
    tt = torch.from_numpy(tu).permute(2, 0, 1)[None].contiguous()
    add("torch", "cpu", "psnr", "uint8/255", lambda: M.psnr_torch(tp, tt, data_range=255))
    for conv in M.CONVENTIONS:
        add(
            "torch",
            "cpu",
            f"ssim {conv}",
            "uint8/255",
            lambda conv=conv: M.ssim_torch(tp, tt, data_range=255, convention=conv),
        )
    add(
        "torch",
        "cpu",
        "ssim both (ssim_conventions)",
        "uint8/255",
        lambda: M.ssim_conventions_torch(tp, tt, data_range=255),
    )

    if torch.cuda.is_available():
        b = 8
        gp = (tp.float() / 255).repeat(b, 1, 1, 1).cuda()
        gt = (tt.float() / 255).repeat(b, 1, 1, 1).cuda()
        inp = "float32 [0,1]"
        add("torch", "cuda", "psnr", inp, lambda: M.psnr_torch(gp, gt, data_range=1), b, True)
        for conv in M.CONVENTIONS:
            add(
                "torch",
                "cuda",
                f"ssim {conv}",
                inp,
                lambda conv=conv: M.ssim_torch(gp, gt, data_range=1, convention=conv),
                b,
                True,
            )
        add(
            "torch",
            "cuda",
            "ssim both (ssim_conventions)",
            inp,
            lambda: M.ssim_conventions_torch(gp, gt, data_range=1),
            b,
            True,
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, default=Path("results/bench_metrics.json"))
    args = ap.parse_args()

    print(
        f"metric time per {W}x{H}x3 image; torch threads {torch.get_num_threads()}, "
        f"os.cpu_count {os.cpu_count()}, cuda {torch.cuda.is_available()}"
    )
    load_before = os.getloadavg()
    rows = run(args.repeats)
    both = [r for r in rows if r["impl"] == "numpy" and r["metric"].startswith("ssim both")]
    worst = max(r["median_s"] for r in both)
    worst_cpu = max(r["cpu_median_s"] for r in both)
    load = os.getloadavg()
    verdict = "meets" if worst < TARGET_BOTH_SSIM_S else "MISSES"
    print(
        f"\nboth SSIM conventions, NumPy/CPU: {worst:.3f} s wall, {worst_cpu:.3f} s CPU per image (median)"
        f" -> wall {verdict} the {TARGET_BOTH_SSIM_S} s target; load average {load[0]:.1f} on"
        f" {os.cpu_count()} cores (wall time above CPU time means other jobs shared the cores)"
    )

    result = {
        "image": [H, W, 3],
        "repeats": args.repeats,
        "target_both_ssim_cpu_s": TARGET_BOTH_SSIM_S,
        "both_ssim_cpu_median_s": worst,
        "both_ssim_cpu_process_time_s": worst_cpu,
        "meets_target": worst < TARGET_BOTH_SSIM_S,
        "meets_target_cpu_time": worst_cpu < TARGET_BOTH_SSIM_S,
        "loadavg_1min_before_after": [load_before[0], load[0]],
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "python": sys.version.split()[0],
            "numpy": np.__version__,
            "scipy": scipy.__version__,
            "torch": torch.__version__,
        },
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(args.out)  # atomic write
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
