"""A tiny training run through train.session, for tests that SIGKILL it: `python -m tests.helpers.killed_run
RUN_DIR STEPS`. It prints `start N [temporary files]` when the loop asks for its first batch (N: the step it
resumed from; the checkpoint folder's `.step_*.tmp` files at that moment, after the session tidied it) and
`step I` before each step's batch, flushed, so the parent can kill it at a chosen step. The final weights go
to RUN_DIR/model.safetensors."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from restorebench.train.loop import LoopConfig
from restorebench.train.session import train_and_save
from tests.helpers.tiny import TinyRestorer, make_batches


def main(run_dir: Path, steps: int) -> None:
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    source = make_batches(size=8, batch=2)

    def batches(start: int):
        leftovers = sorted(p.name for p in (run_dir / "checkpoints").glob(".step_*.tmp"))
        print("start", start, *leftovers, flush=True)
        for step, batch in enumerate(source(start), start):
            print("step", step, flush=True)
            yield batch

    cfg = LoopConfig(steps=steps, lr=2e-3, checkpoint_every=2, log_every=3, sync_every=1)
    train_and_save(TinyRestorer(width=4), batches, cfg, run_dir=run_dir, params={"test": "killed_run"},
                   progress=False)


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]))
