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
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
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


def cell_name(strategy: str, pretrain: str = "none") -> str:
    """A grid cell's folder / file name: the strategy, prefixed by a restoration pretraining when one is used
    (runs/finetune/denoise/nafnet/full/, .../dcpt-full/)."""
    return strategy if pretrain == "none" else f"{pretrain}-{strategy}"


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


# ---------------------------------------------------------------------------------------------- schema


@dataclass
class DatasetConfig:
    """One dataset: where it comes from and what a complete copy holds."""

    # "sample" (embedded look-alike, no download), "url" (official archives), or a path to a folder or
    # archive already on disk.
    source: str = "sample"
    # split -> number of pairs (images for ImageNet) a complete copy has; validation checks these.
    expected_pairs: dict[str, int] = field(default_factory=dict)
    # split -> number of scene instances / sequences / classes.
    expected_groups: dict[str, int] = field(default_factory=dict)


@dataclass
class SampleConfig:
    """Sizes of the embedded sample (built from scikit-image's bundled images, no download)."""

    sidd_instances: int = 6  # scene instances, two pairs each
    sidd_height: int = 192
    sidd_width: int = 256
    sidd_val_images: int = 4  # N in the N x B x h x w x 3 validation blocks
    sidd_val_blocks: int = 4  # B
    sidd_val_block_size: int = 64  # h = w
    gopro_train_sequences: int = 3
    gopro_test_sequences: int = 2
    gopro_frames: int = 4  # blurred frames per sequence
    gopro_height: int = 144
    gopro_width: int = 256
    gopro_average: int = 7  # sharp sub-frames averaged into one blurred frame
    imagenet_classes: int = 4
    imagenet_per_class: int = 4
    imagenet_size: int = 160


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
    min_free_gb: float = 2.0
    # worker processes for hashing/validation; 0 = all cores
    workers: int = 0

    def dataset(self, name: str) -> DatasetConfig:
        check_choice("dataset", name, DATASETS)
        return getattr(self, name)


@dataclass
class EvalConfig:
    """Evaluation by the published protocols (see restorebench.evaluate)."""

    tile: int | None = None  # None: whole images; else tiles of this size (pixels) ...
    overlap: int = 32  # ... overlapping by this many pixels
    batch: int = 4  # tiles (images, when tile is None) per forward pass; the output does not depend on it
    # precision (the metrics JSON records the one used); the published protocols are IEEE float32
    tf32: bool = False  # CUDA: allow TF32 matmuls and convolutions; false forbids them (cuDNN's default allows)
    autocast: str | None = None  # None: float32; "bf16": CUDA bf16 autocast (no effect on a CPU)
    max_images: int = 0  # 0: the whole evaluation set (the protocol); >0 only for smoke runs
    crops: int = 3  # sample crops saved for the report
    crop_size: int = 96


@dataclass
class CropConfig:
    size: int = 512  # sub-image side (pixels)
    step: int = 384  # stride between sub-images (overlap = size - step)


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

    patch: int = 48  # IPT's patch size
    patches_per_image: int = 1
    max_images: int = 0  # 0: every image of the source
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
    gopro_input: str = "blur"


@dataclass
class ModelTrainConfig:
    """Each model's own recipe (DESIGN.md): the strategies scale its LR."""

    lr: float = 1e-3
    min_lr: float = 1e-7
    loss: str = "l1"
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.9])
    warmup: int = 0
    patch: int = 0  # training crop for this model; 0: train.patch (IPT trains on its tile size)


@dataclass
class TrainConfig:
    steps: int = 200_000
    batch: int = 32  # global batch
    patch: int = 256
    workers: int = 4
    accumulate: int = 1
    gpus: int = 1  # GPUs per grid cell; >1 runs DDP under torchrun (global batch = batch, split across them)
    grad_clip: float = 0.0
    ema_decay: float = 0.0
    llrd_decay: float = 0.75
    checkpoint_every: int = 1000
    log_every: int = 100
    validate_every: int = 0  # 0: validate at the end only (when holdout > 0)
    # fraction of the training store's source images held out whole for validation (val/psnr in
    # dvclive); 0: no validation, every image trains
    holdout: float = 0.0
    amp: bool = True
    channels_last: bool = True
    compile: bool = False
    compile_mode: str = "default"  # torch.compile mode: default, reduce-overhead (CUDA graphs), max-autotune
    sync_every: int = 10  # steps between host reads of the loss (NaN check); 1: every step
    deterministic: bool = False
    models: dict[str, ModelTrainConfig] = field(default_factory=dict)

    def recipe(self, model: str) -> ModelTrainConfig:
        return self.models.get(model, ModelTrainConfig())

    def crop(self, model: str) -> int:
        """The training crop of `model`'s cells: its recipe's patch, else train.patch."""
        return self.recipe(model).patch or self.patch


@dataclass
class PretrainRunConfig:
    """One pretraining run's schedule (the iteration budget is `steps`)."""

    steps: int = 300_000
    batch: int = 32  # global batch (IPT: 32 per task batch on 32 GPUs in the paper; scale to your budget)
    lr: float = 5e-5  # IPT's pretraining LR (Adam, decayed); DCPT uses its model's own recipe scale
    min_lr: float = 1e-7
    warmup: int = 0
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    grad_clip: float = 0.0
    checkpoint_every: int = 5000
    log_every: int = 100
    validate_every: int = 0  # 0: only at the end
    workers: int = 4


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
    contrastive_weight: float = 0.1  # lambda in L = L1 + lambda * L_contrastive (IPT eq. 5)
    temperature: float = 0.07
    tokens_per_image: int = 0  # decoder tokens per image in the contrastive loss; 0: all of them
    # finetuning task -> the pretrained IPT task whose head and tail it starts from (null: new head/tail)
    heads: dict[str, str | None] = field(default_factory=lambda: {"denoise": "noise30", "deblur": None})


