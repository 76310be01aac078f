"""torch.load of the released checkpoint files, weights-only, with the few safe types they carry allowed.

`load_pickled(path)` is `torch.load(path, map_location="cpu", weights_only=True)` inside
`torch.serialization.safe_globals(release_safe_globals())`: tensors, plain containers (dict, OrderedDict,
list, tuple, str, numbers) and numpy float32/float64 scalars load; any other pickled object (a class, a
function such as os.system) raises pickle.UnpicklingError before it is called.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch

# The official release files, as their code writes them, hold tensors in plain containers (which
# torch.load(weights_only=True) reads) and, in mmcv's save_checkpoint files, one kind of object more: numpy
# float scalars in `meta` (ViT-Adapter's release: mmcv EvalHook(save_best='mIoU') keeps mmseg's mIoU, a numpy
# float, in meta['hook_msgs']['best_score']). These files were written under numpy 1.x, whose pickles name
# `numpy.core.multiarray.scalar`; numpy 2 names `numpy._core.multiarray.scalar`. The allowlist admits float32 /
# float64 scalars only (a dtype or scalar of any other kind is refused while unpickling), and only inside
# `load_pickled` (weights.read_state_dict's reader; torch.serialization.safe_globals is a context), not
# process-wide.
_FLOAT_CODES = ("f4", "f8")


def _float_dtype(code: str, align: bool = False, copy: bool = True) -> object:
    import numpy as np

    if code not in _FLOAT_CODES:
        raise pickle.UnpicklingError(f"numpy dtype {code!r} refused (only float32/float64 scalars are allowed)")
    return np.dtype(code, align, copy)


def _float_scalar(dtype: object, data: bytes) -> object:
    import numpy as np

    if not isinstance(dtype, np.dtype) or dtype.str[1:] not in _FLOAT_CODES:
        raise pickle.UnpicklingError(f"numpy scalar of dtype {dtype!r} refused (only float32/float64)")
    return np.frombuffer(data, dtype=dtype, count=1)[0]


def release_safe_globals() -> list[tuple[object, str]]:
    """(callable, pickled name) pairs for torch.serialization.safe_globals: numpy float scalars, under both
    numpy 1.x and 2.x module names. Everything else a pickle names stays refused."""
    import numpy as np

    pairs: list[tuple[object, str]] = [(_float_dtype, "numpy.dtype")]
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        pairs.append((_float_scalar, f"{module}.scalar"))
    for code in _FLOAT_CODES:  # the dtype classes, whose instances unpickle with BUILD (numpy >= 1.25)
        cls = type(np.dtype(code))
        pairs.append((cls, f"{cls.__module__}.{cls.__qualname__}"))
    return pairs


def load_pickled(path: Path) -> object:
    """torch.load(weights_only=True) of a release file, with `release_safe_globals` allowed for this call."""
    with torch.serialization.safe_globals(release_safe_globals()):
        return torch.load(path, map_location="cpu", weights_only=True)
