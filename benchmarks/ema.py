"""EMA update per training step: one mul_ + add_ per tensor (a loop) vs two multi-tensor (foreach) kernels.

`restorebench.train.ema.EMA.update` does the same arithmetic with torch._foreach_mul_ / _foreach_add_ on
CUDA and with the loop on a CPU; this times both side by side, on each model's paper variant (hundreds of
tensors: 309-664) and demo variant, on whatever device is here.

    python benchmarks/ema.py [--models nafnet,restormer] [--repeats 20]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.models import profile_variants  # noqa: E402
from restorebench.models import MODELS, build_model  # noqa: E402
from restorebench.train.ema import EMA  # noqa: E402


def timed(fn, repeats: int, device: str) -> float:
    fn()
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--variants", default="paper,demo", help="profiles whose denoise variants to time")
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"EMA update, median of {args.repeats}, {device} ({torch.get_num_threads()} threads)")
    print(f"{'model':>17} {'variant':>13} {'tensors':>8} {'params':>8} {'per-tensor ms':>14} {'foreach ms':>11} "
          f"{'speed-up':>9}")
    for profile in args.variants.split(","):
        variants = profile_variants(profile, "denoise", ROOT / "params.yaml")
        for name in args.models.split(","):
            torch.manual_seed(0)
            model = build_model(name, variant=variants[name]).to(device)
            ema = EMA(model, 0.999)
            tensors = len(ema.shadow.state_dict())
            params = sum(p.numel() for p in model.parameters()) / 1e6
            old = timed(lambda e=ema, m=model: e.update(m, foreach=False), args.repeats, device)
            new = timed(lambda e=ema, m=model: e.update(m, foreach=True), args.repeats, device)
            print(f"{name:>17} {variants[name]:>13} {tensors:>8} {params:>7.1f}M {1e3 * old:>14.2f} "
                  f"{1e3 * new:>11.2f} {old / new:>8.2f}x", flush=True)


if __name__ == "__main__":
    main()
