"""The plan's GPU memory estimate (restorebench.estimate, measured on the meta device) against
torch.cuda.max_memory_allocated of real training steps, for a few paper cells; prints a table.

    python benchmarks/memory.py --out results/memory.json      # on a CUDA device (benchmarks/gpu_check.sh)
    python benchmarks/memory.py --cells nafnet:256:4 --device cpu --steps 1   # smoke run: estimates only

A cell is model:patch:micro_batch (the paper profile's variant for denoising, strategy full). Each real
step is the loop's (train/loop.py): bf16 autocast, the fp32 L1 loss, backward, fused AdamW, gradients
set to None; the peak is over the second and third steps (AdamW's moments exist by then). The target:
the estimate within 25% of the measurement (benchmarks/NOTES.md, the plan's memory figures).
"""

from __future__ import annotations

import argparse
import functools
import json
import time
from pathlib import Path

import torch

from restorebench.config import load_config
from restorebench.estimate import GIB, measure_step
from restorebench.train import strategies
from restorebench.train.cells import cell_model

CELLS = ("nafnet:256:16", "restormer:128:32", "swin_upernet:512:8", "swin_mask2former:512:8", "vit_adapter:512:4")


def measure(model: str, patch: int, micro: int, device: torch.device, steps: int) -> float | None:
    """Peak allocated GiB over real training steps, or None off CUDA or on out-of-memory."""
    if device.type != "cuda":
        return None
    cfg = load_config("params.yaml", ["profile=paper"])
    net = cell_model(cfg, model, "denoise").to(device)
    strategies.prepare(net, "full")
    net.train()
    opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-5, fused=True)
    x = torch.rand(micro, 3, patch, patch, device=device)
    try:
        for step in range(steps):
            if step == 1:
                torch.cuda.reset_peak_memory_stats(device)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                out = net(x)
            (out.float() - x).abs().mean().backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) / GIB
    except torch.cuda.OutOfMemoryError:
        return None
    finally:
        del net, opt
        torch.cuda.empty_cache()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", default=",".join(CELLS), help="model:patch:micro_batch, comma-separated")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--deadline", type=float, default=0, help="seconds after which no new cell starts (0: none)")
    ap.add_argument("--out", default="results/memory.json")
    args = ap.parse_args()
    cfg = load_config("params.yaml", ["profile=paper"])
    device, started, rows = torch.device(args.device), time.monotonic(), []
    print(f"{'cell':<28} {'estimate GiB':>12} {'measured GiB':>12} {'est/meas':>9}  within 25%", flush=True)
    for spec in args.cells.split(","):
        if args.deadline and time.monotonic() - started > args.deadline:
            break
        model, patch, micro = spec.split(":")
        patch, micro = int(patch), int(micro)
        cost = measure_step(functools.partial(cell_model, cfg, model, "denoise"), patch, amp=True,
                            trainable=lambda m: strategies.prepare(m, "full"))  # fmt: skip
        estimate = cost.gpu_bytes(micro) / GIB
        measured = measure(model, patch, micro, device, args.steps)
        ratio = estimate / measured if measured else None
        ok = "n/a" if ratio is None else ("PASS" if abs(ratio - 1) <= 0.25 else "FAIL")
        rows.append({"cell": spec, "estimate_gib": estimate, "measured_gib": measured, "ratio": ratio, "ok": ok,
                     "device": str(device)})  # fmt: skip
        print(f"{spec:<28} {estimate:12.2f} {measured if measured else float('nan'):12.2f} "
              f"{ratio if ratio else float('nan'):9.2f}  {ok}", flush=True)  # fmt: skip
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(rows, indent=2) + "\n")  # after every row: a cut run keeps them


if __name__ == "__main__":
    main()
