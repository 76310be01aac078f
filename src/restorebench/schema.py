"""The schema of params.yaml: the grid's names and one dataclass per section, each field with its default and
its allowed range (`bounded`). restorebench.config loads a params file into these; `Config` is what a stage
runs with."""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass, field, fields, is_dataclass, replace
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from restorebench.bounds import ConfigError, bounded, check_choice, did_you_mean
from restorebench.models import MODELS

DATASETS = ("sidd", "gopro", "imagenet")
TASKS = ("denoise", "deblur")
# Task -> the dataset its training and evaluation data come from.
TASK_DATASET = {"denoise": "sidd", "deblur": "gopro"}
MODEL_NAMES = tuple(MODELS)  # the registry's names (restorebench.models; importing it loads no model)
STRATEGIES = ("frozen", "full_lowlr", "full", "llrd")
# A cell's init before finetuning: `none` the profile's own (its `pretrained` checkpoint, or a seeded random
# init where that is null), `ipt` / `dcpt` a restoration pretraining run, `scratch` the control: the same
# architecture from a seeded random init, the checkpoint of `pretrained` not loaded (no pretraining run)
PRETRAIN_METHODS = ("none", "ipt", "dcpt", "scratch")
# the methods `pretrain_models` must list (scratch may be left out: no scratch cells)
REQUIRED_PRETRAIN_METHODS = ("ipt", "dcpt")
LOSS_NAMES = ("l1", "charbonnier", "psnr")
# torch.compile's modes (train.compile_mode); "reduce-overhead" captures CUDA graphs
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def cell_name(strategy: str, pretrain: str = "none", seed: int | None = None) -> str:
    """A grid cell's folder / file name: the strategy, prefixed by a restoration pretraining when one is used
    (runs/finetune/denoise/nafnet/full/, .../dcpt-full/), suffixed by its seed when `seeds` repeats the
    training cells (full-seed1)."""
    name = strategy if pretrain == "none" else f"{pretrain}-{strategy}"
    return name if seed is None else f"{name}-seed{seed}"





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
    """ImageNet's pretraining set (restorebench.degrade.stage.degrade_store): clean patches stored, the tasks'
    degraded inputs synthesised per draw."""

    patch: int = bounded(48, ge=8)  # IPT's patch size
    patches_per_image: int = bounded(1, ge=1)
    max_images: int = bounded(0, ge=0)  # 0: every image of the source
    # pixels of real context stored around each clean patch, which the per-draw degradations see (blur and
    # resizing at the patch border); 0 stores the patch alone (the degradations' own border handling)
    margin: int = bounded(24, ge=0)
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
    if not override:  # nothing to merge: `base` was checked when it was read
        return replace(copy.deepcopy(base), tasks={})
    plain = OmegaConf.structured(base)
    plain.tasks = {}
    schema = [f.name for f in fields(ModelTrainConfig)]
    for key in override:
        if key not in schema or key == "tasks":
            allowed = [k for k in schema if k != "tasks"]
            raise ConfigError(f"{where}.tasks.{task}.{key}: unknown key; allowed keys are {sorted(allowed)}"
                              f"{did_you_mean(key, allowed)}")
    return merge_over(plain, override, f"{where}.tasks.{task}", ModelTrainConfig)


def merge_over(base: Any, section: dict, where: str, cls: type) -> Any:
    """`section` merged over the structured config `base` into a `cls`; OmegaConf's type errors become a
    ConfigError naming the key under `where`."""
    try:
        merged = OmegaConf.merge(base, section)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or "?"
        msg = str(getattr(err, "msg", err)).splitlines()[0]
        raise ConfigError(f"{where}.{key}: {msg}") from None
    out = OmegaConf.to_object(merged)
    assert isinstance(out, cls)
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
class SegmentationPretrainConfig:
    """The demo's segmentation pretraining (restorebench.pretrain.segmentation): each tiny segmentation model
    trained with its own segmentation head on a synthetic set generated from `seed` (textured shapes, one class
    per texture and shape, class 0 the background), its checkpoint written in the published format that
    `pretrained` reads. The paper profile starts from the published checkpoints instead."""

    steps: int = bounded(300, ge=1)
    batch: int = bounded(4, ge=1)
    size: int = bounded(64, ge=32)  # image side in pixels (a multiple of 32, the models' padding multiple)
    classes: int = bounded(4, ge=2, le=64)  # the background and classes - 1 textured shapes
    lr: float = bounded(1e-3, gt=0)  # AdamW, linear decay to 0 (mmseg's poly, power 1)
    weight_decay: float = bounded(0.01, ge=0)
    held_out: int = bounded(32, ge=1)  # synthetic images scored after training (pixel accuracy, mIoU)


@dataclass
class PretrainConfig:
    holdout: float = bounded(0.1, ge=0, lt=1)  # fraction of the degrade store's source images held out for validation / k-NN
    ipt: IPTPretrainConfig = field(default_factory=IPTPretrainConfig)
    dcpt: DCPTPretrainConfig = field(default_factory=DCPTPretrainConfig)
    segmentation: SegmentationPretrainConfig = field(default_factory=SegmentationPretrainConfig)


# The top-level grid lists (both orchestrators expand them; DVC's matrix reads them as they are) that a profile
# may declare as its study's grid: `restorebench profile NAME` writes the declared ones there
GRID_KEYS = ("models", "strategies", "pretrain_models", "pretrain_strategies")


@dataclass
class GridConfig:
    """The grid a profile's study covers (null: the top-level list as it is). DVC cannot pick a list by
    ${profile}, so the lists that run are always the top-level ones; this records what they are set to for
    the profile (the demo a small cut that fits minutes on a CPU, the paper profile the whole study)."""

    models: list[str] | None = None
    strategies: list[str] | None = None
    pretrain_models: dict[str, list[str]] | None = None
    pretrain_strategies: list[str] | None = None

    def declared(self) -> dict[str, Any]:
        """The keys this grid sets, in GRID_KEYS order, as plain lists and mappings."""
        out = {}
        for key in GRID_KEYS:
            value = getattr(self, key)
            if value is not None:
                out[key] = {k: list(v) for k, v in value.items()} if isinstance(value, dict) else list(value)
        return out


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
    grid: GridConfig = field(default_factory=GridConfig)


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
    grid: GridConfig  # the grid the profile declares (the lists above are what runs)
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
