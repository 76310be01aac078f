"""Pretraining data: bytes per ImageNet image stored by `degrade`, and the CPU cost per sample of each task's
degradation synthesised when a sample is drawn (restorebench.data.synth), on ImageNet-like 500x375 JPEGs.

Each task is drawn as pretraining draws it (`PairedPatchDataset`, uint8 tensors): IPT's tasks at 48 x scale
crops of the 192x192 patch, DCPT's at its 128x128 crop; every draw a new (seed, item, task, draw) key.
One process, one thread; CPU time (time.process_time), so a busy machine does not inflate it. Prints a table; --json writes the rows.

    python benchmarks/synthesis.py [--images 8] [--draws 24] [--json results/bench_synthesis.json]
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from restorebench.config import load_config
from restorebench.data.datasets import PairedPatchDataset
from restorebench.degrade.stage import degrade_store

ROOT = Path(__file__).resolve().parents[1]


def imagenet_like(rng: np.random.Generator, h: int = 375, w: int = 500) -> bytes:
    """A 500x375 JPEG (quality 90) with ImageNet-like content: smooth shapes plus texture and noise."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    f = rng.uniform(0.01, 0.06, 6)
    base = np.stack([np.sin(xx * f[c] + c) * np.cos(yy * f[c + 3] - c) for c in range(3)], -1)
    img = np.clip(127 + 90 * base + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def store_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.iterdir())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--draws", type=int, default=24, help="timed draws per task")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    cfg = load_config(ROOT / "params.yaml", ["profile=paper"])
    d = cfg.degrade
    ipt = {t: 48 for t in cfg.pretrain.ipt.tasks.values()}  # IPT's 48x48 inputs: 48 x scale clean crops
    dcpt = {t: cfg.pretrain.dcpt.patch for t in cfg.pretrain.dcpt.degradations}
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        images = []
        for i in range(args.images):
            p = tmp / f"n{i // 4:08d}_{i}.JPEG"
            p.write_bytes(imagenet_like(rng))
            images.append((p.stem, p))
        jpeg_bytes = np.mean([p.stat().st_size for _, p in images])
        t0 = time.process_time()
        stats = degrade_store(images, tmp / "store", tasks=d.tasks, patch=d.patch, margin=d.margin,
                              patches_per_image=d.patches_per_image, seed=0, workers=1, progress=False)  # fmt: skip
        build_s = (time.process_time() - t0) / args.images
        per_image = store_bytes(tmp / "store") / stats["images"]
        rows = []
        for method, tasks in (("ipt", ipt), ("dcpt", dcpt)):
            for task, side in tasks.items():
                scale = int(json.loads((tmp / "store" / "meta.json").read_text())["tasks"][task]["scale"])
                ds = PairedPatchDataset(tmp / "store", side * scale if method == "ipt" else side, task=task,
                                        seed=0, uint8=True)  # fmt: skip
                ds[(0, 0)]  # warm: memory map, first Generator
                t0 = time.process_time()
                for k in range(args.draws):
                    ds[(k + 1, k % len(ds))]
                ms = (time.process_time() - t0) / args.draws * 1e3
                rows.append({"method": method, "task": task, "crop": ds.patch, "ms_per_sample": round(ms, 3)})
    print(f"degrade (paper profile: patch {d.patch}, margin {d.margin}, {len(d.tasks)} tasks): "
          f"{per_image / 1e3:.1f} KB stored per image (JPEG source {jpeg_bytes / 1e3:.1f} KB), "
          f"{build_s * 1e3:.1f} ms/image to build, one core")  # fmt: skip
    print(f"{'method':>6} {'task':>12} {'crop':>5} {'ms/sample':>10} {'samples/s/core':>15}")
    for r in rows:
        print(f"{r['method']:>6} {r['task']:>12} {r['crop']:>5} {r['ms_per_sample']:>10.2f} "
              f"{1e3 / r['ms_per_sample']:>15.0f}")  # fmt: skip
    for method in ("ipt", "dcpt"):
        ms = np.mean([r["ms_per_sample"] for r in rows if r["method"] == method])
        print(f"{method}: mean {ms:.2f} ms/sample over its tasks (tasks drawn uniformly) = "
              f"{1e3 / ms:.0f} samples/s per loader core")  # fmt: skip
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"cpu": platform.processor() or platform.machine(),
                                         "bytes_per_image": per_image, "build_seconds_per_image": build_s,
                                         "rows": rows}, indent=2) + "\n")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
