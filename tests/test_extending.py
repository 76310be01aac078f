"""docs/extending.md: a model is added through exactly the documented steps (one file in models/, one registry
line, its params.yaml entries) in a throwaway copy of the project, and one of its cells then runs through both
orchestrators by their public commands (Snakemake to the cell's metrics file; `dvc repro` of the stage that
writes it, with what it needs upstream)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from tests.helpers.project import copy_project, git_init, run, tool_env

# Step 1: one file in models/. A Restorer with its finetuning interface and what it answers about itself.
TOY_MODEL = '''"""A toy restorer for the Extending test: conv stem, one conv block, a conv back to RGB on the input."""

from __future__ import annotations

import torch.nn as nn
from torch import Tensor

from restorebench.models.restorer import Restorer, zero_
from restorebench.models.weights import load_strict

VARIANTS: tuple[str, ...] = ("demo",)


class Toy(Restorer):
    """(B, 3, H, W) in [0, 1] -> (B, 3, H, W) = input + a residual."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, width, 3, padding=1)
        self.body = nn.Sequential(nn.GELU(), nn.Conv2d(width, width, 3, padding=1), nn.GELU())
        self.out = nn.Conv2d(width, 3, 3, padding=1)
        self.num_layers = 1

    def forward(self, x: Tensor) -> Tensor:
        return x + self.out(self.body(self.stem(x)))

    def parameter_groups(self) -> dict[str, list[tuple[str, nn.Parameter]]]:
        part = {"stem": "backbone", "body": "decoder", "out": "head"}
        groups: dict[str, list[tuple[str, nn.Parameter]]] = {"backbone": [], "decoder": [], "head": []}
        for name, p in self.named_parameters():
            groups[part[name.split(".")[0]]].append((name, p))
        return groups

    def layer_ids(self) -> dict[str, int]:
        return {name: 0 for name, _ in self.parameter_groups()["backbone"]}

    def decoder_features(self) -> list[tuple[str, nn.Module]]:
        return [("body", self.body)]

    def start_at_identity_(self) -> None:
        zero_(self.out)


def build(*, variant: str | None = None, pretrained: str | None = None, **kwargs) -> Toy:
    model = Toy(**kwargs)
    if pretrained is not None:
        load_strict(model, pretrained, source=f"toy pretrained={pretrained}")
    return model
'''

CELL = "metrics/finetune/denoise/toy/full.json"


def add_toy_model(repo: Path) -> None:
    """docs/extending.md's steps for a new model, and the grid cut to its one cell (denoise, full, 4 steps)."""
    (repo / "src/restorebench/models/toy.py").write_text(TOY_MODEL)  # 1. the file
    registry = repo / "src/restorebench/models/__init__.py"  # 2. the registry line
    text = registry.read_text()
    last = re.findall(r'^    "\w+": "\w+",\n', text, re.M)[-1]  # the last entry of _MODULES
    registry.write_text(text.replace(last, last + '    "toy": "toy",\n', 1))
    params = yaml.safe_load((repo / "params.yaml").read_text())  # 3. its params.yaml entries, every profile
    for profile in params["profiles"].values():
        profile["variants"]["toy"] = {"denoise": "demo", "deblur": "demo"}
        profile["pretrained"]["toy"] = None
        profile["train"]["models"]["toy"] = {
            "lr": 1.0e-3,
            "min_lr": 1.0e-6,
            "loss": "l1",
            "betas": [0.9, 0.999],
            "weight_decay": 0.0,
        }
    params.update(
        tasks=["denoise"], models=["toy"], strategies=["full"], pretrain_models={"ipt": [], "dcpt": []}
    )
    params["profiles"]["demo"]["train"].update(steps=4, checkpoint_every=2, validate_every=4)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def copy_with_toy(project_root: Path, dest: Path) -> tuple[Path, dict[str, str]]:
    """A copy with the toy model added, and the environment that runs the copy's own code (its src/ first on
    PYTHONPATH, so the orchestrators' `restorebench` jobs see the toy) with one torch thread (bit-equal runs)."""
    repo = copy_project(project_root, dest)
    add_toy_model(repo)
    env = tool_env(PYTHONPATH=str(repo / "src"), OMP_NUM_THREADS="1")
    help_text = run(["restorebench", "--help"], repo, env)
    if re.search(r"^\W*pipeline\b", help_text, re.M):
        # dvc.yaml is generated from the pipeline module: regenerate it, as docs/extending.md says to
        # after changing the grid, so that the copy's DVC plan has the toy's stages
        out = run(["restorebench", "pipeline", "dvc"], repo, env)
        if out.lstrip().startswith(("stages:", "#")) and "stages:" in out:
            (repo / "dvc.yaml").write_text(out)
    return repo, env


def check_metrics(repo: Path) -> dict:
    metrics = json.loads((repo / CELL).read_text())
    flat = json.dumps(metrics)
    assert "psnr" in flat and "ssim" in flat, metrics
    return metrics


def stage_writing(repo: Path, path: str) -> str:
    """The name of the DVC stage whose outputs include `path` (whatever the stages are called)."""
    from dvc.repo import Repo

    with Repo(str(repo)) as dvc:
        for stage in dvc.index.stages:
            if any(str(out.def_path) == path for out in stage.outs):
                return stage.name  # as `dvc repro` addresses it in the root dvc.yaml
    raise AssertionError(f"no DVC stage writes {path}")


@pytest.mark.slow
def test_a_model_added_by_the_documented_steps_runs_its_cell_in_both_orchestrators(project_root, tmp_path):
    snake, env = copy_with_toy(project_root, tmp_path / "snake")
    assert "toy" in run(["restorebench", "config", "show"], snake, env)  # the copy's config knows it
    run(["snakemake", "--cores", "1", CELL], snake, env)
    by_snakemake = check_metrics(snake)

    repo, env = copy_with_toy(project_root, tmp_path / "dvc")
    git_init(repo)  # DVC reads a git repo
    stage = stage_writing(repo, CELL)
    run(["dvc", "repro", stage], repo, env)
    by_dvc = check_metrics(repo)
    assert "up to date" in run(["dvc", "status", stage], repo, env)  # recorded in dvc.lock

    # the same cell, the same scores (one thread each, seeded; timings differ)
    def scores(m: dict) -> dict:
        return {k: v for k, v in m.items() if k.startswith(("psnr", "ssim"))}

    assert scores(by_snakemake) and scores(by_snakemake) == pytest.approx(scores(by_dvc))


def test_the_toy_model_file_alone_satisfies_the_registry_contract(tmp_path):
    """The toy file is a complete model by the registry tests' standards (checked in process, fast)."""
    import importlib.util

    import torch

    path = tmp_path / "toy.py"
    path.write_text(TOY_MODEL)
    spec = importlib.util.spec_from_file_location("toy_model", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.build(variant="demo")
    x = torch.rand(1, 3, 20, 24)
    model.start_at_identity_()
    with torch.no_grad():
        torch.testing.assert_close(model(x), x)
    groups = model.parameter_groups()
    assert sum(len(v) for v in groups.values()) == len(list(model.parameters()))
    assert [n for n, _ in model.decoder_features()] == ["body"]
