"""`map` over worker processes for the data stages (manifest, validate, prepare, degrade).

Workers start from a fork server, not by forking this process: the stages run beside threads (tqdm's
monitor, dvclive, torch's pools), and a fork taken while one of them holds a lock gives a child that
waits on it forever. That hung `multiprocessing.Pool.terminate` in this test suite once (its task
thread blocked on the input queue's lock after a worker's error). Python 3.14 makes the fork server
the default on Linux for the same reason. Where there is none (Windows), the platform's default is used.

Workers die with the stage: a SIGKILLed stage cannot shut its pool down, and its workers would run on as
orphans. Each worker asks Linux for SIGKILL when its parent ends (prctl PR_SET_PDEATHSIG; its parent is the
fork server, which exits when the stage does), and a watchdog thread ends it once the stage's process is
gone, where there is no prctl.
"""

from __future__ import annotations

import ctypes
import itertools
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import Any


def usable_cpus() -> int:
    """The CPUs this process may use: its affinity mask (taskset, Slurm's cpuset), capped by a cgroup CPU
    quota (containers, Kubernetes limits), at least 1. os.cpu_count() counts the whole machine."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    return max(1, min(n, _cgroup_quota() or n))


def _cgroup_quota() -> int | None:
    """ceil(quota / period) of the cgroup (v2 cpu.max, else v1 cfs files); None when unlimited or unknown."""
    import math
    from pathlib import Path

    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        try:
            quota = Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text().strip()
            period = Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text().strip()
        except OSError:
            return None
    if quota in ("max", "-1") or not quota.lstrip("-").isdigit() or not period.isdigit() or int(period) <= 0:
        return None
    return max(1, math.ceil(int(quota) / int(period)))


def set_torch_threads(threads: int = 0) -> int:
    """A CLI stage's torch CPU threads: `threads` when > 0, else OMP_NUM_THREADS when the user set it, else
    `usable_cpus()` (torch's own default counts every core of the machine: on a loaded or shared node a
    standalone run oversubscribed and ran 25x slower than Snakemake's --threads 1). torch is not imported
    for a command that does not use it: OMP_NUM_THREADS is set for it to read. Returns the count."""
    import sys

    if threads <= 0:
        user = os.environ.get("OMP_NUM_THREADS", "")
        threads = int(user) if user.isdigit() and int(user) > 0 else usable_cpus()
    os.environ["OMP_NUM_THREADS"] = str(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    return threads


def resolve_workers(workers: int) -> int:
    """0 or less -> every CPU this process may use (`usable_cpus`); otherwise the number given."""
    return usable_cpus() if workers <= 0 else int(workers)


def _context(fn: Callable) -> Any:
    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context()
    ctx = mp.get_context("forkserver")
    # the server imports the worker function's module once and each worker forks from it ready to run
    # (this only counts before the server's first start, which is once per process)
    ctx.set_forkserver_preload([fn.__module__])
    return ctx


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _die_with(stage: int, start: int | None) -> None:
    """Worker initializer: end this worker when the stage process `stage` (started at `start`) ends."""
    from restorebench.lock import process_alive as alive

    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass

    def watch() -> None:
        while alive(stage, start):
            time.sleep(1.0)
        os._exit(1)

    if not alive(stage, start):  # it ended before the prctl took hold
        os._exit(1)
    threading.Thread(target=watch, name="die-with-stage", daemon=True).start()


def _apply(fn: Callable[[Any], Any], chunk: list) -> list:
    return [fn(x) for x in chunk]


def parallel_map(
    fn: Callable[[Any], Any], items: Iterable[Any], workers: int, *, window: int = 0, chunk: int = 1
) -> Iterator[Any]:
    """`map(fn, items)` over `workers` processes, in input order, `chunk` items per task and at most
    `window` tasks in flight (bounded memory, so `items` may be an endless stream; default 4 per
    worker). workers == 1 runs in this process. `fn` must be a module-level function. An exception in
    `fn` is re-raised here, after the tasks already running end and the queued ones are cancelled; a
    worker that dies (the OOM killer, say) raises BrokenProcessPool instead of hanging."""
    workers = resolve_workers(workers)
    if workers == 1:
        yield from map(fn, items)
        return
    window = window or 4 * workers
    stream = iter(items)
    from restorebench.lock import process_start as start_time

    pool = ProcessPoolExecutor(max_workers=workers, mp_context=_context(fn), initializer=_die_with,
                               initargs=(os.getpid(), start_time(os.getpid())))  # fmt: skip
    try:
        pending: deque = deque()
        while batch := list(itertools.islice(stream, max(1, chunk))):
            pending.append(pool.submit(_apply, fn, batch))
            if len(pending) >= window:
                yield from pending.popleft().result()
        while pending:
            yield from pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def parallel_list(
    fn: Callable[[Any], Any], items: list, workers: int, *, desc: str | None = None, unit: str = "it"
) -> list:
    """`[fn(x) for x in items]`: in worker processes, in chunks of about 1/8 of each worker's share, when
    there are at least 4 items per worker to pay for starting them; else in this process. With `desc`,
    shows progress (a bar on a terminal, log lines elsewhere: restorebench.logs.progress)."""
    workers = resolve_workers(workers)
    if len(items) < 4 * workers:
        workers = 1
    results = parallel_map(fn, items, workers, chunk=max(1, len(items) // (workers * 8)))
    if desc is not None:
        from restorebench.logs import progress

        results = progress(results, total=len(items), desc=desc, unit=unit)
    return list(results)
