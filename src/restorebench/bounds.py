"""The checks every params value passes at load: `bounded` fields (numbers in range, strings among choices,
lists of a length), `check_choice` with a did-you-mean, and ConfigError, whose message names the key.
restorebench.schema declares the fields with them; restorebench.config runs them."""

from __future__ import annotations

import difflib
import math
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from typing import Any

from restorebench.errors import RestorebenchError


class ConfigError(RestorebenchError, ValueError):
    """A params file or override that does not fit the schema; the message names the key.

    ConfigError("train.steps: must be >= 1") keeps its message as given; ConfigError(key, what, hint)
    formats it as RestorebenchError does."""

    def __init__(self, where: object, what: str | None = None, hint: str | None = None) -> None:
        if what is None:
            where, what = None, str(where)
        super().__init__(where, what, hint)


def did_you_mean(value: str, allowed: list[str] | tuple[str, ...]) -> str:
    close = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=1, cutoff=0.5)
    return f"; did you mean {close[0]!r}?" if close else ""


def check_choice(path: str, value: Any, allowed: list[str] | tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(
            f"{path}: {value!r} is not allowed; choose from {sorted(allowed)}{did_you_mean(value, allowed)}"
        )


@dataclass(frozen=True)
class Bounds:
    """What a field's value may be, checked at load by `check_bounds` (one walker for every field). Numbers:
    ge / gt / le / lt; strings: choices; lists: length, then each element; mappings: each value."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    choices: tuple[str, ...] | None = None
    length: int | None = None

    def describe(self) -> str:
        low = f"[{self.ge:g}" if self.ge is not None else f"({self.gt:g}" if self.gt is not None else None
        high = f"{self.le:g}]" if self.le is not None else f"{self.lt:g})" if self.lt is not None else None
        if low and high:
            return f"in {low}, {high}"
        if low:
            return f"{'>=' if self.ge is not None else '>'} {low[1:]}"
        return f"{'<=' if self.le is not None else '<'} {high[:-1]}"

    def check(self, path: str, value: Any) -> None:
        if value is None:  # only Optional fields hold None (the merge checked the types)
            return
        if isinstance(value, dict):
            for key, item in value.items():
                self.check(f"{path}.{key}", item)
            return
        if isinstance(value, list | tuple):
            if self.length is not None and len(value) != self.length:
                raise ConfigError(f"{path}: must hold {self.length} values, got {list(value)!r}")
            for i, item in enumerate(value):
                self.check(f"{path}[{i}]", item)
            return
        if self.choices is not None:
            check_choice(path, value, self.choices)
            return
        if isinstance(value, float) and not math.isfinite(value):  # inf passes a one-sided bound
            raise ConfigError(f"{path}: must be {self.describe()}, got {value!r} (not a finite number)")
        ok = ((self.ge is None or value >= self.ge) and (self.gt is None or value > self.gt)
              and (self.le is None or value <= self.le) and (self.lt is None or value < self.lt))  # fmt: skip
        if not ok or value != value:  # NaN fails every comparison
            raise ConfigError(f"{path}: must be {self.describe()}, got {value!r}")


def bounded(default: Any = MISSING, *, factory: Any = MISSING, **bounds: Any) -> Any:
    """A dataclass field with `Bounds(**bounds)` in its metadata: `steps: int = bounded(1000, ge=1)`;
    mutable defaults through `factory=`. A field added later declares its range the same way."""
    meta = {"bounds": Bounds(**{k: tuple(v) if k == "choices" else v for k, v in bounds.items()})}
    if factory is not MISSING:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def check_bounds(obj: Any, path: str) -> None:
    """Check every `bounded` field of the dataclass `obj`, recursing into dataclasses and mappings of them;
    messages name the full key path (profiles.demo.train.models.nafnet.betas[1])."""
    for f in fields(obj):
        value, at = getattr(obj, f.name), f"{path}.{f.name}"
        if "bounds" in f.metadata:
            f.metadata["bounds"].check(at, value)
        if is_dataclass(value):
            check_bounds(value, at)
        elif isinstance(value, dict):
            for key, item in value.items():
                if is_dataclass(item):
                    check_bounds(item, f"{at}.{key}")
