"""Validation throughput: images per second on 1280x720 PNG pairs (GoPro's size), vs worker processes.

Builds `--pairs` lq/gt pairs in the GoPro layout (GOPRO_Large/train/.../{blur,sharp}/NNNNNN.png, from
scikit-image's bundled photos resized to 1280x720, lq with noise so it compresses like a photo), then times
`build_manifest` (header + sha256 per file) and `validate_dataset` (great-expectations on the manifest +
full decode of every file). images/s counts files (two per pair); the "decode" column is the per-file phase
alone, "total" includes the expectations.

    python benchmarks/validate.py [--pairs 24] [--workers 1,2,0] [--out results/bench_validate.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from restorebench.data.manifest import build_manifest
from restorebench.data.parallel import resolve_workers
from restorebench.data.samples import load_sources, png_bytes
from restorebench.data.validate import validate_dataset

H, W = 720, 1280


def make_pairs(root: Path, pairs: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    sources = [
        np.asarray(Image.fromarray(np.uint8(s * 255)).resize((W, H), Image.Resampling.BICUBIC))
        for s in load_sources()
    ]
    for i in range(pairs):
        seq = root / "GOPRO_Large" / "train" / f"GOPR0{372 + i // 8}_11_00"
        gt = sources[i % len(sources)]
        lq = np.clip(gt + rng.normal(0, 6, gt.shape), 0, 255).astype(np.uint8)
        for sub, img in (("sharp", gt), ("blur", lq)):
            (seq / sub).mkdir(parents=True, exist_ok=True)
            (seq / sub / f"{i:06d}.png").write_bytes(png_bytes(img))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=24)
    ap.add_argument("--workers", default="1,2,0", help="comma list; 0 = all cores")
    ap.add_argument("--out", default="results/bench_validate.json")
    args = ap.parse_args()

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "gopro"
        t = time.perf_counter()
        make_pairs(raw, args.pairs)
        print(f"made {args.pairs} pairs of {W}x{H} PNGs in {time.perf_counter() - t:.1f} s", file=sys.stderr)
        validate_dataset(  # warm-up: imports great-expectations once, fills the page cache
            "gopro",
            build_manifest("gopro", raw, workers=1),
            raw,
            expected_pairs={},
            expected_groups={},
            workers=1,
        )
        for w in (int(x) for x in args.workers.split(",")):
            t = time.perf_counter()
            df = build_manifest("gopro", raw, workers=w)
            manifest_s = time.perf_counter() - t
            t = time.perf_counter()
            report = validate_dataset(
                "gopro", df, raw, expected_pairs={"train": args.pairs}, expected_groups={}, workers=w
            )
            total_s = time.perf_counter() - t
            assert report["success"], report["failures"][:3]
            files = report["files_checked"]
            rows.append(
                {
                    "workers": resolve_workers(w),
                    "files": files,
                    "manifest_images_per_s": round(files / manifest_s, 1),
                    "validate_decode_images_per_s": report["images_per_second"],
                    "validate_total_images_per_s": round(files / total_s, 1),
                    "validate_seconds": round(total_s, 3),
                }
            )
    print(f"{'workers':>7} {'files':>6} {'manifest img/s':>15} {'decode img/s':>13} {'total img/s':>12}")
    for r in rows:
        print(
            f"{r['workers']:>7} {r['files']:>6} {r['manifest_images_per_s']:>15.1f} "
            f"{r['validate_decode_images_per_s']:>13.1f} {r['validate_total_images_per_s']:>12.1f}"
        )
    result = {
        "benchmark": "validate",
        "image_size": [H, W, 3],
        "pairs": args.pairs,
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "python": sys.version.split()[0],
        },
        "rows": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
