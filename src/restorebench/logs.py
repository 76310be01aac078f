"""Logs a person can read, on a terminal and off it.

Logging is configured once, by the CLI (`setup`): timestamped lines on stderr. On a terminal, long
loops draw a progress bar; off a terminal (Snakemake, Slurm, CI logs) a bar's `\\r` redraws are noise,
so the same loops write one timestamped line every so often instead. RESTOREBENCH_PROGRESS=bar|lines
forces either.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TextIO, TypeVar

T = TypeVar("T")
FORMAT = "%(asctime)s %(name)s: %(message)s"
DATEFMT = "%Y-%m-%d %H:%M:%S"
log = logging.getLogger("restorebench")


def setup(level: int = logging.INFO, stream: TextIO | None = None) -> None:
    """Send restorebench's log records to stderr as `2026-12-02 17:40:01 restorebench.x: message`.
    Idempotent: a second call changes only the level. Other libraries' loggers are left alone."""
    root = logging.getLogger("restorebench")
    root.setLevel(level)
    if not any(getattr(h, "_restorebench", False) for h in root.handlers):
        handler = logging.StreamHandler(stream or sys.stderr)
        handler.setFormatter(logging.Formatter(FORMAT, DATEFMT))
        handler._restorebench = True  # type: ignore[attr-defined]
        root.addHandler(handler)
        root.propagate = False  # one line per record even when the caller configured the root logger


def interactive(stream: TextIO | None = None) -> bool:
    """Whether to draw bars: stderr is a terminal, unless RESTOREBENCH_PROGRESS says otherwise."""
    forced = os.environ.get("RESTOREBENCH_PROGRESS", "")
    if forced in ("bar", "lines"):
        return forced == "bar"
    stream = stream or sys.stderr
    return bool(getattr(stream, "isatty", lambda: False)())


def progress(
    items: Iterable[T],
    *,
    total: int | None,
    desc: str,
    unit: str = "it",
    lines: int = 10,
    min_seconds: float = 10.0,
    logger: logging.Logger | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[T]:
    """Yield `items`; on a terminal with a tqdm bar, else with at most `lines` log lines over the run
    (`desc: 40/400 images (10%), 12.3 images/s`), at least `min_seconds` apart, and one at the end (so
    a run of a few seconds writes one line)."""
    if interactive():
        from tqdm.auto import tqdm

        yield from tqdm(items, total=total, desc=desc, unit=unit, dynamic_ncols=True)
        return
    logger = logger or log
    every = max(1, -(-total // max(1, lines))) if total else 100
    t0, done = clock(), 0
    last = t0
    for done, item in enumerate(items, 1):
        yield item
        if done % every == 0 and done != total and clock() - last >= min_seconds:
            last = clock()
            logger.info("%s", progress_line(desc, done, total, unit, last - t0))
    logger.info("%s", progress_line(desc, done, total, unit, clock() - t0))


def progress_line(desc: str, done: int, total: int | None, unit: str, seconds: float) -> str:
    """`prepare sidd: 40/400 images (10%), 12.3 images/s`; without a total, `... 40 images, 12.3 images/s`."""
    count = f"{done}/{total} {unit} ({100 * done / total:.0f}%)" if total else f"{done} {unit}"
    rate = f", {done / seconds:.1f} {unit}/s" if seconds > 0 else ""
    return f"{desc}: {count}{rate}"


def train_line(row: dict, steps: int) -> str:
    """One training log line: `step 40/80  loss 0.04123  lr 1.00e-03  12.3 img/s  val/psnr 28.41`.

    `row`: a history row of the loop (step, loss, lr, images_per_s, data_wait, val/... when measured)."""
    parts = [
        f"step {row['step']}/{steps}",
        f"loss {row['loss']:.5g}",
        f"lr {row['lr']:.2e}",
        f"{row['images_per_s']:.1f} img/s",
    ]
    parts += [f"{k} {v:.4g}" for k, v in row.items() if k.startswith("val") and isinstance(v, int | float)]
    return "  ".join(parts)
