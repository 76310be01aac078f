"""The CLI surface users and both orchestrators rely on."""

from __future__ import annotations

import os
import subprocess
import sys

from typer.testing import CliRunner

from restorebench.cli import app
from tests.helpers.cells import finetuned_cell

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


def test_profile_switches_the_params_file_and_the_global_option_reads_it(project_root, tmp_path, monkeypatch):
    """`restorebench profile paper` writes the paper profile and its grid into params.yaml (and says what
    changed) and regenerates dvc.yaml for them; `--profile paper`, on any command, resolves the same without
    writing; -S after it wins."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text((project_root / "params.yaml").read_text())
    committed_dvc = (project_root / "dvc.yaml").read_text()
    (tmp_path / "dvc.yaml").write_text(committed_dvc)
    shown = runner.invoke(app, ["config", "show", "strategies", "--profile", "paper", "-S", "seed=3"])
    assert shown.exit_code == 0, shown.output
    assert "- frozen" in shown.output and "- llrd" in shown.output
    assert "profile: demo" in (tmp_path / "params.yaml").read_text()  # nothing written
    result = runner.invoke(app, ["profile", "paper"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == ["profile paper: params.yaml changed profile, strategies, pretrain_models",
                                          "profile paper: dvc.yaml regenerated for its grid (commit both)"]
    dvc = (tmp_path / "dvc.yaml").read_text()
    assert "- metrics/finetune/deblur/vit_adapter/llrd.json" in dvc and "segpretrain" not in dvc
    shown = runner.invoke(app, ["config", "show", "profile"])
    assert shown.output.strip() == "profile: paper"
    assert runner.invoke(app, ["profile", "paper"]).output.strip().endswith("nothing: it is already set")
    runner.invoke(app, ["profile", "demo"])
    assert (tmp_path / "dvc.yaml").read_text() == committed_dvc
    bad = runner.invoke(app, ["profile", "papr"])
    assert bad.exit_code == 1 and "did you mean 'paper'" in bad.output


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


def test_evaluate_runs_the_configured_tiling_and_precision_and_records_it(project_root, monkeypatch, tmp_path):
    import json
    import warnings

    import torch

    import restorebench.infer as infer

    finetuned_cell(project_root, tmp_path, monkeypatch)
    calls: list[dict] = []
    real = infer.restore

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(infer, "restore", spy)
    sets = [f"profiles.demo.evaluate.{kv}" for kv in ("tile=32", "overlap=8", "batch=2", "tf32=true", "autocast=bf16")]
    cmd = ["--params", str(project_root / "params.yaml"), *(a for kv in sets for a in ("-S", kv)),
           "evaluate", "--task", "denoise", "--model", "nafnet", "--strategy", "full"]
    cuda = torch.cuda.is_available()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = runner.invoke(app, cmd)
    assert result.exit_code == 0, result.output
    # off CUDA the user is told the bf16 asked for does not apply (and the JSON says fp32)
    assert any("autocast is used on CUDA only" in str(w.message) for w in caught) != cuda
    assert calls and all(
        (c["tile"], c["overlap"], c["batch"], c["autocast"], c["tf32"]) == (32, 8, 2, "bf16", True) for c in calls
    )
    metrics = json.loads((tmp_path / "results/eval/denoise/nafnet/full/provenance.json").read_text())
    assert metrics["precision"] == ("bf16" if cuda else "fp32")  # bf16 autocast and TF32 are CUDA-only
    assert f"({metrics['precision']})" in result.output
    assert (tmp_path / "results/eval/denoise/nafnet/full/per_image.csv").exists()

    result = runner.invoke(app, ["--params", str(project_root / "params.yaml"), "-S", "profiles.demo.evaluate.tf32=true",
                                 "evaluate", "--task", "denoise", "--model", "nafnet", "--strategy", "full"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "results/eval/denoise/nafnet/full/provenance.json").read_text())
    assert metrics["precision"] == ("tf32" if cuda else "fp32")


def test_evaluate_bad_precision_names_the_key(project_root, monkeypatch):
    monkeypatch.chdir(project_root)
    result = runner.invoke(app, ["-S", "profiles.paper.evaluate.autocast=fp16x", "evaluate", "--task", "denoise",
                                 "--model", "identity"])
    assert result.exit_code == 1
    assert "profiles.paper.evaluate.autocast: 'fp16x' is not allowed; choose from ['bf16']" in result.output


def test_pretraining_out_of_memory_names_its_own_batch_and_key(project_root, monkeypatch):
    import torch

    import restorebench.pretrain.dcpt as dcpt_module

    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB.")

    monkeypatch.chdir(project_root)
    monkeypatch.setattr(dcpt_module, "pretrain_dcpt", oom)
    result = runner.invoke(app, ["pretrain", "--method", "dcpt", "--model", "nafnet", "--task", "denoise"])
    assert result.exit_code == 1
    assert "pretrain dcpt/nafnet (denoise): out of GPU memory at batch" in result.output
    assert "lower profiles.demo.pretrain.dcpt.batch" in result.output and "Traceback" not in result.output
