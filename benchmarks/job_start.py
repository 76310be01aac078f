"""What a pipeline job pays before its first step: each part of a training job's start, timed in fresh
Python processes, the parts interleaved so a shared machine's load moves them alike.

    python benchmarks/job_start.py            # 5 rounds
    python benchmarks/job_start.py --rounds 9

Rows (each a fresh `python -c`, seconds of wall time, median over the rounds):
- torch: `import torch`;
- deterministic, torch's: `torch.use_deterministic_algorithms(True)` after the import (it imports the
  torch.compile backend to set that backend's flag too);
- deterministic, restorebench's: `restorebench.train.loop.use_deterministic(False)`, the kernel flag only
  (what a job without torch.compile runs);
- optimizer: the first `torch.optim.AdamW`, which imports torch._dynamo (torch's own lazy import);
- params: `restorebench.config.load_config()` on the project's params.yaml, both profiles validated;
- cli: `restorebench --help`.
The sum of the rows a finetune job runs is its fixed cost; the pipeline runs one process per job.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TIMER = "{setup}\nimport time as _t\n_s = _t.perf_counter()\n{body}\nprint(_t.perf_counter() - _s)"
ROWS = {
    "torch": ("", "import torch"),
    "deterministic, torch's": ("import torch", "torch.use_deterministic_algorithms(True, warn_only=True)"),
    "deterministic, restorebench's": ("import torch\nfrom restorebench.train.loop import use_deterministic",
                                      "use_deterministic(False)"),
    "optimizer (first AdamW)": ("import torch", "torch.optim.AdamW(torch.nn.Linear(2, 2).parameters())"),
    "params (load_config)": ("from restorebench.config import load_config", "load_config()"),
}  # fmt: skip


def once(setup: str, body: str) -> float:
    """Seconds `body` takes in a fresh interpreter after `setup` ran (setup not counted)."""
    out = subprocess.run([sys.executable, "-c", TIMER.format(setup=setup, body=body)], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    return float(out.split()[-1])


def cli_once() -> float:
    start = time.perf_counter()
    subprocess.run([str(Path(sys.executable).parent / "restorebench"), "--help"], cwd=ROOT, capture_output=True,
                   check=True)  # fmt: skip
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    times: dict[str, list[float]] = {name: [] for name in [*ROWS, "cli (restorebench --help)"]}
    for _ in range(args.rounds):
        for name, (setup, body) in ROWS.items():
            times[name].append(once(setup, body))
        times["cli (restorebench --help)"].append(cli_once())
    print(f"{'part of a job start':34s} {'median s':>9s} {'min s':>7s} {'max s':>7s}")
    for name, values in times.items():
        print(f"{name:34s} {statistics.median(values):9.2f} {min(values):7.2f} {max(values):7.2f}")
    torch_det = statistics.median(times["deterministic, torch's"])
    ours = statistics.median(times["deterministic, restorebench's"])
    print(f"\ndeterministic setup: restorebench's / torch's = {ours / torch_det:.3f} (saves {torch_det - ours:.2f} s a job)")


if __name__ == "__main__":
    main()
