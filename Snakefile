# restorebench: the stages of restorebench.pipeline (the same as dvc.yaml, which is generated from it), for
# parallel and cluster runs.
#
#   snakemake --cores all results/table.csv                      # params.yaml as it is
#   restorebench profile paper && snakemake --cores all results/table.csv   # the paper study
#
# Every --config entry is a params.yaml override: it is validated with the file (restorebench.config), and
# each command gets it as -S KEY=VALUE (a mapping is flattened: --config 'profiles={demo: {train:
# {steps: 5}}}' is -S profiles.demo.train.steps=5). Rules take cells, paths, params and source files from
# restorebench.pipeline.

import os
import shlex
import socket
import sys

from snakemake.utils import min_version

from restorebench import pipeline
from restorebench.snakemake_config import snakemake_overrides
from restorebench.config import ConfigError

min_version("8.0")

OVERRIDES = snakemake_overrides(config)
try:
    PIPE = pipeline.load("params.yaml", OVERRIDES)
except ConfigError as err:  # one line with the key and a did-you-mean, as the CLI prints it
    sys.exit(f"error: {err}")
ROOT = PIPE.root
# this run's name for the project lock (restorebench.lock.take_project_lock): all its jobs, cluster ones too,
# inherit it, so they share the lock and a `dvc repro` on the same tree fails at its first stage
os.environ.setdefault("RESTOREBENCH_ORCHESTRATOR", f"snakemake:{socket.gethostname()}:{os.getpid()}")
# the command every rule runs, with the overrides; `restorebench --threads` gets the rule's threads
RESTOREBENCH = " ".join(["restorebench", *(f"-S {shlex.quote(o)}" for o in OVERRIDES)])
ENV = "../envs/restorebench.yaml"
# GPUs per training job (train.gpus > 1: DDP under torchrun); run with `--resources gpu=N` on an N-GPU
# machine and Snakemake keeps that many GPU jobs going, each pinned to its own devices by the CLI.
GPUS = PIPE.cfg.train.gpus


# The default target: the results table (which needs every cell, the pretrained ones included) and report.
rule all:
    input:
        pipeline.TABLE,
        pipeline.REPORT,


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/results.smk"
