"""Training-step speed of every model: images/s, achieved TFLOP/s, MFU and peak memory.

    python benchmarks/models.py                      # CPU: demo variants, fp32 eager (this machine)
    python benchmarks/models.py --paper --batch 8    # GPU: paper variants, fp32 and bf16, eager and compiled

A step is forward + backward + AdamW on a batch of `--batch` images at `--size`; FLOPs come from
torch.utils.flop_counter (forward + backward of one step), MFU divides the achieved rate by the device's
dense peak (--peak-tflops; defaults: H100 SXM bf16 989, fp32 (TF32 off) 67). Prints a table, writes JSON.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from restorebench.models import VARIANTS, build_model

PAPER = {
    "swin_upernet": "swin-t",
    "swin_mask2former": "swin-t",
    "vit_adapter": "beitv2-b",
    "nafnet": "sidd-width32",
    "restormer": "denoise",
}
PEAK_TFLOPS = {"cuda-bf16": 989.0, "cuda-fp32": 67.0}


def step_flops(model: torch.nn.Module, x: torch.Tensor) -> float:
    counter = FlopCounterMode(display=False)
    with counter:
        model(x).float().mean().backward()
    model.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def bench(name: str, variant: str, *, batch: int, size: int, dtype: str, compiled: bool, steps: int,
          device: str, peak: float | None) -> dict:
    torch.manual_seed(0)
    model = build_model(name, variant=variant).to(device)
    if device == "cuda":
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device == "cuda")
    x = torch.rand(batch, 3, size, size, device=device)
    gt = torch.rand_like(x)
    flops = step_flops(model, x)
    fn = torch.compile(model) if compiled else model
    amp = dtype == "bf16"

    def step() -> None:
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=amp):
            out = fn(x)
        loss = (out.float() - gt).abs().mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(2):  # warm-up (and compilation)
        step()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - t0) / steps
    tflops = flops / seconds / 1e12
    return {
        "model": name,
        "variant": variant,
        "dtype": dtype,
        "compiled": compiled,
        "batch": batch,
        "size": size,
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "step_s": seconds,
        "images_per_s": batch / seconds,
        "tflops": tflops,
        "mfu": tflops / peak if peak else None,
        "peak_mem_gb": torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--paper", action="store_true", help="paper variants (default: demo variants)")
    ap.add_argument("--models", nargs="*", default=list(PAPER))
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--size", type=int, default=None)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--compile", action="store_true", help="also time torch.compile")
    ap.add_argument("--peak-tflops", type=float, default=None)
    ap.add_argument("--out", default="results/bench_models.json")
    args = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    batch = args.batch or (8 if device == "cuda" else 2)
    size = args.size or (256 if device == "cuda" else 64)
    steps = args.steps or (10 if device == "cuda" else 3)
    dtypes = ["fp32", "bf16"] if device == "cuda" else ["fp32"]
    rows = []
    for name in args.models:
        variant = PAPER[name] if args.paper else "demo"
        assert variant in VARIANTS[name]
        for dtype in dtypes:
            for compiled in [False, True] if args.compile else [False]:
                peak = args.peak_tflops or PEAK_TFLOPS.get(f"{device}-{dtype}")
                try:
                    rows.append(bench(name, variant, batch=batch, size=size, dtype=dtype, compiled=compiled,
                                      steps=steps, device=device, peak=peak))
                except torch.OutOfMemoryError as err:
                    rows.append({"model": name, "variant": variant, "dtype": dtype, "compiled": compiled,
                                 "error": f"out of memory: {str(err).splitlines()[0]}"})
                print(_fmt(rows[-1]), flush=True)
    base = {r["model"]: r["images_per_s"] for r in rows if r.get("dtype") == "fp32" and not r.get("compiled")
            and "images_per_s" in r}
    for r in rows:
        if "images_per_s" in r and r["model"] in base:
            r["speedup_vs_fp32_eager"] = r["images_per_s"] / base[r["model"]]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
                               "torch": torch.__version__, "rows": rows}, indent=2))
    print(f"-> {out}")


def _fmt(r: dict) -> str:
    if "error" in r:
        return f"{r['model']:>17} {r['variant']:>12} {r['dtype']:>5} {'compiled' if r['compiled'] else 'eager':>8}  {r['error']}"
    mfu = f"{100 * r['mfu']:.1f}%" if r.get("mfu") else "-"
    mem = f"{r['peak_mem_gb']:.1f}GB" if r.get("peak_mem_gb") else "-"
    return (f"{r['model']:>17} {r['variant']:>12} {r['dtype']:>5} {'compiled' if r['compiled'] else 'eager':>8} "
            f"{r['params_m']:7.2f}M {r['images_per_s']:9.2f} img/s {r['tflops']:8.3f} TFLOP/s MFU {mfu:>6} mem {mem}")


if __name__ == "__main__":
    main()
