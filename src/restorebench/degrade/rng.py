"""Deterministic random generators keyed by what a draw is for (an image, a task, a step), not by call order:
every degraded patch, crop and batch in restorebench draws from `derive_rng`."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np


def stable_words(key: Any) -> list[int]:
    """Four uint32 words from a sha256 of the key's type and text (stable across runs, unlike hash())."""
    if not isinstance(key, str | int | np.integer | float | bytes):
        raise TypeError(f"rng key must be str, int, float or bytes, got {type(key).__name__}: {key!r}")
    tag = "i" if isinstance(key, int | np.integer) else type(key).__name__
    digest = hashlib.sha256(f"{tag}:{key!r}".encode() if not isinstance(key, bytes) else b"b:" + key).digest()
    return [int.from_bytes(digest[i : i + 4], "little") for i in range(0, 16, 4)]


def derive_rng(seed: int, *keys: Any) -> np.random.Generator:
    """An independent Generator for (seed, *keys), e.g. derive_rng(seed, image_id, task, k).

    Built from numpy.random.SeedSequence over the seed and a sha256 of each key, so it depends only on
    its arguments: not on the global numpy/torch RNG, the process, the worker or Python's salted hash().
    """
    if int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    words = [int(seed) & 0xFFFFFFFF, int(seed) >> 32]
    for k in keys:
        words.extend(stable_words(k))
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(words)))
