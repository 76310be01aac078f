# Shared helpers for the rules: the active profile's sections of params.yaml.


def dataset_params(wildcards):
    return P["data"][wildcards.dataset]


# The train keys pretraining reads, as dvc.yaml's pretrain stages list them: finetuning's schedule
# (train.steps, ...) does not re-run pretraining; compile, compile_mode and sync_every change no result.
PRETRAIN_TRAIN_KEYS = {
    "ipt": ("amp", "channels_last", "deterministic", "ema_decay", "gpus"),
    "dcpt": ("amp", "channels_last", "deterministic", "ema_decay", "gpus"),
}


def pretrain_params(method):
    """What a pretraining run depends on besides its own section (the same params as in dvc.yaml)."""
    return {
        "seed": config["seed"],
        "holdout": P.get("pretrain", {}).get("holdout"),
        "train": {k: P.get("train", {}).get(k) for k in PRETRAIN_TRAIN_KEYS[method]},
    }


def model_checkpoint(wildcards):
    """The segmentation checkpoint the model starts from (None: a seeded random init), as DVC tracks it."""
    return P.get("pretrained", {}).get(wildcards.model)


# Task -> the dataset it trains and evaluates on (restorebench.config.TASK_DATASET).
TASK_DATASET = {"denoise": "sidd", "deblur": "gopro"}


def task_validation(wildcards):
    return f"data/validation/{TASK_DATASET[wildcards.task]}.json"


def task_store(wildcards):
    return f"data/store/{TASK_DATASET[wildcards.task]}/train"


def model_variant(wildcards):
    return P.get("variants", {}).get(wildcards.model, {}).get(wildcards.task, "demo")


# The grid: task x model x strategy from the initialisation of `pretrained` (pretrain "none"), plus the
# restoration-pretrained cells: each model `pretrain_models` lists for IPT / DCPT, finetuned with
# `pretrain_strategies`. A cell's name is its strategy, prefixed by its pretraining ("dcpt-full").
PRETRAIN_MODELS = config.get("pretrain_models", {})
CELL_PATTERN = "(?:(?:ipt|dcpt)-)?(?:frozen|full_lowlr|full|llrd)"


def cell_name(strategy, pretrain):
    return strategy if pretrain == "none" else f"{pretrain}-{strategy}"


def grid_cells():
    """(task, model, strategy, pretrain) of every cell, in the order of the params lists."""
    cells = []
    for task in TASKS:
        cells += [(task, m, s, "none") for m in config["models"] for s in config["strategies"]]
        for pretrain, models in PRETRAIN_MODELS.items():
            cells += [(task, m, s, pretrain) for m in models for s in config["pretrain_strategies"]]
    return cells


GRID = [f"metrics/finetune/{t}/{m}/{cell_name(s, p)}.json" for t, m, s, p in grid_cells()]


def cell_strategy(wildcards):
    return wildcards.cell.rpartition("-")[2]


def cell_pretrain(wildcards):
    return wildcards.cell.rpartition("-")[0] or "none"


def pretrained_weights(wildcards):
    """The finetuning init a cell's pretraining produced (none for pretrain "none")."""
    pretrain = cell_pretrain(wildcards)
    if pretrain == "ipt":
        return ["runs/pretrain/ipt/ipt/model.safetensors"]
    if pretrain == "dcpt":
        return [f"runs/pretrain/dcpt/{wildcards.task}/{wildcards.model}/model.safetensors"]
    return []
