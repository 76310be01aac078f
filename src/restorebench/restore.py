"""`restorebench restore`: run a finetuned cell on one's own images.

    restorebench restore INPUT OUTPUT --task denoise --model nafnet [--cell full | --weights PATH]

INPUT is an image (PNG, JPEG, TIFF; 8- or 16-bit; grey, RGB or RGBA) or a folder of them (not recursive).
For one image, OUTPUT is the file to write when it has an image suffix and is not a folder (`out/a.jpg`
writes the file a.jpg, in the format its suffix names; 16-bit output needs .png), else a folder that
receives <name>.png; for a folder of inputs, OUTPUT is a folder receiving <name>.png per input. Outputs keep
the input's bit depth and channels (grey stays grey, alpha is passed through unchanged). Nothing is replaced
without `overwrite`: an output that exists already, an output path that is an input, or OUTPUT equal to the
INPUT folder is refused before anything runs (an input is never replaced, even with `overwrite`).

Memory: an image larger than `tile` pixels on a side is restored tile by tile (tile - 2 x overlap pixels
of output each, the model seeing `overlap` pixels of context on every side), and only the tile being
restored is ever converted to float. Peak host memory is about twice the image at its own bit depth (the
decoded input and the output array: H x W x C x 1 or 2 bytes each), plus one tile's float copies and the
model's activations on a tile x tile input, plus the PNG encoder's buffers (for 16-bit PNG, about 3x the
image). A 12000 x 12000 8-bit RGB image thus needs about 0.9 GB beside the model. Images over
`max_pixels` (PIL's decompression-bomb guard, 178,956,970 pixels, by default) are refused unless raised.

The model comes from a finetuned run folder (runs/finetune/{task}/{model}/{cell}/, or --weights: that folder
or its model.safetensors, even copied elsewhere): config.json, or the weights' own header metadata, names
the architecture (restorebench.card) and the weights load strictly.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from restorebench.bounds import did_you_mean
from restorebench.card import demo_warning, floor_text, read_run_config, run_facts
from restorebench.errors import RestorebenchError
from restorebench.images import SUFFIXES, read_image, write_png
from restorebench.schema import PRETRAIN_METHODS, STRATEGIES, cell_name


@dataclass(frozen=True)
class Job:
    source: Path
    dest: Path


def find_project(root: Path = Path(".")) -> bool:
    """Whether `root` is a restorebench project: it has params.yaml or finetuned runs (runs/finetune/)."""
    return (root / "params.yaml").is_file() or (root / "runs" / "finetune").is_dir()


def require_project(root: Path = Path(".")) -> None:
    """Refuse, in one line, to look up a grid cell where there is no project to hold one."""
    if not find_project(root):
        raise RestorebenchError(root.resolve(), "no restorebench project here (no params.yaml, no runs/finetune/)",
                                "run from the project's root, or give the weights explicitly with --weights PATH: a "
                                "finetuned run folder runs/finetune/TASK/MODEL/CELL or its model.safetensors")  # fmt: skip


def trained_cells(task: str, model: str, runs: Path = Path("runs")) -> list[str]:
    """The cells of `model` on `task` that have finetuned weights under runs/finetune/{task}/{model}/."""
    folder = runs / "finetune" / task / model
    return sorted(p.name for p in folder.iterdir() if (p / "model.safetensors").is_file()) if folder.is_dir() else []


def check_cell(cell: str, task: str, model: str, runs: Path = Path("runs")) -> None:
    """Refuse a --cell that names no grid cell (STRATEGY or PRETRAIN-STRATEGY, optionally -seedN), with a
    did-you-mean among the cell names and the trained cells."""
    base = re.sub(r"-seed\d+$", "", cell)
    names = [cell_name(s, p) for p in PRETRAIN_METHODS for s in STRATEGIES]
    if base not in names:
        trained = trained_cells(task, model, runs)
        hint = f"trained here: {trained}" if trained else "a cell is STRATEGY or PRETRAIN-STRATEGY, e.g. full, dcpt-full"
        raise RestorebenchError("--cell", f"{cell!r} is not a grid cell{did_you_mean(cell, trained + names)}", hint)


def run_folder(task: str, model: str, cell: str | None, runs: Path = Path("runs"),
               table: Path = Path("results/table.csv")) -> Path:  # fmt: skip
    """runs/finetune/{task}/{model}/{cell}; without a cell, the model's best cell of `task` by the results
    table (highest PSNR), or `full` when there is no table. Outside a project (find_project) a one-line error
    says so and how to pass weights."""
    require_project(runs.parent)
    if cell is None:
        cell = "full"
        if table.exists():
            import pandas as pd

            rows = pd.read_csv(table)
            rows = rows[(rows["source"] == "measured") & (rows["task"] == task) & (rows["model"] == model)]
            if not rows.empty:
                best = rows.loc[rows["psnr"].idxmax()]
                cell = str(best["cell"]) if "cell" in rows else str(best["strategy"])
    else:
        check_cell(cell, task, model, runs)
    folder = runs / "finetune" / task / model / cell
    if not (folder / "model.safetensors").exists():
        trained = trained_cells(task, model, runs)
        what = "no finetuned weights" + (f"; trained cells of {task}/{model}: {trained}{did_you_mean(cell, trained)}"
                                         if trained else "")  # fmt: skip
        raise RestorebenchError(folder / "model.safetensors", what,
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


def plan(source: Path, dest: Path, *, overwrite: bool = False) -> list[Job]:
    """What to read and write. Refuses before anything runs when an output would replace an input, or (without
    `overwrite`) any existing file."""
    if not source.exists():
        raise RestorebenchError(source, "no such file or folder")
    if source.is_dir():
        inputs = sorted(p for p in source.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES)
        if not inputs:
            raise RestorebenchError(source, "no images here", f"looked for {list(SUFFIXES)}")
        if dest.suffix.lower() in SUFFIXES and not dest.is_dir():
            many = f"{len(inputs)} image{'s' if len(inputs) != 1 else ''}"
            raise RestorebenchError(dest, f"a folder of inputs ({many}) needs an output folder, not the image file "
                                          f"name {dest.name!r}",
                                    "name a folder (no image suffix), or restore one image to a file")  # fmt: skip
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
        out = dest if dest.suffix.lower() in SUFFIXES and not dest.is_dir() else dest / f"{source.stem}.png"
        jobs = [Job(source, out)]
    sources = {j.source.resolve() for j in jobs}
    clash = [j.dest for j in jobs if j.dest.resolve() in sources]
    if clash:
        raise RestorebenchError(clash[0], "writing here would overwrite an input", "choose another OUTPUT")
    taken = [j.dest for j in jobs if j.dest.exists() or j.dest.is_symlink()]
    if taken and not overwrite:
        more = f" (and {len(taken) - 1} more)" if len(taken) > 1 else ""
        raise RestorebenchError(taken[0], f"exists already{more}; restore replaces nothing unasked",
                                "pass --overwrite to replace it, or choose another OUTPUT")  # fmt: skip
    folders = [p for p in taken if p.is_dir()]
    if folders:
        raise RestorebenchError(folders[0], "is a folder; an output image cannot replace it", "choose another OUTPUT")
    return jobs


def restore_array(net: torch.nn.Module, arr: np.ndarray, *, tile: int | None, overlap: int,
                  device: str) -> np.ndarray:  # fmt: skip
    """Restore one image array (HxW or HxWxC, uint8/uint16) to the same shape and dtype; alpha (C = 2 or 4)
    passes through, grey is restored as RGB and converted back (mean of the channels).

    An image larger than `tile` on a side goes tile by tile: each tile x tile model input yields its centre
    (tile - 2 x overlap on a side; the image's own border where it has one), written straight into the
    output array at the image's bit depth, so no float copy of the whole image is ever held (module
    docstring: the memory bound). Exact against the whole image for models whose receptive field is within
    `overlap` (as restorebench.infer.restore's tiles)."""
    from restorebench.infer import restore

    peak = float(np.iinfo(arr.dtype).max)
    grid = arr[..., None] if arr.ndim == 2 else arr
    h, w, c = grid.shape
    ncol = 1 if c in (1, 2) else 3
    out = np.empty_like(grid)
    out[..., ncol:] = grid[..., ncol:]  # alpha passes through
    if tile is None or max(h, w) <= tile:
        core, margin = max(h, w), 0
    else:
        core, margin = tile - 2 * overlap, overlap
        if core < 1:
            raise RestorebenchError("--overlap", f"{overlap} leaves no pixels of a {tile} tile to keep",
                                    "use an overlap under half the tile")  # fmt: skip
    for y0 in range(0, h, core):
        for x0 in range(0, w, core):
            y1, x1 = min(y0 + core, h), min(x0 + core, w)
            ya, xa, yb, xb = max(0, y0 - margin), max(0, x0 - margin), min(h, y1 + margin), min(w, x1 + margin)
            x = torch.from_numpy(grid[ya:yb, xa:xb, :ncol].astype(np.float32) / peak).permute(2, 0, 1)
            x = x.expand(3, -1, -1) if ncol == 1 else x
            y = restore(net, x, tile=None, device=device)[:, y0 - ya : y1 - ya, x0 - xa : x1 - xa]
            part = y.permute(1, 2, 0).cpu().numpy().astype(np.float64)
            if ncol == 1:
                part = part.mean(axis=-1, keepdims=True)
            out[y0:y1, x0:x1, :ncol] = np.clip(np.rint(part * peak), 0, peak)
    return out[..., 0] if arr.ndim == 2 else out


def write_image(path: Path, arr: np.ndarray) -> None:
    """Write `arr` to `path` atomically, as PNG for .png (8 or 16 bit) else in the format its suffix names
    (8-bit only: JPEG and friends have no 16-bit form here)."""
    from PIL import Image

    from restorebench import io

    suffix = path.suffix.lower()
    if suffix != ".png" and arr.dtype != np.uint8:
        raise RestorebenchError(path, f"a 16-bit result cannot be written as {suffix}", "name a .png output")
    with io.atomic_path(path, suffix=suffix) as tmp:
        if suffix == ".png":
            write_png(tmp, arr)
        elif suffix in (".tif", ".tiff"):
            import tifffile

            tifffile.imwrite(tmp, arr)
        else:
            Image.fromarray(arr).save(tmp, format=Image.registered_extensions()[suffix])


def restore_images(source: Path, dest: Path, *, task: str | None, model: str | None, cell: str | None = None,
                   weights: Path | None = None, tile: int | None = 512, overlap: int = 32,
                   device: str | None = None, progress: bool | None = None, overwrite: bool = False,
                   max_pixels: int | None = None,
                   on_start: Callable[[Path, dict], None] | None = None) -> list[Job]:  # fmt: skip
    """Restore `source` (image or folder) into `dest` with a finetuned cell (see the module docstring); task and
    model name the cell (or, with `weights`, are checked against it when given). Returns the jobs done.
    `on_start(weights, config)` is told which weights run, before the first image. `overwrite` lets outputs
    replace existing files; `max_pixels` raises (or, 0, lifts) the decompression-bomb limit on inputs."""
    from tqdm import tqdm

    jobs = plan(source, dest, overwrite=overwrite)
    folder = weights if weights is not None else run_folder(task, model, cell)
    net, config = load_model(folder, task=task, model=model)
    if on_start is not None:
        on_start(folder, config)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    for job in tqdm(jobs, desc="restore", unit="image", disable=None if progress is None else not progress):
        arr = read_image(job.source, max_pixels=max_pixels)
        out = restore_array(net, arr, tile=tile, overlap=overlap, device=device)
        write_image(job.dest, out)
    return jobs


def describe(weights: Path, config: dict, recipe_steps: int | None = None) -> tuple[str, str | None]:
    """What `restore` says about the weights that run (restorebench.card.run_facts): one line (the run, its
    profile, steps and learning rate, its scored PSNR beside the task's identity floor) and the demo-weights
    warning (None for real weights; `recipe_steps`: see card.demo_warning)."""
    facts = run_facts(weights)
    train = facts["train"]
    text = f"{config['model']} ({config['variant']}) {config['task']}/{config['cell']}: profile {config.get('profile', '?')}"
    if train.get("steps") is not None:
        text += f", {train['steps']} steps" + (f" at peak LR {train['lr']:.3g}" if train.get("lr") is not None else "")
    scores = facts["scores"]
    if scores and "psnr" in scores:
        text += (f"; scored PSNR {scores['psnr']:.2f} dB / SSIM {scores['ssim_matlab3d']:.4f} by the {config['task']} "
                 f"protocol, identity floor {floor_text(facts)}")  # fmt: skip
    else:
        text += "; no scores found beside these weights (not evaluated in this project)"
    return text, demo_warning(facts, recipe_steps)
