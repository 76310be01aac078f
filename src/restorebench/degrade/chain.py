"""Named degradations and the chains of them built from params.yaml specs (a task's degradation pipeline).

A spec is a list of steps, each a mapping with a `name` and that degradation's keyword parameters:

    - {name: gaussian_noise, sigma: 30}
    - {name: jpeg, quality_range: [30, 70]}

`build_pipeline` checks names, keys and values once, up front (a dry run on a tiny image), so a typo in
params.yaml fails at the stage boundary with the step index, name and key in the message.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from restorebench.degrade.blur import defocus_blur, gaussian_blur, motion_blur
from restorebench.degrade.haze import haze
from restorebench.degrade.jpeg import jpeg
from restorebench.degrade.lowlight import low_light
from restorebench.degrade.noise import camera_noise, gaussian_noise
from restorebench.degrade.rain import rain_streaks
from restorebench.degrade.resize import bicubic_down

Degradation = Callable[..., np.ndarray]

# name -> f(img, rng, **params); img HxWx3 float32 in [0, 1]
DEGRADATIONS: dict[str, Degradation] = {
    "gaussian_noise": gaussian_noise,
    "camera_noise": camera_noise,
    "motion_blur": motion_blur,
    "gaussian_blur": gaussian_blur,
    "defocus_blur": defocus_blur,
    "bicubic_down": bicubic_down,
    "rain_streaks": rain_streaks,
    "haze": haze,
    "low_light": low_light,
    "jpeg": jpeg,
}

# name -> class label (degradation-type classification, DCPT); fixed numbers, never reorder.
LABELS: dict[str, int] = {
    "gaussian_noise": 0,
    "camera_noise": 1,
    "motion_blur": 2,
    "gaussian_blur": 3,
    "defocus_blur": 4,
    "bicubic_down": 5,
    "rain_streaks": 6,
    "haze": 7,
    "low_light": 8,
    "jpeg": 9,
}
assert set(LABELS) == set(DEGRADATIONS)


@dataclass(frozen=True)
class Step:
    """One degradation by name with its keyword parameters."""

    name: str
    params: Mapping[str, Any] = field(default_factory=dict)

    def __call__(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return DEGRADATIONS[self.name](img, rng, **self.params)


@dataclass(frozen=True)
class Pipeline:
    """Steps applied in order, all drawing from the one Generator passed to `__call__`."""

    steps: tuple[Step, ...]

    def __call__(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        out = img
        for step in self.steps:
            out = step(out, rng)
        return out

    @property
    def labels(self) -> tuple[int, ...]:
        """The degradation-type label of every step."""
        return tuple(LABELS[s.name] for s in self.steps)

    def to_spec(self) -> list[dict[str, Any]]:
        return [{"name": s.name, **dict(s.params)} for s in self.steps]


def allowed_params(name: str) -> list[str]:
    """Keyword parameters degradation `name` accepts (its signature minus img and rng)."""
    sig = inspect.signature(DEGRADATIONS[name])
    return [p for p in list(sig.parameters)[2:]]


def _did_you_mean(value: str, allowed: Sequence[str]) -> str:
    close = difflib.get_close_matches(str(value), list(allowed), n=1, cutoff=0.5)
    return f"; did you mean {close[0]!r}?" if close else ""


def build_pipeline(spec: Sequence[Mapping[str, Any]] | Pipeline, *, where: str = "pipeline") -> Pipeline:
    """Validate a params.yaml spec and return the Pipeline.

    spec: a list of mappings, each {"name": <a DEGRADATIONS key>, <param>: <value>, ...}. `where` is the
    key path used in messages (e.g. "degrade.tasks.denoise_30"). Raises ValueError naming the step index,
    the name and the offending key, with the allowed names/keys.
    """
    if isinstance(spec, Pipeline):
        return spec
    if isinstance(spec, Mapping) or isinstance(spec, str) or not isinstance(spec, Sequence):
        raise ValueError(
            f"{where}: expected a list of steps like [{{name: gaussian_noise, sigma: 30}}], got {spec!r}"
        )
    steps = []
    for i, raw in enumerate(spec):
        at = f"{where}[{i}]"
        if not isinstance(raw, Mapping) or "name" not in raw:
            raise ValueError(f"{at}: each step must be a mapping with a 'name' key, got {raw!r}")
        name = raw["name"]
        if name not in DEGRADATIONS:
            raise ValueError(
                f"{at}.name: unknown degradation {name!r}; choose from {sorted(DEGRADATIONS)}"
                f"{_did_you_mean(name, sorted(DEGRADATIONS))}"
            )
        params = {k: v for k, v in raw.items() if k != "name"}
        allowed = allowed_params(name)
        for key in params:
            if key not in allowed:
                raise ValueError(
                    f"{at} ({name}): unknown parameter {key!r}; allowed: {allowed}{_did_you_mean(key, allowed)}"
                )
        step = Step(name, params)
        try:  # dry run: value errors (sigma < 0, bad ranges) surface now, not in a worker hours later
            step(np.full((24, 24, 3), 0.5, np.float32), np.random.default_rng(0))
        except (ValueError, TypeError) as err:
            raise ValueError(f"{at} ({name}): {err}") from None
        steps.append(step)
    return Pipeline(tuple(steps))
