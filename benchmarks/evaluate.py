"""Evaluation speed (the eval part of run_all.py): a 1280x720 image through `restorebench.infer.restore` with the
paper profile's tiling, fp32 at several tile batches (and TF32 / bf16 on CUDA, with what each does to PSNR),
then through `restorebench.evaluate.evaluate` (restore + PSNR + both SSIM conventions), as the evaluate
stage builds it.

    python benchmarks/run_all.py --only eval [--eval-model nafnet] [--quick]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `benchmarks` as a package, from any working folder

from benchmarks.metrics import H, W, gopro_pair  # noqa: E402
from benchmarks.models import profile_config, profile_variants  # noqa: E402
from restorebench import evaluate as ev  # noqa: E402
from restorebench.infer import precision, restore, tile_starts  # noqa: E402
from restorebench.models import build_model  # noqa: E402


def section(*, model: str, paper: bool, device: str, params: Path, quick: bool = False) -> dict:
    """The eval part: `model`'s deblur variant (paper on CUDA or with `paper`, else demo) on one 1280x720 pair
    with the paper profile's tiling and precision; rates, PSNR changes and the evaluate path's rate."""
    paper = paper or device == "cuda"
    e = profile_config("paper", params).evaluate  # the paper profile's tiling and precision, on any device
    variant = profile_variants("paper" if paper else "demo", "deblur", params)[model]
    n = 1 if quick else (5 if device == "cuda" else 2)  # per precision and batch: 5 rates on CUDA
    h, w = H, W
    tiles = len(tile_starts(h, e.tile, e.overlap)) * len(tile_starts(w, e.tile, e.overlap)) if e.tile else 1
    passes = -(-tiles // e.batch)
    used = precision(device, autocast=e.autocast, tf32=e.tf32)
    print(f"\n== eval: {model} {variant} on {w}x{h}, tile {e.tile} overlap {e.overlap} batch {e.batch} "
          f"({tiles} tiles/image, {passes} pass(es)), profile precision {used}, {n} images after 1 warm-up, "
          f"{device}", flush=True)
    torch.manual_seed(0)
    net = build_model(model, variant=variant).to(device).eval()
    lq, gt = gopro_pair()
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
    batches = [e.batch] if quick else sorted({1, 4, e.batch})
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
    out = {"model": model, "variant": variant, "image": [h, w, 3], "tile": e.tile, "overlap": e.overlap,
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
