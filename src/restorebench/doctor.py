"""`restorebench doctor`: what this machine can run, which data is present and valid."""

from __future__ import annotations

import json
import platform
import shutil
import urllib.error
import urllib.request
from pathlib import Path

from rich.console import Console
from rich.table import Table

from restorebench.config import Config

HUB_URL = "https://huggingface.co/api/models/openmmlab/upernet-swin-tiny"


def hub_reachable(url: str = HUB_URL, timeout: float = 3.0) -> tuple[bool, str]:
    """True when the model hub answers; offline machines get the reason instead."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout) as resp:
            return True, f"HTTP {resp.status}"
    except urllib.error.HTTPError as err:  # the hub answered, if with an error code
        return True, f"HTTP {err.code}"
    except (urllib.error.URLError, OSError, TimeoutError) as err:
        return False, f"unreachable ({getattr(err, 'reason', err)})"


def dataset_status(cfg: Config, name: str) -> tuple[str, str]:
    """(state, detail): state is 'valid', 'invalid', 'unvalidated' or 'absent'."""
    root = Path(cfg.data.root)
    raw = root / "raw" / name
    report = root / "validation" / f"{name}.json"
    if not raw.exists():
        return "absent", f"{raw} missing; run `restorebench fetch --dataset {name}`"
    if not report.exists():
        return "unvalidated", f"run `restorebench validate --dataset {name}`"
    try:
        data = json.loads(report.read_text())
    except (OSError, json.JSONDecodeError) as err:
        return "invalid", f"{report}: unreadable ({err})"
    counts = ", ".join(f"{k} {v}" for k, v in data.get("counts", {}).items())
    if data.get("success"):
        return "valid", counts
    return "invalid", f"{len(data.get('failures', []))} failures, see {report}"


def environment_status(lock: Path | None = None, installed: dict[str, str] | None = None) -> str:
    """One line: does this interpreter hold the versions in requirements.lock? Names the packages that
    differ (a result from a drifted environment may not reproduce)."""
    from restorebench.lock import drift, lock_path

    lock = lock or lock_path()
    if lock is None:
        return "no requirements.lock found (not a checkout): versions unpinned"
    diffs = drift(lock, installed)
    if not diffs:
        return f"matches {lock}"
    shown = ", ".join(str(d) for d in diffs[:8]) + (f" and {len(diffs) - 8} more" if len(diffs) > 8 else "")
    return f"{len(diffs)} package(s) differ from {lock}: {shown}; run `make install` to restore the lock"


def run_doctor(cfg: Config, console: Console | None = None, check_hub: bool = True) -> bool:
    """Print the report; return False when something needed for the active profile is missing."""
    import torch

    console = console or Console()
    table = Table(title=f"restorebench doctor (profile {cfg.profile})", show_header=False)
    table.add_column("what")
    table.add_column("status")
    ok = True
    table.add_row("python", f"{platform.python_version()} ({platform.machine()})")
    table.add_row("torch", torch.__version__)
    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        table.add_row("CUDA", f"{torch.version.cuda}; {len(names)} GPU(s): {', '.join(names)}")
    else:
        table.add_row("CUDA", "no GPU visible: training runs on the CPU (fine for the demo profile)")
    root = Path(cfg.data.root)
    probe = root if root.exists() else Path(".")
    free = shutil.disk_usage(probe).free / 2**30
    low = free < cfg.data.min_free_gb
    ok &= not low
    table.add_row("disk free", f"{free:.1f} GiB at {probe.resolve()}" + (" (LOW)" if low else ""))
    for name in cfg.datasets:
        state, detail = dataset_status(cfg, name)
        source = cfg.data.dataset(name).source
        table.add_row(f"data: {name}", f"{state} (source {source}) {detail}")
    table.add_row("environment", environment_status())
    if check_hub:
        reachable, detail = hub_reachable()
        table.add_row("model hub", detail if reachable else f"{detail}: pass local folders as `pretrained`")
    console.print(table)
    return ok
