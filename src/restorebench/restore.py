"""`restorebench restore`: run a finetuned cell on one's own images.

    restorebench restore INPUT OUTPUT --task denoise --model nafnet [--cell full | --weights PATH]

INPUT is an image (PNG, JPEG, TIFF; 8- or 16-bit; grey, RGB or RGBA) or a folder of them (not recursive);
OUTPUT is a .png file for one image, else a folder that receives <name>.png per input. Outputs are PNGs of
the input's bit depth and channels (grey stays grey, alpha is passed through unchanged). Inputs are never
overwritten: an output path that is an input, or OUTPUT equal to the INPUT folder, is refused before anything
runs. Images larger than `tile` are restored in overlapping tiles (restorebench.infer.restore).

The model comes from a finetuned run folder (runs/finetune/{task}/{model}/{cell}/, or --weights: that folder
or its model.safetensors, even copied elsewhere): config.json, or the weights' own header metadata, names
the architecture (restorebench.card) and the weights load strictly.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from restorebench.card import read_run_config
from restorebench.errors import RestorebenchError
from restorebench.images import SUFFIXES, read_image, write_png


@dataclass(frozen=True)
class Job:
    source: Path
    dest: Path


def run_folder(task: str, model: str, cell: str | None, runs: Path = Path("runs"),
               table: Path = Path("results/table.csv")) -> Path:  # fmt: skip
    """runs/finetune/{task}/{model}/{cell}; without a cell, the model's best cell of `task` by the results
    table (highest PSNR), or `full` when there is no table."""
    if cell is None:
        cell = "full"
        if table.exists():
            import pandas as pd

            rows = pd.read_csv(table)
            rows = rows[(rows["source"] == "measured") & (rows["task"] == task) & (rows["model"] == model)]
            if not rows.empty:
                best = rows.loc[rows["psnr"].idxmax()]
                cell = str(best["cell"]) if "cell" in rows else str(best["strategy"])
    folder = runs / "finetune" / task / model / cell
    if not (folder / "model.safetensors").exists():
        raise RestorebenchError(folder / "model.safetensors", "no finetuned weights",
                                f"run `restorebench finetune --task {task} --model {model} ...` first, or pass --weights")  # fmt: skip
    return folder


def load_model(weights: Path, *, task: str | None = None, model: str | None = None) -> tuple[torch.nn.Module, dict]:
    """The finetuned model at `weights` (run folder or its .safetensors) and its run config; refuses a run of
    another model or task than asked for."""
    from restorebench.models import build_model

    config = read_run_config(weights)
    if config is None:
        raise RestorebenchError(weights, "not a finetuned restorebench run (no config.json or weights metadata)",
                                "pass a runs/finetune/T/M/C folder or its model.safetensors")  # fmt: skip
    for key, asked in (("model", model), ("task", task)):
        if asked is not None and config[key] != asked:
            raise RestorebenchError(weights, f"a {config['model']} run for {config['task']}, not {key} {asked!r}",
                                    f"use --{key} {config[key]} or other weights")  # fmt: skip
    try:
        net = build_model(pretrained=str(weights))
    except (RuntimeError, ValueError) as err:
        raise RestorebenchError(weights, f"could not rebuild the model: {str(err).splitlines()[0][:300]}") from None
    return net.eval(), config


def plan(source: Path, dest: Path) -> list[Job]:
    """What to read and write. Refuses before anything runs when an output would replace an input."""
    if not source.exists():
        raise RestorebenchError(source, "no such file or folder")
    if source.is_dir():
        inputs = sorted(p for p in source.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES)
        if not inputs:
            raise RestorebenchError(source, "no images here", f"looked for {list(SUFFIXES)}")
        if dest.suffix.lower() == ".png" and not dest.is_dir():
            raise RestorebenchError(dest, "a folder of inputs needs an output folder, not a .png file")
        if dest.resolve() == source.resolve():
            raise RestorebenchError(dest, "the output folder is the input folder", "name another output folder")
        jobs = [Job(p, dest / f"{p.stem}.png") for p in inputs]
        stems = [j.dest.name for j in jobs]
        dupes = sorted({s for s in stems if stems.count(s) > 1})
        if dupes:
            raise RestorebenchError(source, f"inputs that would write the same output: {dupes}",
                                    "rename them or restore them one at a time")  # fmt: skip
    else:
        if source.suffix.lower() not in SUFFIXES:
            raise RestorebenchError(source, "not an image this tool reads", f"use one of {list(SUFFIXES)}")
        out = dest if dest.suffix.lower() == ".png" and not dest.is_dir() else dest / f"{source.stem}.png"
        jobs = [Job(source, out)]
    sources = {j.source.resolve() for j in jobs}
    clash = [j.dest for j in jobs if j.dest.resolve() in sources]
    if clash:
        raise RestorebenchError(clash[0], "writing here would overwrite an input", "choose another OUTPUT")
    return jobs


def restore_array(net: torch.nn.Module, arr: np.ndarray, *, tile: int | None, overlap: int,
                  device: str) -> np.ndarray:  # fmt: skip
    """Restore one image array (HxW or HxWxC, uint8/uint16) to the same shape and dtype; alpha (C = 2 or 4)
    passes through, grey is restored as RGB and converted back (mean of the channels)."""
    from restorebench.infer import restore

    peak = float(np.iinfo(arr.dtype).max)
    grid = arr[..., None] if arr.ndim == 2 else arr
    colour, alpha = (grid[..., :1], grid[..., 1:]) if grid.shape[-1] in (1, 2) else (grid[..., :3], grid[..., 3:])
    x = torch.from_numpy(colour.astype(np.float32) / peak).permute(2, 0, 1)
    x = x.expand(3, -1, -1) if x.shape[0] == 1 else x
    big = tile is not None and max(x.shape[-2:]) > tile
    y = restore(net, x, tile=tile if big else None, overlap=overlap, batch=4, device=device)
    out = y.permute(1, 2, 0).cpu().numpy().astype(np.float64)
    if colour.shape[-1] == 1:
        out = out.mean(axis=-1, keepdims=True)
    result = np.clip(np.rint(out * peak), 0, peak).astype(arr.dtype)
    result = np.concatenate([result, alpha], axis=-1) if alpha.shape[-1] else result
    return result[..., 0] if arr.ndim == 2 else result


def restore_images(source: Path, dest: Path, *, task: str | None, model: str | None, cell: str | None = None,
                   weights: Path | None = None, tile: int | None = 512, overlap: int = 32,
                   device: str | None = None, progress: bool | None = None,
                   on_start: Callable[[Path, dict], None] | None = None) -> list[Job]:  # fmt: skip
    """Restore `source` (image or folder) into `dest` with a finetuned cell (see the module docstring); task and
    model name the cell (or, with `weights`, are checked against it when given). Returns the jobs done. `on_start(weights, config)` is told which weights run, before the first image."""
    from tqdm import tqdm

    jobs = plan(source, dest)
    folder = weights if weights is not None else run_folder(task, model, cell)
    net, config = load_model(folder, task=task, model=model)
    if on_start is not None:
        on_start(folder, config)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    for job in tqdm(jobs, desc="restore", unit="image", disable=None if progress is None else not progress):
        arr = read_image(job.source)
        out = restore_array(net, arr, tile=tile, overlap=overlap, device=device)
        job.dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = job.dest.with_name(f".{job.dest.name}.tmp")
        write_png(tmp, out)
        tmp.replace(job.dest)
    return jobs


def describe(config: dict) -> str:
    """One line naming the weights that ran (and how they scored, from the model card's run folder)."""
    text = f"{config['model']} ({config['variant']}) {config['task']}/{config['cell']}"
    prov = Path("results/eval") / config["task"] / config["model"] / config["cell"] / "provenance.json"
    metrics = Path("metrics/finetune") / config["task"] / config["model"] / f"{config['cell']}.json"
    if prov.exists() and metrics.exists():
        scores = json.loads(metrics.read_text())
        text += f", scored PSNR {scores['psnr']:.2f} dB / SSIM {scores['ssim_matlab3d']:.4f} by the {config['task']} protocol"
    return text
