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


# The default target: the results table and report, plus the pretraining set (which feeds pretraining, issue 7).
rule all:
    input:
        "results/table.csv",
        "results/report.html",
        "data/store/imagenet/train",


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/results.smk"
