"""Degradations: pure functions f(img, rng, **params) on HxWx3 float32 images in [0, 1], with an explicit
numpy Generator; a registry (`DEGRADATIONS`, `LABELS`) and chains of them built from specs (`chain.build_pipeline`);
seeded generators (`rng.derive_rng`)."""

from restorebench.degrade.blur import (
    defocus_blur,
    disk_kernel,
    frame_average,
    gaussian_blur,
    gaussian_kernel,
    motion_blur,
    motion_kernel,
)
from restorebench.degrade.chain import (
    DEGRADATIONS,
    LABELS,
    Pipeline,
    Step,
    build_pipeline,
)
from restorebench.degrade.haze import haze
from restorebench.degrade.jpeg import jpeg
from restorebench.degrade.lowlight import low_light
from restorebench.degrade.noise import camera_noise, gaussian_noise
from restorebench.degrade.rain import rain_streaks
from restorebench.degrade.resize import bicubic_down, imresize
from restorebench.degrade.rng import derive_rng

__all__ = [
    "DEGRADATIONS",
    "LABELS",
    "Pipeline",
    "Step",
    "bicubic_down",
    "build_pipeline",
    "camera_noise",
    "defocus_blur",
    "derive_rng",
    "disk_kernel",
    "frame_average",
    "gaussian_blur",
    "gaussian_kernel",
    "gaussian_noise",
    "haze",
    "imresize",
    "jpeg",
    "low_light",
    "motion_blur",
    "motion_kernel",
    "rain_streaks",
]
