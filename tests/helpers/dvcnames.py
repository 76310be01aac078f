"""The names `dvc repro` knows the pipeline's jobs by (restorebench.dvcyaml.dvc_names): a matrix block's
job is BLOCK@VALUES (finetune_denoise@nafnet-full), an expanded one keeps its Stage.name (prepare.sidd)."""

from __future__ import annotations

from pathlib import Path

from restorebench import pipeline
from restorebench.dvcyaml import dvc_names

CODE_STAGE = "code"  # DVC's own stage: every family's source fingerprints


def dvc_jobs(params: Path, *overrides: str) -> dict[str, pipeline.Stage]:
    """DVC stage name -> the pipeline job it runs, for the grid of `params` (with overrides)."""
    pipe = pipeline.load(params, overrides)
    names = dvc_names(pipe)
    return {names[s.name]: s for s in pipe.stages()}


def dvc_name(params: Path, stage_name: str) -> str:
    """The DVC name of the job named `stage_name` (Stage.name: finetune.denoise.nafnet.full)."""
    return dvc_names(pipeline.load(params))[stage_name]