@dataclass
class DCPTPretrainConfig(PretrainRunConfig):
    """DCPT (Hu et al., ICLR 2025): degradation classification from the model's decoder features."""

    # degrade-store tasks used as the classes, in label order (the default five: noise, motion blur,
    # rain, haze, low light; add the ten-type set's defocus_blur / jpeg / ... as degrade tasks first)
    degradations: list[str] = field(
        default_factory=lambda: ["noise_30", "motion_blur", "rain", "haze", "low_light"]
    )
    patch: int = 48  # training crop (gt side); must fit in the store's patches
    classifier_width: int = 64
    classify_weight: float = 1.0
    knn_k: int = 5
    knn_max_train: int = 2000  # reference features per k-NN evaluation (held-out items are the queries)


@dataclass
class PretrainConfig:
    holdout: float = 0.1  # fraction of the degrade store's source images held out for validation / k-NN
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
    evaluate: EvalConfig
    degrade: DegradeConfig
    prepare: PrepareConfig
    train: TrainConfig
    pretrain: PretrainConfig

    def variant(self, model: str, task: str) -> str:
        check_choice("model", model, MODEL_NAMES)
        check_choice("task", task, TASKS)
        try:
            return self.variants[model][task]
        except KeyError:
            raise ConfigError(f"profiles.{self.profile}.variants.{model}.{task}: no variant set") from None

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
}


def _asdict(obj: Any) -> Any:
    if is_dataclass(obj):
        return {f.name: _asdict(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, dict):
        return {k: _asdict(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_asdict(v) for v in obj]
    return obj


# ---------------------------------------------------------------------------------------------- loading


def _schema_keys(node: Any) -> list[str]:
    if isinstance(node, DictConfig):
        try:
            return [str(k) for k in node.keys()]
        except OmegaConfBaseException:
            return []
    return []


def _merge_profile(name: str, section: Any) -> ProfileConfig:
    """Merge one profile section over the defaults, turning OmegaConf's errors into named ones."""
    base = OmegaConf.structured(ProfileConfig)
    if section is None:
        section = {}
    if not isinstance(section, dict):
        raise ConfigError(f"profiles.{name}: expected a mapping, got {type(section).__name__}")
    _check_keys(base, section, f"profiles.{name}")
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
    """Walk a user section against the structured schema: unknown keys fail with allowed keys listed."""
    if not isinstance(schema, DictConfig) or OmegaConf.get_type(schema) is dict:
        return  # free-form mapping (e.g. expected_pairs): values are type-checked by the merge
    allowed = _schema_keys(schema)
    for key, value in section.items():
        if key not in allowed:
            raise ConfigError(
                f"{path}.{key}: unknown key; allowed keys are {sorted(allowed)}{did_you_mean(key, allowed)}"
            )
        child = schema[key]
        if isinstance(value, dict):
            if isinstance(child, DictConfig):
                _check_keys(child, value, f"{path}.{key}")
            elif not isinstance(child, dict):
                raise ConfigError(f"{path}.{key}: expected a {type(child).__name__}, got a mapping")
        elif isinstance(child, DictConfig | ListConfig) and value is not None:
            want = "mapping" if isinstance(child, DictConfig) else "list"
            if want == "list" and isinstance(value, list):
                continue
            raise ConfigError(f"{path}.{key}: expected a {want}, got {value!r}")


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


def load_config(path: str | Path = "params.yaml", overrides: list[str] | None = None) -> Config:
    """Read params.yaml, apply overrides, validate every profile, return the active one resolved."""
    raw = _apply_overrides(read_params(path), overrides or [])
    return resolve(raw)


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
        if key not in raw:
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
    for name, prof in resolved.items():
        for model, per_task in prof.variants.items():
            check_choice(f"profiles.{name}.variants.{model}", model, MODEL_NAMES)
            for task in per_task:
                check_choice(f"profiles.{name}.variants.{model}.{task}", task, TASKS)
        for model in prof.pretrained:
            check_choice(f"profiles.{name}.pretrained.{model}", model, MODEL_NAMES)
        missing = [m for m in MODEL_NAMES if m not in prof.pretrained]
        if missing:
            raise ConfigError(f"profiles.{name}.pretrained: no entry for {missing}; give each model a checkpoint "
                              "or null (a seeded random init), since DVC tracks each model's entry")
        for model, recipe in prof.train.models.items():
            check_choice(f"profiles.{name}.train.models.{model}", model, MODEL_NAMES)
            check_choice(f"profiles.{name}.train.models.{model}.loss", recipe.loss, LOSS_NAMES)
        check_choice(f"profiles.{name}.prepare.gopro_input", prof.prepare.gopro_input, ("blur", "blur_gamma"))
        check_choice(f"profiles.{name}.train.compile_mode", prof.train.compile_mode, COMPILE_MODES)
        if prof.train.sync_every < 1:
            raise ConfigError(f"profiles.{name}.train.sync_every: must be >= 1, got {prof.train.sync_every}")
        if prof.evaluate.batch < 1:
            raise ConfigError(f"profiles.{name}.evaluate.batch: must be >= 1, got {prof.evaluate.batch}")
        if prof.evaluate.autocast is not None:
            check_choice(f"profiles.{name}.evaluate.autocast", prof.evaluate.autocast, ("bf16",))
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
    )
