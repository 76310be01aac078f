"""restorebench.data.parallel: the data stages' process map (order, bounded streaming, errors, and no
fork of a threaded parent)."""

from __future__ import annotations

import itertools
import os
import threading

import pytest

from restorebench.data.parallel import parallel_list, parallel_map, resolve_workers
from tests.helpers import workers as w


@pytest.mark.parametrize(("workers", "chunk", "window"), [(1, 1, 0), (2, 1, 0), (2, 3, 2), (2, 50, 0)])
def test_results_come_back_in_input_order(workers, chunk, window):
    items = list(range(23))
    assert list(parallel_map(w.square, items, workers, chunk=chunk, window=window)) == [x * x for x in items]


def test_runs_in_other_processes_and_streams_an_endless_input():
    stream = parallel_map(w.pid, itertools.count(), 2, window=2)  # an endless input: only a window in flight
    pids = list(itertools.islice(stream, 12))
    stream.close()  # stops the pool (the finally clause), cancelling what was queued
    assert os.getpid() not in pids and 1 <= len(set(pids)) <= 2


def test_an_error_in_a_worker_is_raised_here_and_the_next_map_works():
    with pytest.raises(ValueError, match="item 3: bad input"):
        list(parallel_map(w.fail_on, range(40), 2))
    assert list(parallel_map(w.square, range(5), 2)) == [0, 1, 4, 9, 16]


def test_workers_do_not_inherit_a_lock_a_parent_thread_holds():
    """The hazard of forking a threaded process: a lock held by another thread at the fork stays held in
    the child forever. The stages run beside such threads (tqdm's monitor, dvclive), so workers come from
    a fork server and import their module afresh."""
    held, release = threading.Event(), threading.Event()

    def holder():
        with w.LOCK:
            held.set()
            release.wait(60)

    t = threading.Thread(target=holder, daemon=True)
    t.start()
    held.wait(10)
    try:
        assert list(parallel_map(w.take_lock, range(8), 2)) == list(range(8))
    finally:
        release.set()
        t.join(10)


def test_parallel_list_starts_workers_only_for_enough_items():
    assert parallel_list(w.pid, range(7), 2) == [os.getpid()] * 7  # under 4 items per worker: in process
    many = parallel_list(w.pid, range(40), 2)
    assert len(many) == 40 and os.getpid() not in many
    assert parallel_list(w.square, list(range(40)), 2) == [x * x for x in range(40)]


def test_resolve_workers():
    assert resolve_workers(0) == resolve_workers(-1) == (os.cpu_count() or 1)
    assert resolve_workers(3) == 3


def test_usable_cpus_follow_the_affinity_mask_and_the_cgroup_quota(monkeypatch):
    from restorebench.data import parallel

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5}, raising=False)
    monkeypatch.setattr(parallel, "_cgroup_quota", lambda: None)
    assert parallel.usable_cpus() == 6 == resolve_workers(0)
    monkeypatch.setattr(parallel, "_cgroup_quota", lambda: 2)  # e.g. cpu.max "150000 100000" -> 2
    assert parallel.usable_cpus() == 2
    assert resolve_workers(3) == 3


def test_a_stage_without_threads_uses_the_usable_cpus_unless_omp_is_set(monkeypatch):
    import torch

    from restorebench.data import parallel

    before = torch.get_num_threads()
    monkeypatch.setattr(parallel, "usable_cpus", lambda: 1)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    try:
        assert parallel.set_torch_threads(0) == 1 and torch.get_num_threads() == 1
        assert os.environ["OMP_NUM_THREADS"] == "1"  # for a torch imported later, and child processes
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        assert parallel.set_torch_threads(0) == 2 and torch.get_num_threads() == 2
        assert parallel.set_torch_threads(1) == 1  # --threads wins
    finally:
        torch.set_num_threads(before)
