# Shared helpers for the rules: the active profile's sections of params.yaml.


def dataset_params(wildcards):
    return P["data"][wildcards.dataset]


# Task -> the dataset it trains and evaluates on (restorebench.config.TASK_DATASET).
TASK_DATASET = {"denoise": "sidd", "deblur": "gopro"}


def task_validation(wildcards):
    return f"data/validation/{TASK_DATASET[wildcards.task]}.json"


def task_store(wildcards):
    return f"data/store/{TASK_DATASET[wildcards.task]}/train"


def model_variant(wildcards):
    return P.get("variants", {}).get(wildcards.model, {}).get(wildcards.task, "demo")


GRID = expand(
    "metrics/finetune/{task}/{model}/{strategy}.json",
    task=TASKS,
    model=config["models"],
    strategy=config["strategies"],
)
