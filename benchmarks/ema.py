"""EMA update per training step: one mul_ + add_ per tensor (the old loop) vs two multi-tensor kernels.

`restorebench.train.ema.EMA.update` now does the same arithmetic with torch._foreach_mul_ / _foreach_add_
(bit-identical results, see tests/test_train.py); this measures what that saves, side by side, on each
model's paper variant (many small tensors: NAFNet, Restormer) and demo variant.

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


def per_tensor_update(ema: EMA, model: torch.nn.Module) -> None:
    """The update as it was: a loop over the state dict, two kernels per floating tensor."""
    current = model.state_dict()
    with torch.no_grad():
        for name, value in ema.shadow.state_dict().items():
            src = current[name]
            if value.dtype.is_floating_point:
                value.mul_(ema.decay).add_(src.detach(), alpha=1.0 - ema.decay)
            else:
                value.copy_(src)


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
            old = timed(lambda e=ema, m=model: per_tensor_update(e, m), args.repeats, device)
            new = timed(lambda e=ema, m=model: e.update(m), args.repeats, device)
            print(f"{name:>17} {variants[name]:>13} {tensors:>8} {params:>7.1f}M {1e3 * old:>14.2f} "
                  f"{1e3 * new:>11.2f} {old / new:>8.2f}x", flush=True)


if __name__ == "__main__":
    main()
