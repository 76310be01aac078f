"""Typed configuration: params.yaml (+ overrides) -> one resolved, validated `Config`.

params.yaml has a few top-level keys that both orchestrators read (`profile`, the grid lists, `seed`)
and a `profiles` mapping whose sections hold everything that differs between the demo and the paper-scale
run. The active profile's section is merged over the dataclass defaults; every profile is checked on load,
so a typo in `paper` fails even while `demo` is active.

Errors name the key's path, the bad value and the allowed values, with a did-you-mean.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import typing
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from restorebench.errors import RestorebenchError
from restorebench.models import MODELS

DATASETS = ("sidd", "gopro", "imagenet")
TASKS = ("denoise", "deblur")
# Task -> the dataset its training and evaluation data come from.
TASK_DATASET = {"denoise": "sidd", "deblur": "gopro"}
MODEL_NAMES = tuple(MODELS)  # the registry's names (restorebench.models; importing it loads no model)
STRATEGIES = ("frozen", "full_lowlr", "full", "llrd")
PRETRAIN_METHODS = ("none", "ipt", "dcpt")
LOSS_NAMES = ("l1", "charbonnier", "psnr")
# torch.compile's modes (train.compile_mode); "reduce-overhead" captures CUDA graphs
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def cell_name(strategy: str, pretrain: str = "none", seed: int | None = None) -> str:
    """A grid cell's folder / file name: the strategy, prefixed by a restoration pretraining when one is used
    (runs/finetune/denoise/nafnet/full/, .../dcpt-full/), suffixed by its seed when `seeds` repeats the
    training cells (full-seed1)."""
    name = strategy if pretrain == "none" else f"{pretrain}-{strategy}"
    return name if seed is None else f"{name}-seed{seed}"


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


# ---------------------------------------------------------------------------------------------- schema


@dataclass
class DatasetConfig:
    """One dataset: where it comes from and what a complete copy holds."""

    # "sample" (embedded look-alike, no download), "url" (official archives), or a path to a folder or
    # archive already on disk.
    source: str = "sample"
    # split -> number of pairs (images for ImageNet) a complete copy has; validation checks these.
    expected_pairs: dict[str, int] = bounded(factory=dict, ge=0)
    # split -> number of scene instances / sequences / classes.
    expected_groups: dict[str, int] = bounded(factory=dict, ge=0)


@dataclass
class SampleConfig:
    """Sizes of the embedded sample (built from scikit-image's bundled images, no download)."""

    sidd_instances: int = bounded(6, ge=1)  # scene instances, two pairs each
    sidd_height: int = bounded(192, ge=1)
    sidd_width: int = bounded(256, ge=1)
    sidd_val_images: int = bounded(4, ge=1)  # N in the N x B x h x w x 3 validation blocks
    sidd_val_blocks: int = bounded(4, ge=1)  # B
    sidd_val_block_size: int = bounded(64, ge=1)  # h = w
    gopro_train_sequences: int = bounded(3, ge=1)
    gopro_test_sequences: int = bounded(2, ge=1)
    gopro_frames: int = bounded(4, ge=1)  # blurred frames per sequence
    gopro_height: int = bounded(144, ge=1)
    gopro_width: int = bounded(256, ge=1)
    gopro_average: int = bounded(7, ge=1)  # sharp sub-frames averaged into one blurred frame
    imagenet_classes: int = bounded(4, ge=1)
    imagenet_per_class: int = bounded(4, ge=1)
    imagenet_size: int = bounded(160, ge=1)


@dataclass
class DataConfig:
    root: str = "data"
    sidd: DatasetConfig = field(default_factory=DatasetConfig)
    gopro: DatasetConfig = field(default_factory=DatasetConfig)
    imagenet: DatasetConfig = field(default_factory=DatasetConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    # where downloaded archives are kept (resumable partial files live here too)
    cache: str = "data/cache"
    # refuse to start a download or extraction that would leave less than this free
    min_free_gb: float = bounded(2.0, ge=0)
    # worker processes for hashing/validation; 0 = all cores
    workers: int = bounded(0, ge=0)

    def dataset(self, name: str) -> DatasetConfig:
        check_choice("dataset", name, DATASETS)
        return getattr(self, name)


@dataclass
class EvalConfig:
    """Evaluation by the published protocols (see restorebench.evaluate)."""

    # The protocols run each image whole; tiles of `fallback_tile` pixels only for an image that runs out of
    # device memory (the cell's provenance.json, beside its metrics, records it under `tiling`). `tile` forces tiles for every image: a deviation
    # from the protocols (smoke runs on small devices), also recorded.
    tile: int | None = bounded(None, ge=8)
    fallback_tile: int | None = bounded(512, ge=8)  # None: no fallback (an out-of-memory image fails the run)
    overlap: int = bounded(32, ge=0)  # tile overlap (pixels)
    batch: int = bounded(4, ge=1)  # tiles (images, when tile is None) per forward pass; the output does not depend on it
    # precision (the metrics JSON records the one used); the published protocols are IEEE float32
    tf32: bool = False  # CUDA: allow TF32 matmuls and convolutions; false forbids them (cuDNN's default allows)
    autocast: str | None = bounded(None, choices=("bf16",))  # None: float32; "bf16": CUDA bf16 autocast (no effect on a CPU)
    max_images: int = bounded(0, ge=0)  # 0: the whole evaluation set (the protocol); >0 only for smoke runs
    crops: int = bounded(3, ge=0)  # sample crops saved for the report
    crop_size: int = bounded(96, ge=8)


@dataclass
class CropConfig:
    size: int = bounded(512, ge=8)  # sub-image side (pixels)
    step: int = bounded(384, ge=1)  # stride between sub-images (overlap = size - step)


# IPT's six pretraining tasks (Chen et al. 2021): bicubic SR x2/x3/x4, Gaussian noise 30/50, rain.
IPT_TASKS: dict[str, list[dict[str, Any]]] = {
    "sr_x2": [{"name": "bicubic_down", "scale": 2}],
    "sr_x3": [{"name": "bicubic_down", "scale": 3}],
    "sr_x4": [{"name": "bicubic_down", "scale": 4}],
    "noise_30": [{"name": "gaussian_noise", "sigma": 30}],
    "noise_50": [{"name": "gaussian_noise", "sigma": 50}],
    "rain": [{"name": "rain_streaks"}],
}


@dataclass
class DegradeConfig:
    """The degraded ImageNet pretraining set (restorebench.data.store.degrade_store)."""

    patch: int = bounded(48, ge=8)  # IPT's patch size
    patches_per_image: int = bounded(1, ge=1)
    max_images: int = bounded(0, ge=0)  # 0: every image of the source
    # task -> degradation pipeline: a list of {name: <restorebench.degrade name>, <its params>}
    # (a mapping merges key by key, so the default is empty and params.yaml lists the tasks it wants;
    # IPT_TASKS below is the paper's set)
    tasks: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


@dataclass
class PrepareConfig:
    """Training sub-images (BasicSR's extract_subimages recipe) packed into stores."""

    sidd: CropConfig = field(default_factory=lambda: CropConfig(512, 384))
    gopro: CropConfig = field(default_factory=lambda: CropConfig(512, 256))
    # GoPro's blurred input folder: "blur" (averaged in linear space, the one deblurring papers use)
    gopro_input: str = bounded("blur", choices=("blur", "blur_gamma"))


SCHEDULES = ("cosine", "poly", "constant_then_cosine")
OPTIMIZERS = ("adamw",)


@dataclass
class StageConfig:
    """One stage of progressive training (Restormer): `iters` iterations of `batch` (global) `patch` crops."""

    iters: int = 0
    patch: int = 0
    batch: int = 0


@dataclass
class ModelTrainConfig:
    """A model's training recipe, the published one in the paper profile (params.yaml names each value's
    source file). The strategies are defined on it (train/strategies.py): full = this recipe; full_lowlr = every
    LR (and the warmup start and the floor) / 10; frozen = backbone frozen; llrd = layer-wise decay.

    LR at iteration t (train/schedule.py, multiplier of `lr`):
      cosine:               floor + (1 - floor) (1 + cos(pi t / T)) / 2          (torch CosineAnnealingLR)
      poly:                 floor + (1 - floor) (1 - t / T) ** power              (mmcv / detectron2 poly)
      constant_then_cosine: 1 for t < constant, then cosine over the remaining T - constant (Restormer's
                            CosineAnnealingRestartCyclicLR with periods [constant, T - constant])
    with floor = min_lr / lr, times mmcv's linear warmup 1 - (1 - t / warmup) (1 - warmup_ratio) for
    t < warmup. T = `steps` (or the stages' sum).
    """

    optimizer: str = bounded("adamw", choices=OPTIMIZERS)
    lr: float = bounded(1e-3, gt=0)
    min_lr: float = bounded(1e-7, ge=0)  # the schedule's floor (cosine eta_min; poly min_lr)
    loss: str = bounded("l1", choices=LOSS_NAMES)
    weight_decay: float = bounded(0.0, ge=0)
    betas: list[float] = bounded(factory=lambda: [0.9, 0.9], length=2, ge=0, lt=1)
    # parameters without weight decay: "1d" (every 1-D tensor: biases, norm gains), "norm" (the parameters of
    # norm layers), or a substring of the parameter name (e.g. relative_position_bias_table)
    no_decay: list[str] = field(default_factory=lambda: ["1d"])
    schedule: str = bounded("cosine", choices=SCHEDULES)
    power: float = bounded(1.0, gt=0)  # poly's power
    constant: int = bounded(0, ge=0)  # constant_then_cosine: iterations at `lr` before the cosine
    warmup: int = bounded(0, ge=0)  # linear warmup iterations (mmcv's `linear`)
    warmup_ratio: float = bounded(0.0, ge=0, le=1)  # LR at warmup start, as a fraction of the scheduled LR
    steps: int = bounded(0, ge=0)  # iterations; 0: train.steps (stages, when given, set it)
    batch: int = bounded(0, ge=0)  # global batch; 0: train.batch
    patch: int = bounded(0, ge=0)  # training crop (gt side); 0: train.patch (IPT trains on its tile size)
    stages: list[StageConfig] = field(default_factory=list)  # progressive training: overrides steps/batch/patch
    accumulate: int = bounded(0, ge=0)  # micro-batches per step (same global batch); 0: train.accumulate
    grad_clip: float = bounded(0.0, ge=0)  # max global gradient L2 norm; 0: off
    flip: bool = True  # random flips ...
    rotate: bool = True  # ... and 90-degree rotations (together: the 8 dihedral transforms)
    mixup: float = bounded(0.0, ge=0)  # Restormer's mixup: Beta(mixup, mixup) on half the batches (identity on the rest); 0: off
    backbone_lr_mult: float = bounded(1.0, ge=0)  # LR multiplier of the pretrained backbone (Mask2Former's 0.1)
    layer_decay: float = bounded(0.0, ge=0, le=1)  # layer-wise LR decay of the recipe itself (ViT-Adapter's 0.9); 0: none
    identity_start: bool = False  # a random init starts at the identity (last layer zeroed); demo only
    # deep supervision over the decoder layers (Mask2Former's, for the models that have one: models.AUX_LOSS):
    # every intermediate layer's image adds its loss, as Mask2Former sums its per-layer losses; off
    aux_loss: bool = False
    # task -> overrides of the fields above for that task (NAFNet's SIDD vs GoPro config, Restormer's
    # denoising vs deblurring config)
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)

    def total_steps(self, default: int) -> int:
        return sum(s.iters for s in self.stages) if self.stages else (self.steps or default)

    def stage_list(self, *, steps: int, batch: int, patch: int) -> list[StageConfig]:
        """The run as stages: the recipe's own, else one stage of (steps, batch, patch) with the recipe's
        values where it sets them."""
        if self.stages:
            return [StageConfig(s.iters, s.patch, s.batch) for s in self.stages]
        return [StageConfig(self.steps or steps, self.patch or patch, self.batch or batch)]


def resolve_recipe(base: ModelTrainConfig, task: str | None, where: str) -> ModelTrainConfig:
    """`base` with its `tasks[task]` overrides merged in (unknown keys and wrong types fail, naming
    `where`); the result has no `tasks` of its own."""
    override = dict(base.tasks.get(task, {})) if task is not None else {}
    plain = OmegaConf.structured(base)
    plain.tasks = {}
    schema = [f.name for f in fields(ModelTrainConfig)]
    for key in override:
        if key not in schema or key == "tasks":
            allowed = [k for k in schema if k != "tasks"]
            raise ConfigError(f"{where}.tasks.{task}.{key}: unknown key; allowed keys are {sorted(allowed)}"
                              f"{did_you_mean(key, allowed)}")
    try:
        merged = OmegaConf.merge(plain, override)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or "?"
        msg = str(getattr(err, "msg", err)).splitlines()[0]
        raise ConfigError(f"{where}.tasks.{task}.{key}: {msg}") from None
    out = OmegaConf.to_object(merged)
    assert isinstance(out, ModelTrainConfig)
    return out


def check_recipe(recipe: ModelTrainConfig, where: str) -> None:
    """Values the schema's types cannot check."""
    check_choice(f"{where}.loss", recipe.loss, LOSS_NAMES)
    check_choice(f"{where}.schedule", recipe.schedule, SCHEDULES)
    check_choice(f"{where}.optimizer", recipe.optimizer, OPTIMIZERS)
    if recipe.flip != recipe.rotate:
        raise ConfigError(f"{where}.flip/rotate: flips without rotations (or the reverse) are not implemented; "
                          "the published recipes use both (the 8 dihedral transforms) or neither")
    for i, st in enumerate(recipe.stages):
        if min(st.iters, st.patch, st.batch) < 1:
            raise ConfigError(f"{where}.stages[{i}]: iters, patch and batch must all be >= 1, got {st}")
    if recipe.schedule == "constant_then_cosine" and recipe.constant < 1:
        raise ConfigError(f"{where}.constant: constant_then_cosine needs the constant iterations (>= 1)")


@dataclass
class TrainConfig:
    steps: int = bounded(200_000, ge=1)
    batch: int = bounded(32, ge=1)  # global batch
    patch: int = bounded(256, ge=8)
    workers: int = bounded(4, ge=0)
    accumulate: int = bounded(1, ge=1)
    gpus: int = bounded(1, ge=1)  # GPUs per grid cell; >1 runs DDP under torchrun (global batch = batch, split across them)
    ema_decay: float = bounded(0.0, ge=0, lt=1)
    # the llrd strategy's rate for a model whose recipe publishes none (layer_decay 0)
    llrd_decay: float = bounded(0.9, gt=0, le=1)
    checkpoint_every: int = bounded(1000, ge=1)
    log_every: int = bounded(100, ge=1)
    validate_every: int = bounded(0, ge=0)  # 0: validate at the end only (when holdout > 0)
    # fraction of the training store's source images held out whole for validation (val/psnr in
    # dvclive); 0: no validation, every image trains
    holdout: float = bounded(0.0, ge=0, lt=1)
    amp: bool = True
    channels_last: bool = True
    compile: bool = False
    compile_mode: str = bounded("default", choices=COMPILE_MODES)  # torch.compile mode: default, reduce-overhead (CUDA graphs), max-autotune
    sync_every: int = bounded(10, ge=1)  # steps between host reads of the loss (NaN check); 1: every step
    deterministic: bool = False
    models: dict[str, ModelTrainConfig] = field(default_factory=dict)

    def recipe(self, model: str, task: str | None = None) -> ModelTrainConfig:
        """`model`'s recipe, with its `tasks.<task>` overrides applied when `task` is given."""
        base = self.models.get(model, ModelTrainConfig())
        return resolve_recipe(base, task, f"train.models.{model}")

    def crop(self, model: str, task: str | None = None) -> int:
        """The training crop of `model`'s cells: its recipe's patch (the first stage's when progressive),
        else train.patch."""
        r = self.recipe(model, task)
        return r.stages[0].patch if r.stages else (r.patch or self.patch)

    def stages(self, model: str, task: str | None = None) -> list[StageConfig]:
        """(iters, patch, global batch) of each stage of `model`'s training on `task`."""
        return self.recipe(model, task).stage_list(steps=self.steps, batch=self.batch, patch=self.patch)


@dataclass
class PretrainRunConfig:
    """One pretraining run's schedule (the iteration budget is `steps`)."""

    steps: int = bounded(300_000, ge=1)
    batch: int = bounded(32, ge=1)  # global batch (IPT: 32 per task batch on 32 GPUs in the paper; scale to your budget)
    lr: float = bounded(5e-5, gt=0)  # IPT's pretraining LR (Adam, decayed); DCPT uses its model's own recipe scale
    min_lr: float = bounded(1e-7, ge=0)
    warmup: int = bounded(0, ge=0)
    weight_decay: float = bounded(0.0, ge=0)
    betas: list[float] = bounded(factory=lambda: [0.9, 0.999], length=2, ge=0, lt=1)
    grad_clip: float = bounded(0.0, ge=0)
    checkpoint_every: int = bounded(5000, ge=1)
    log_every: int = bounded(100, ge=1)
    validate_every: int = bounded(0, ge=0)  # 0: only at the end
    workers: int = bounded(4, ge=0)


@dataclass
class IPTPretrainConfig(PretrainRunConfig):
    """IPT (Chen et al. 2021): multi-task pretraining on degraded ImageNet with a contrastive term."""

    variant: str = "paper"  # the IPT variant pretrained (and later finetuned)
    # IPT task name (the head/tail/query it trains) -> task (array) of the degrade store; each batch is one task
    tasks: dict[str, str] = field(
        default_factory=lambda: {
            "sr2": "sr_x2", "sr3": "sr_x3", "sr4": "sr_x4", "noise30": "noise_30", "noise50": "noise_50",
            "rain": "rain",
        }
    )  # fmt: skip
    contrastive_weight: float = bounded(0.1, ge=0)  # lambda in L = L1 + lambda * L_contrastive (IPT eq. 5)
    temperature: float = bounded(0.07, gt=0)
    tokens_per_image: int = bounded(0, ge=0)  # decoder tokens per image in the contrastive loss; 0: all of them
    # finetuning task -> the pretrained IPT task whose head and tail it starts from (null: new head/tail)
    heads: dict[str, str | None] = field(default_factory=lambda: {"denoise": "noise30", "deblur": None})


@dataclass
class DCPTPretrainConfig(PretrainRunConfig):
    """DCPT (Hu et al., ICLR 2025): degradation classification from the model's decoder features."""

    # degrade-store tasks used as the classes, in label order (the default five, DCPT's 5D all-in-one set:
    # Gaussian noise sigma 25 (its test set's level), motion blur, rain, haze, low light; add the ten-type
    # set's defocus_blur / jpeg / ... as degrade tasks first)
    degradations: list[str] = field(
        default_factory=lambda: ["noise_25", "motion_blur", "rain", "haze", "low_light"]
    )
    patch: int = bounded(48, ge=8)  # training crop (gt side); must fit in the store's patches
    # 0: the hooked maps' own widths (DCPT's release); > 0: every map 1x1-projected to this width (lighter)
    classifier_width: int = bounded(0, ge=0)
    classify_weight: float = bounded(1.0, ge=0)
    knn_k: int = bounded(5, ge=1)
    knn_images: int = bounded(100, ge=1)  # images per degradation in the k-NN set (DCPT's knn_gen.py: 100 per type)


@dataclass
class PretrainConfig:
    holdout: float = bounded(0.1, ge=0, lt=1)  # fraction of the degrade store's source images held out for validation / k-NN
    ipt: IPTPretrainConfig = field(default_factory=IPTPretrainConfig)
    dcpt: DCPTPretrainConfig = field(default_factory=DCPTPretrainConfig)


def _demo_variants() -> dict[str, dict[str, str]]:
    return {name: {task: "demo" for task in TASKS} for name in MODEL_NAMES}


@dataclass
class ProfileConfig:
    """Everything a profile (demo, paper) may set."""

    data: DataConfig = field(default_factory=DataConfig)
    # model name -> task -> variant (see `restorebench models`); NAFNet's SIDD and GoPro configs differ
    variants: dict[str, dict[str, str]] = field(default_factory=_demo_variants)
    # model -> checkpoint to start from (hub id, hub-snapshot folder or file); null: seeded random init.
    # Every model has an entry (DVC's finetune stages track each model's own, profiles.P.pretrained.M)
    pretrained: dict[str, str | None] = field(default_factory=dict)
    # model -> task -> a released checkpoint file (e.g. NAFNet-SIDD-width32.pth): the grid gets a cell
    # `official` scoring it as is, through the same evaluate stage (no training); it must fit the variant
    official: dict[str, dict[str, str]] = field(default_factory=dict)
    evaluate: EvalConfig = field(default_factory=EvalConfig)
    degrade: DegradeConfig = field(default_factory=DegradeConfig)
    prepare: PrepareConfig = field(default_factory=PrepareConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)


@dataclass
class Config:
    """The resolved configuration a stage runs with."""

    profile: str
    seed: int
    datasets: list[str]
    tasks: list[str]
    models: list[str]
    strategies: list[str]
    pretrain_models: dict[str, list[str]]  # restoration pretraining -> the models finetuned from it
    pretrain_strategies: list[str]
    data: DataConfig
    variants: dict[str, dict[str, str]]
    pretrained: dict[str, str]
    official: dict[str, dict[str, str]]
    evaluate: EvalConfig
    degrade: DegradeConfig
    prepare: PrepareConfig
    train: TrainConfig
    pretrain: PretrainConfig
    # optional: the seeds each training cell is repeated with (cells named full-seed0, ...); None: `seed` once
    seeds: list[int] | None = None

    def variant(self, model: str, task: str) -> str:
        check_choice("model", model, MODEL_NAMES)
        check_choice("task", task, TASKS)
        try:
            variant = self.variants[model][task]
        except KeyError:
            raise ConfigError(f"profiles.{self.profile}.variants.{model}.{task}: no variant set") from None
        # checked here, not at load: the variant lists live in the model modules, which import torch (a
        # command that builds no model, and the Snakefile, should not pay for that)
        from restorebench.models import VARIANTS

        check_choice(f"profiles.{self.profile}.variants.{model}.{task}", variant, VARIANTS[model])
        return variant

    def to_dict(self) -> dict[str, Any]:
        return _asdict(self)

    def digest(self) -> str:
        """sha256 of the resolved config, recorded with every metric (provenance)."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()


TOP_LEVEL = {
    "profile": str,
    "seed": int,
    "datasets": list,
    "tasks": list,
    "models": list,
    "strategies": list,
    "pretrain_models": dict,
    "pretrain_strategies": list,
    "profiles": dict,
    "seeds": list,
}
OPTIONAL_TOP_LEVEL = ("seeds",)


def _asdict(obj: Any) -> Any:
    if is_dataclass(obj):
        return {f.name: _asdict(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, dict):
        return {k: _asdict(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_asdict(v) for v in obj]
    return obj


# ---------------------------------------------------------------------------------------------- loading


def _merge_profile(name: str, section: Any) -> ProfileConfig:
    """Merge one profile section over the defaults, turning OmegaConf's errors into named ones."""
    base = OmegaConf.structured(ProfileConfig)
    if section is None:
        section = {}
    if not isinstance(section, dict):
        raise ConfigError(f"profiles.{name}: expected a mapping, got {type(section).__name__}")
    _check_keys(ProfileConfig, section, f"profiles.{name}")
    try:
        merged = OmegaConf.merge(base, section)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or "?"
        msg = str(getattr(err, "msg", err)).splitlines()[0]
        raise ConfigError(f"profiles.{name}.{key}: {msg}") from None
    obj = OmegaConf.to_object(merged)
    assert isinstance(obj, ProfileConfig)
    return obj


def _check_keys(schema: Any, section: dict, path: str) -> None:
    """Walk a user section against the schema's types: unknown keys fail with the allowed keys listed and a
    did-you-mean, in every dataclass, including those held in mappings (train.models.<model>)."""
    if is_dataclass(schema):
        hints = typing.get_type_hints(schema)
        allowed = [f.name for f in fields(schema)]
        for key, value in section.items():
            if key not in allowed:
                raise ConfigError(
                    f"{path}.{key}: unknown key; allowed keys are {sorted(allowed)}{did_you_mean(key, allowed)}"
                )
            _check_value(hints[key], value, f"{path}.{key}")
    elif typing.get_origin(schema) is dict:
        item_type = typing.get_args(schema)[1]
        for key, value in section.items():
            _check_value(item_type, value, f"{path}.{key}")


def _check_value(schema: Any, value: Any, path: str) -> None:
    """One value against its declared type's shape (mapping / list / scalar); mappings are walked."""
    origin = typing.get_origin(schema)
    mapping = is_dataclass(schema) or origin is dict
    if isinstance(value, dict):
        if mapping:
            _check_keys(schema, value, path)
        elif origin is not typing.Union and schema is not Any and not (
            isinstance(schema, type) and issubclass(schema, dict)
        ):
            raise ConfigError(f"{path}: expected a {getattr(schema, '__name__', schema)}, got a mapping")
    elif value is not None and (mapping or origin is list):
        want = "mapping" if mapping else "list"
        if not (want == "list" and isinstance(value, list)):
            raise ConfigError(f"{path}: expected a {want}, got {value!r}")


def _apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply `a.b.c=value` overrides (values parsed as YAML) to the raw params mapping."""
    out = json.loads(json.dumps(raw))
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected KEY=VALUE, e.g. profile=paper")
        key, text = item.split("=", 1)
        value = yaml.safe_load(text) if text != "" else ""
        parts = key.strip().split(".")
        node = out
        for i, part in enumerate(parts[:-1]):
            nxt = node.get(part)
            if nxt is None:
                nxt = node[part] = {}
            if not isinstance(nxt, dict):
                raise ConfigError(f"override {key}: {'.'.join(parts[: i + 1])} is not a mapping")
            node = nxt
        node[parts[-1]] = value
    return out


def read_params(path: str | Path = "params.yaml") -> dict:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: params file not found (run from the project root or pass --params)")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return raw


def _check_pretrain_models(pretrain_models: dict, models: list[str]) -> None:
    """pretrain_models maps each restoration pretraining to the models finetuned from it. IPT trains the ipt
    model only; DCPT any model of the grid (a subset of `models`, so that cutting `models` for a sweep cannot
    leave DCPT cells of models the sweep dropped)."""
    methods = [m for m in PRETRAIN_METHODS if m != "none"]
    for method, listed in pretrain_models.items():
        check_choice(f"pretrain_models.{method}", method, methods)
        if not isinstance(listed, list):
            raise ConfigError(f"pretrain_models.{method}: expected a list of models ([] turns it off), got {listed!r}")
        allowed = ["ipt"] if method == "ipt" else list(models)
        for i, model in enumerate(listed):
            if method == "dcpt" and model in MODEL_NAMES and model not in models:
                raise ConfigError(f"pretrain_models.dcpt[{i}]: {model!r} is not in `models` {models}; "
                                  "DCPT cells are a subset of the grid's models (drop it here too)")
            check_choice(f"pretrain_models.{method}[{i}]", model, allowed)
    for method in methods:
        if method not in pretrain_models:
            raise ConfigError(f"pretrain_models.{method}: missing; list the models finetuned from it ([] for none)")


SPLITS = ("train", "val", "test")


def _check_relations(prof: ProfileConfig, at: str) -> None:
    """Checks between fields, and names that refer to other keys (each with a did-you-mean)."""
    for ds in DATASETS:
        d = getattr(prof.data, ds)
        for key in ("expected_pairs", "expected_groups"):
            for split in getattr(d, key):
                check_choice(f"{at}.data.{ds}.{key}.{split}", split, SPLITS)
    e, t = prof.evaluate, prof.train
    if e.tile is not None and e.overlap >= e.tile:
        raise ConfigError(f"{at}.evaluate.overlap: must be < evaluate.tile ({e.tile}), got {e.overlap}")
    for ds in ("sidd", "gopro"):
        crop = getattr(prof.prepare, ds)
        if crop.step > crop.size:
            raise ConfigError(f"{at}.prepare.{ds}.step: must be <= prepare.{ds}.size ({crop.size}) so that "
                              f"sub-images cover the image, got {crop.step}")
    if t.batch % t.accumulate:
        raise ConfigError(f"{at}.train.batch: must be a multiple of train.accumulate ({t.accumulate}), got {t.batch}")
    for model, recipe in t.models.items():
        if recipe.min_lr > recipe.lr:
            raise ConfigError(f"{at}.train.models.{model}.min_lr: must be <= its lr ({recipe.lr:g}), "
                              f"got {recipe.min_lr:g}")
    _check_degradations(prof, at)


def _check_degradations(prof: ProfileConfig, at: str) -> None:
    """degrade.tasks pipelines name known degradations with known parameters; the pretraining sections name
    degrade tasks that exist; IPT's heads name IPT tasks."""
    from restorebench.degrade.pipeline import DEGRADATIONS, allowed_params

    tasks = prof.degrade.tasks
    for task, spec in tasks.items():
        where = f"{at}.degrade.tasks.{task}"
        if not isinstance(spec, list):
            raise ConfigError(f"{where}: expected a list of steps like [{{name: gaussian_noise, sigma: 30}}]")
        for i, step in enumerate(spec):
            if not isinstance(step, dict) or "name" not in step:
                raise ConfigError(f"{where}[{i}]: each step is a mapping with a 'name' key, got {step!r}")
            check_choice(f"{where}[{i}].name", step["name"], sorted(DEGRADATIONS))
            allowed = allowed_params(step["name"])
            for key in step:
                if key != "name":
                    check_choice(f"{where}[{i}].{key}", key, allowed)
    if tasks:  # an empty mapping: the profile builds no degraded store, nothing to refer to
        for i, name in enumerate(prof.pretrain.dcpt.degradations):
            check_choice(f"{at}.pretrain.dcpt.degradations[{i}]", name, list(tasks))
        for head, task in prof.pretrain.ipt.tasks.items():
            check_choice(f"{at}.pretrain.ipt.tasks.{head}", task, list(tasks))
    for task, head in prof.pretrain.ipt.heads.items():
        check_choice(f"{at}.pretrain.ipt.heads.{task}", task, TASKS)
        if head is not None:
            check_choice(f"{at}.pretrain.ipt.heads.{task}", head, list(prof.pretrain.ipt.tasks))


def raw_params(path: str | Path = "params.yaml", overrides: list[str] | None = None) -> dict:
    """params.yaml as a mapping, with `overrides` (KEY=VALUE) applied; not yet validated (see resolve)."""
    return _apply_overrides(read_params(path), overrides or [])


def load_config(path: str | Path = "params.yaml", overrides: list[str] | None = None) -> Config:
    """Read params.yaml, apply overrides, validate every profile, return the active one resolved."""
    return resolve(raw_params(path, overrides))


def resolve(raw: dict) -> Config:
    for key, value in raw.items():
        if key not in TOP_LEVEL:
            raise ConfigError(
                f"{key}: unknown top-level key; allowed keys are {sorted(TOP_LEVEL)}{did_you_mean(key, list(TOP_LEVEL))}"
            )
        want = TOP_LEVEL[key]
        if not isinstance(value, want) or (want is int and isinstance(value, bool)):
            raise ConfigError(f"{key}: expected {want.__name__}, got {value!r}")
    for key in TOP_LEVEL:
        if key not in raw and key not in OPTIONAL_TOP_LEVEL:
            raise ConfigError(f"{key}: missing top-level key")
    profiles = raw["profiles"]
    resolved = {name: _merge_profile(name, section) for name, section in profiles.items()}
    check_choice("profile", raw["profile"], list(resolved))
    for key, allowed in (
        ("datasets", DATASETS),
        ("tasks", TASKS),
        ("models", MODEL_NAMES),
        ("strategies", STRATEGIES),
        ("pretrain_strategies", STRATEGIES),
    ):
        for i, value in enumerate(raw[key]):
            check_choice(f"{key}[{i}]", value, allowed)
    _check_pretrain_models(raw["pretrain_models"], raw["models"])
    seeds = raw.get("seeds")
    if seeds is not None and (not seeds or not all(isinstance(v, int) and not isinstance(v, bool) for v in seeds)
                              or len(set(seeds)) != len(seeds)):
        raise ConfigError("seeds", f"expected a list of distinct integers, got {seeds!r}",
                          "e.g. seeds: [0, 1, 2]; leave it out to train each cell once with `seed`")
    for name, prof in resolved.items():
        for model, per_task in prof.variants.items():
            check_choice(f"profiles.{name}.variants.{model}", model, MODEL_NAMES)
            for task in per_task:
                check_choice(f"profiles.{name}.variants.{model}.{task}", task, TASKS)
        for model in prof.pretrained:
            check_choice(f"profiles.{name}.pretrained.{model}", model, MODEL_NAMES)
        for model, per_task in prof.official.items():
            check_choice(f"profiles.{name}.official.{model}", model, MODEL_NAMES)
            for task in per_task:
                check_choice(f"profiles.{name}.official.{model}.{task}", task, TASKS)
        missing = [m for m in MODEL_NAMES if m not in prof.pretrained]
        if missing:
            raise ConfigError(f"profiles.{name}.pretrained: no entry for {missing}; give each model a checkpoint "
                              "or null (a seeded random init), since DVC tracks each model's entry")
        for model, recipe in prof.train.models.items():
            where = f"profiles.{name}.train.models.{model}"
            check_choice(where, model, MODEL_NAMES)
            for task in recipe.tasks:
                check_choice(f"{where}.tasks.{task}", task, TASKS)
            for task in [None, *recipe.tasks]:
                at = where if task is None else f"{where}.tasks.{task}"
                resolved_recipe = resolve_recipe(recipe, task, where)
                check_bounds(resolved_recipe, at)
                check_recipe(resolved_recipe, at)
        check_bounds(prof, f"profiles.{name}")
        _check_relations(prof, f"profiles.{name}")
    active = resolved[raw["profile"]]
    return Config(
        profile=raw["profile"],
        seed=raw["seed"],
        datasets=list(raw["datasets"]),
        tasks=list(raw["tasks"]),
        models=list(raw["models"]),
        strategies=list(raw["strategies"]),
        pretrain_models={k: list(v) for k, v in raw["pretrain_models"].items()},
        pretrain_strategies=list(raw["pretrain_strategies"]),
        **{f.name: getattr(active, f.name) for f in fields(ProfileConfig)},
        seeds=list(seeds) if seeds is not None else None,
    )
