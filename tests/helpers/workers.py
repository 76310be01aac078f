"""Module-level functions for parallel_map's worker processes (a worker imports them by name)."""

from __future__ import annotations

import os
import threading

LOCK = threading.Lock()  # held by a thread of the parent in the fork-hazard test


def square(x: int) -> int:
    return x * x


def pid(_: object) -> int:
    return os.getpid()


def fail_on(x: int) -> int:
    if x == 3:
        raise ValueError(f"item {x}: bad input")
    return x


def take_lock(x: int) -> int:
    """Waits for LOCK: in a forked child whose parent held it at the fork, that is forever."""
    if not LOCK.acquire(timeout=10):
        raise TimeoutError("LOCK was held at the fork: the worker inherited a lock no thread will release")
    LOCK.release()
    return x
