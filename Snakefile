# restorebench: the same stages as dvc.yaml, for parallel and cluster runs.
#
#   snakemake --cores all results/table.csv                  # demo profile (params.yaml)
#   snakemake --cores all results/table.csv --config profile=paper
#
# Every rule calls the `restorebench` CLI, which reads params.yaml itself; the profile travels as -S.

from snakemake.utils import min_version

min_version("8.0")


configfile: "params.yaml"


PROFILE = config["profile"]
P = config["profiles"][PROFILE]
DATASETS = config["datasets"]
TASKS = config["tasks"]
ENV = "../envs/restorebench.yaml"
# GPUs per training job (train.gpus > 1: DDP under torchrun); run with `--resources gpu=N` on an N-GPU
# machine and Snakemake keeps that many GPU jobs going, each pinned to its own devices by the CLI.
GPUS = P.get("train", {}).get("gpus", 1)


# The default target: the results table (which needs every cell, the pretrained ones included) and report.
rule all:
    input:
        "results/table.csv",
        "results/report.html",


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/results.smk"
