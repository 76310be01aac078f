"""Scale rehearsal of the data stages on real-sized synthetic inputs made on the spot, extrapolated to the
paper's counts.

Inputs: SIDD-sized pairs (5328x3000 PNG, GT + NOISY), GoPro-sized frames (1280x720 PNG, blur + blur_gamma +
sharp), ImageNet-like JPEGs (500x375) inside class tars inside an ILSVRC2012_img_train.tar look-alike; each
dataset packed as the archive `fetch` takes. Stages, each in a child process of its own (one worker, the
paper profile's recipe), in pipeline order:

    fetch_{sidd,gopro,imagenet}      fetch_and_index from the archive: extract (ImageNet: keep the class
                                     tars) and build the manifest (sha256 + header of every image)
    validate_{sidd,gopro,imagenet}   decode and check every image against the manifest
    prepare_{sidd,gopro}             crop the training pairs into the store (512/384, 512/256)
    degrade_imagenet                 the pretraining store (clean 192x192 patches; synthesis is per draw)

Per stage: CPU seconds per item (user + sys of the child, so a busy machine does not inflate it), wall
seconds, bytes written per item, and peak host memory (the child's VmHWM). Extrapolation to the paper's
counts (SIDD 320 pairs; GoPro 3214 frames fetched and validated, 2103 prepared; ImageNet 1,281,167 images):
time and bytes scale with the count; peak memory is the measured peak (the stages stream their items, which
tests/test_scale.py holds) plus the manifest's rows, which fetch and validate hold in memory whole
(measured per row here with tracemalloc, times the paper count).

    python benchmarks/scale.py [--sidd 2] [--gopro 6] [--imagenet 64] [--write]

--write stores the figures in src/restorebench/scale_figures.json:
{"<stage>": {"seconds_per_item", "bytes_per_item", "peak_host_gib", "unit", "measured"}}, peak_host_gib at
the paper's count.
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import os
import platform
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
FIGURES = ROOT / "src" / "restorebench" / "scale_figures.json"
GIB = 1024**3

# stage -> (dataset, unit, the paper's count of that unit)
STAGES = {
    "fetch_sidd": ("sidd", "pair", 320),
    "validate_sidd": ("sidd", "pair", 320),
    "prepare_sidd": ("sidd", "pair", 320),
    "fetch_gopro": ("gopro", "frame", 3214),  # GoPro's 2103 train + 1111 test frames
    "validate_gopro": ("gopro", "frame", 3214),
    "prepare_gopro": ("gopro", "frame", 2103),
    "fetch_imagenet": ("imagenet", "image", 1_281_167),
    "validate_imagenet": ("imagenet", "image", 1_281_167),
    "degrade_imagenet": ("imagenet", "image", 1_281_167),
}
# the expected_pairs splits a stage's count covers, where not all (plan counts items the same way): SIDD's
# 1280 validation blocks sit in two .mat files, not in per-pair files
SPLITS = {"fetch_sidd": ["train"], "validate_sidd": ["train"]}
SIZES = {"sidd": (3000, 5328), "gopro": (720, 1280), "imagenet": (375, 500)}  # (h, w)


# ------------------------------------------------------------------------------------------- inputs


def photo(rng: np.random.Generator, h: int, w: int, noise: float = 8.0) -> np.ndarray:
    """HxWx3 uint8 with photo-like statistics: smooth gradients and shapes plus sensor-like noise (so PNG
    and JPEG sizes and decode times are those of photographs, not of flat or random images)."""
    yy = np.linspace(0, 1, h, dtype=np.float32)[:, None]
    xx = np.linspace(0, 1, w, dtype=np.float32)[None, :]
    f = rng.uniform(3, 30, 6).astype(np.float32)
    out = np.empty((h, w, 3), np.uint8)
    for c in range(3):
        ch = 127 + 80 * np.sin(xx * f[c] + c) * np.cos(yy * f[c + 3] - c)
        ch += rng.normal(0, noise, (h, w)).astype(np.float32)
        out[..., c] = np.clip(ch, 0, 255)
    return out


def _png(path: Path, img: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path, compress_level=6)


def make_inputs(dataset: str, folder: Path, n: int, *, size: tuple[int, int] | None = None, seed: int = 0) -> Path:
    """n items of `dataset` at `size` (default: the real size), packed as the archive fetch takes; returns
    the archive's path. GoPro puts n frames in train and one in test (its layout needs both)."""
    h, w = size or SIZES[dataset]
    rng = np.random.default_rng(seed)
    build = folder / f"{dataset}_build"
    if dataset == "sidd":
        for i in range(n):
            inst = build / "SIDD_Medium_Srgb" / "Data" / f"{i + 1:04d}_001_S6_00100_00060_3200_L"
            gt = photo(rng, h, w, noise=2.0)
            noisy = np.clip(gt + rng.normal(0, 12, gt.shape), 0, 255).astype(np.uint8)
            _png(inst / f"{i + 1:04d}_GT_SRGB_010.PNG", gt)
            _png(inst / f"{i + 1:04d}_NOISY_SRGB_010.PNG", noisy)
        top = "SIDD_Medium_Srgb"
    elif dataset == "gopro":
        for split, count in (("train", n), ("test", 1)):
            seq = build / "GOPRO_Large" / split / f"GOPR0{len(split):03d}_11_00"
            for k in range(count):
                sharp = photo(rng, h, w, noise=2.0)
                blur = np.clip(sharp.astype(np.float32) * 0.9 + 12, 0, 255).astype(np.uint8)
                _png(seq / "sharp" / f"{k:06d}.png", sharp)
                _png(seq / "blur" / f"{k:06d}.png", blur)
                _png(seq / "blur_gamma" / f"{k:06d}.png", np.clip(blur.astype(int) + 3, 0, 255).astype(np.uint8))
        top = "GOPRO_Large"
    elif dataset == "imagenet":
        per_class = max(1, min(16, n // 4))
        outer = folder / "ILSVRC2012_img_train.tar"
        with tarfile.open(outer, "w") as tf:
            for c in range(0, n, per_class):
                wnid = f"n{1440764 + c:08d}"
                buf = io.BytesIO()
                with tarfile.open(fileobj=buf, mode="w") as inner:
                    for k in range(c, min(n, c + per_class)):
                        jpg = io.BytesIO()
                        Image.fromarray(photo(rng, h, w)).save(jpg, "JPEG", quality=90)
                        info = tarfile.TarInfo(f"{wnid}_{k}.JPEG")
                        info.size = jpg.tell()
                        jpg.seek(0)
                        inner.addfile(info, jpg)
                info = tarfile.TarInfo(f"{wnid}.tar")
                info.size = buf.tell()
                buf.seek(0)
                tf.addfile(info, buf)
        return outer
    else:
        raise ValueError(f"unknown dataset {dataset!r}")
    archive = folder / f"{top}.tar"
    with tarfile.open(archive, "w") as tf:
        tf.add(build / top, arcname=top)
    return archive


# ------------------------------------------------------------------------------------------- stages


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_rss() -> int:
    """This process's peak resident memory: VmHWM, the high-water mark of its own address space. Not
    ru_maxrss: Linux carries that across exec from the forked parent, so a child started from a large
    parent would report the parent's size."""
    with open("/proc/self/status") as f:
        return next(int(x.split()[1]) * 1024 for x in f if x.startswith("VmHWM:"))


def _du(path: Path) -> int:
    path = Path(path)
    return path.stat().st_size if path.is_file() else sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _child(stage: str, root: Path, archive: Path, profile: str = "paper") -> dict:
    """Run one stage here (a fresh or forked process) with `profile`'s recipe and report its cost; imports
    come before the baseline."""
    import great_expectations  # noqa: F401 - validation's import, outside the stage's own memory
    import pandas  # noqa: F401

    from restorebench.config import SampleConfig, load_config
    from restorebench.data.fetch import fetch_and_index
    from restorebench.data.manifest import read_manifest
    from restorebench.data.prepare import prepare_dataset
    from restorebench.data.validate import validate_stage
    from restorebench.degrade.stage import degrade_imagenet

    dataset = STAGES[stage][0]
    cfg = load_config(ROOT / "params.yaml", [f"profile={profile}"])
    before, t0, c0 = _rss(), time.perf_counter(), os.times()
    if stage.startswith("fetch"):
        df = fetch_and_index(dataset, str(archive), root / "raw" / dataset, root / "manifests" / f"{dataset}.parquet",
                             cache_dir=root / "cache", sample=SampleConfig(), seed=0, min_free_bytes=0,
                             expected_pairs={}, workers=1)  # fmt: skip
        items, written = len(df), _du((root / "raw" / dataset).resolve()) + _du(root / "manifests" / f"{dataset}.parquet")
    elif stage.startswith("validate"):
        report, out = validate_stage(dataset, root=root, expected_pairs={}, expected_groups={}, workers=1)
        items, written = sum(report["counts"].values()), _du(out)
    elif stage.startswith("prepare"):
        crop = getattr(cfg.prepare, dataset)
        stats = prepare_dataset(dataset, root=root, size=crop.size, step=crop.step, workers=1)
        items, written = stats["images"], _du(root / "store" / dataset / "train")
    else:
        d = cfg.degrade
        stats = degrade_imagenet(root=root, tasks=d.tasks, patch=d.patch, margin=d.margin, seed=0, workers=1,
                                 patches_per_image=d.patches_per_image)  # fmt: skip
        items, written = stats["images"], _du(root / "store" / "imagenet" / "train")
    c1 = os.times()
    rows = len(read_manifest(root / "manifests" / f"{dataset}.parquet", columns=["pair_id"]))
    return {"stage": stage, "items": items, "manifest_rows": rows, "cpu_s": (c1.user - c0.user) + (c1.system - c0.system),
            "wall_s": time.perf_counter() - t0, "bytes": written, "rss_before": before,
            "peak_rss": _peak_rss()}  # fmt: skip


def run_stage(stage: str, root: Path, archive: Path) -> dict:
    """`stage` in a child process (its own peak memory); returns the child's report."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, __file__, "--child", stage, str(root), str(archive)], env=env,
                         capture_output=True, text=True)  # fmt: skip
    if out.returncode:
        raise RuntimeError(f"{stage} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_stage_forked(stage: str, root: Path, archive: Path, profile: str = "paper") -> dict:
    """`stage` in a forked child (no fresh imports: quick, for tests); its peak counts only what it touched."""
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    queue = ctx.Queue()

    def target() -> None:
        try:
            queue.put(_child(stage, root, archive, profile))
        except BaseException as err:  # noqa: BLE001 - reported to the parent
            queue.put({"error": f"{type(err).__name__}: {err}"})

    proc = ctx.Process(target=target)
    proc.start()
    out = queue.get()
    proc.join()
    if "error" in out:
        raise RuntimeError(f"{stage}: {out['error']}")
    return out


def manifest_row_bytes(manifest: Path) -> float:
    """Host memory per manifest row while a stage holds the manifest: the rows as dicts (as build_manifest
    makes them) plus the DataFrame, measured with tracemalloc on this manifest."""
    import tracemalloc

    import pandas as pd

    df = pd.read_parquet(manifest)
    tracemalloc.start()
    rows = df.to_dict("records")
    frame = pd.DataFrame(rows)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    del rows, frame
    return peak / max(1, len(df))


def rehearse(counts: dict[str, int], workdir: Path, *, size: dict | None = None) -> dict[str, dict]:
    """Make the inputs and run every stage of the datasets in `counts` (dataset -> items), in order."""
    results = {}
    for dataset, n in counts.items():
        root = workdir / dataset
        root.mkdir(parents=True, exist_ok=True)
        archive = make_inputs(dataset, workdir, n, size=(size or {}).get(dataset))
        per_row = None
        for stage, (ds, _, _) in STAGES.items():
            if ds == dataset:
                results[stage] = run_stage(stage, root, archive)
                if per_row is None:
                    per_row = manifest_row_bytes(root / "manifests" / f"{dataset}.parquet")
                results[stage]["manifest_row_bytes"] = per_row
    return results


def figures(results: dict[str, dict], measured: str) -> dict[str, dict]:
    """The schema plan reads: per stage seconds_per_item (CPU), bytes_per_item, peak_host_gib at the
    paper's count (measured peak + the manifest rows fetch/validate hold), unit, measured."""
    out = {}
    for stage, r in results.items():
        _, unit, count = STAGES[stage]
        held = stage.startswith(("fetch", "validate"))  # these hold the whole manifest in memory
        extra = r["manifest_row_bytes"] * max(0, count - r["manifest_rows"]) if held else 0.0
        out[stage] = {
            "seconds_per_item": round(r["cpu_s"] / r["items"], 5),
            "bytes_per_item": round(r["bytes"] / r["items"], 1),
            "peak_host_gib": round((r["peak_rss"] + extra) / GIB, 3),
            "unit": unit,
            "measured": measured,
            **({"splits": SPLITS[stage]} if stage in SPLITS else {}),
        }
    return out


def table(results: dict[str, dict], figs: dict[str, dict]) -> str:
    lines = [f"{'stage':>18} {'items':>6} {'cpu s/item':>11} {'wall s/item':>12} {'MB/item':>9} {'peak GiB':>9}"
             f" | {'paper n':>9} {'cpu h':>8} {'GB':>9} {'peak GiB':>9}"]  # fmt: skip
    for stage, r in results.items():
        f, count = figs[stage], STAGES[stage][2]
        lines.append(
            f"{stage:>18} {r['items']:>6} {f['seconds_per_item']:>11.4f} {r['wall_s'] / r['items']:>12.4f} "
            f"{f['bytes_per_item'] / 1e6:>9.3f} {r['peak_rss'] / GIB:>9.3f} | {count:>9} "
            f"{f['seconds_per_item'] * count / 3600:>8.2f} {f['bytes_per_item'] * count / 1e9:>9.2f} "
            f"{f['peak_host_gib']:>9.3f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--child":
        print(json.dumps(_child(argv[1], Path(argv[2]), Path(argv[3]))))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sidd", type=int, default=2, help="SIDD pairs (5328x3000)")
    ap.add_argument("--gopro", type=int, default=6, help="GoPro train frames (1280x720)")
    ap.add_argument("--imagenet", type=int, default=64, help="ImageNet-like JPEGs (500x375)")
    ap.add_argument("--write", action="store_true", help=f"store the figures in {FIGURES.relative_to(ROOT)}")
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args(argv)
    counts = {"sidd": args.sidd, "gopro": args.gopro, "imagenet": args.imagenet}
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        results = rehearse({k: v for k, v in counts.items() if v > 0}, Path(tmp))
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(x.split(":", 1)[1].strip() for x in open("/proc/cpuinfo") if x.startswith("model name"))
    except (OSError, StopIteration):
        pass
    measured = f"benchmarks/scale.py, {datetime.date.today().isoformat()}, {cpu}"
    figs = figures(results, measured)
    print(table(results, figs))
    if args.write:
        from restorebench import io as rio

        rio.write_json(FIGURES, figs)
        print(f"wrote {FIGURES}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
