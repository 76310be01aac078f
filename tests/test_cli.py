"""The CLI surface users and both orchestrators rely on."""

from __future__ import annotations

import os
import subprocess
import sys

from typer.testing import CliRunner

from restorebench.cli import app

STAGES = [
    "fetch",
    "validate",
    "degrade",
    "prepare",
    "pretrain",
    "finetune",
    "evaluate",
    "aggregate",
    "report",
]

runner = CliRunner()


def test_help_lists_every_stage():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for name in [*STAGES, "models", "doctor", "config"]:
        assert name in result.output, name


def test_console_script_is_installed(project_root):
    exe = os.path.join(os.path.dirname(sys.executable), "restorebench")
    out = subprocess.run([exe, "--help"], capture_output=True, text=True, cwd=project_root, check=True)
    assert "fetch" in out.stdout


def test_config_show_prints_the_resolved_profile(project_root, monkeypatch):
    monkeypatch.chdir(project_root)
    result = runner.invoke(app, ["-S", "profile=paper", "config", "show"])
    assert result.exit_code == 0, result.output
    assert "profile: paper" in result.output
    assert "expected_pairs" in result.output and "2103" in result.output


def test_bad_override_is_a_clear_error(project_root, monkeypatch):
    monkeypatch.chdir(project_root)
    result = runner.invoke(app, ["-S", "profile=papr", "config", "show"])
    assert result.exit_code == 1
    assert "did you mean 'paper'" in result.output


def test_unknown_dataset_is_named(project_root, monkeypatch):
    monkeypatch.chdir(project_root)
    result = runner.invoke(app, ["validate", "--dataset", "gopr"])
    assert result.exit_code == 1
    assert "'gopr' is not allowed" in result.output and "did you mean 'gopro'" in result.output


def test_doctor_reports_machine_and_data(project_root, monkeypatch, tmp_path):
    from rich.console import Console

    from restorebench.config import load_config
    from restorebench.doctor import run_doctor

    cfg = load_config(project_root / "params.yaml", [f"profiles.demo.data.root={tmp_path}"])
    console = Console(record=True, width=200)
    ok = run_doctor(cfg, console=console, check_hub=False)
    text = console.export_text()
    assert ok
    assert "torch" in text and "CUDA" in text and "disk free" in text
    assert "data: sidd" in text and "absent" in text


def test_out_of_memory_names_the_memory_asked_and_a_hint(project_root, monkeypatch):
    import torch

    import restorebench.train.finetune as finetune_module

    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError(
            "CUDA out of memory. Tried to allocate 18.00 GiB. GPU 0 has a total capacity of 79.19 GiB of which "
            "2.10 GiB is free.\nOf the allocated memory 70.1 GiB is allocated by PyTorch"
        )

    monkeypatch.chdir(project_root)
    monkeypatch.setattr(finetune_module, "finetune", oom)
    result = runner.invoke(app, ["finetune", "--task", "denoise", "--model", "nafnet", "--strategy", "full"])
    assert result.exit_code == 1
    assert "finetune denoise/nafnet/full: out of GPU memory at batch 4, patch 48" in result.output
    assert "Tried to allocate 18.00 GiB" in result.output
    assert "raise train.accumulate" in result.output
    assert "Traceback" not in result.output
