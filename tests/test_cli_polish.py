"""The CLI as a user meets it: choices in --help, --version, `config show SECTION`, `models` with a filter,
sentences instead of dicts, and one line for a known failure (weights of another profile included)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from restorebench import __version__
from restorebench.cli import app
from restorebench.config import MODEL_NAMES
from tests.helpers.cells import finetuned_cell

runner = CliRunner()


@pytest.mark.parametrize(
    ("command", "choices"),
    [
        ("finetune", ["[denoise|deblur]", "[none|ipt|dcpt]", "frozen", "llrd", *MODEL_NAMES]),
        ("evaluate", ["identity", "none"]),
        ("validate", ["[sidd|gopro|imagenet]"]),
        ("pretrain", ["[ipt|dcpt]"]),
    ],
)
def test_help_lists_the_choices(command, choices):
    result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "300", "TERMINAL_WIDTH": "300"})
    assert result.exit_code == 0, result.output
    for choice in choices:
        assert choice in result.output, choice


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"restorebench {__version__}"


def test_config_show_one_section_and_a_misspelt_one(project_root, monkeypatch):
    monkeypatch.chdir(project_root)
    result = runner.invoke(app, ["config", "show", "evaluate"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("evaluate:") and "crop_size" in result.output and "train:" not in result.output
    result = runner.invoke(app, ["config", "show", "evaluat"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        result.output.strip()
    ] and "did you mean 'evaluate'" in result.output


def test_models_filter_prints_rows_of_the_named_models_only():
    result = runner.invoke(app, ["models", "nafnet", "restormer"])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    rows = [r for r in lines if not r.startswith(("from ckpt:", "("))]  # the legend and notes follow the rows
    assert rows[0].split()[:3] == ["model", "variant", "params"] and "from ckpt" in rows[0]
    assert {r.split()[0] for r in rows[1:]} == {"nafnet", "restormer"}
    assert lines[-1].startswith("from ckpt: share of the parameters")
    nafnet = {r.split()[1]: float(r.split()[2]) for r in rows[1:] if r.startswith("nafnet")}
    assert nafnet["sidd-width32"] == pytest.approx(29.16, abs=0.01)  # counted on the meta device, as published
    result = runner.invoke(app, ["models", "nafnett"])
    assert result.exit_code == 1 and "did you mean 'nafnet'" in result.output


def _one_error_line(output: str) -> str:
    lines = output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), output
    assert "Traceback" not in output
    return lines[0]


def test_weights_of_another_profile_say_so_in_one_line(project_root, monkeypatch, tmp_path):
    from safetensors.torch import load_file, save_file

    finetuned_cell(project_root, tmp_path, monkeypatch)
    run = tmp_path / "runs/finetune/denoise/nafnet/full"
    state = load_file(run / "model.safetensors")
    wide = sorted(k for k, v in state.items() if v.ndim == 4)[0]
    state[wide] = state[wide].repeat(2, 1, 1, 1)  # a wider layer, as a larger variant has
    state.pop(sorted(state)[-1])
    save_file(state, run / "model.safetensors")
    (run / "train.json").write_text(json.dumps({"model": "nafnet", "variant": "sidd-width32", "profile": "paper"}))
    result = runner.invoke(app, ["--params", str(project_root / "params.yaml"), "evaluate", "--task", "denoise",
                                 "--model", "nafnet", "--strategy", "full"])
    assert result.exit_code == 1
    line = _one_error_line(result.output)
    assert "runs/finetune/denoise/nafnet/full/model.safetensors: trained as nafnet variant sidd-width32 " \
           "under profile paper, but profile demo builds nafnet variant demo: 1 differ in shape, 1 missing of" in line
    assert f"e.g. {wide}" in line
    assert "(evaluate under its profile (-S profile=paper) or retrain here: `restorebench -S profile=demo " \
           "finetune --task denoise --model nafnet --strategy full --pretrain none`)" in line
    assert not (tmp_path / "metrics").exists()  # nothing written


def test_missing_weights_and_a_missing_manifest_are_one_line(project_root, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    params = ["--params", str(project_root / "params.yaml"), "-S", f"profiles.demo.data.root={tmp_path / 'data'}"]
    result = runner.invoke(app, [*params, "evaluate", "--task", "deblur", "--model", "restormer", "--strategy", "full"])
    assert result.exit_code == 1
    assert "model.safetensors: no finetuned weights (run `restorebench -S profile=demo finetune" in (
        _one_error_line(result.output))
    for command in (["validate", "--dataset", "sidd"], ["prepare", "--dataset", "gopro"], ["degrade"]):
        result = runner.invoke(app, [*params, *command])
        assert result.exit_code == 1, command
        line = _one_error_line(result.output)
        assert "manifests/" in line and ": manifest not found (run `restorebench fetch --dataset" in line, line
    result = runner.invoke(app, [*params, "prepare", "--dataset", "imagenet"])
    assert "--dataset: 'imagenet' is not allowed; choose from ['gopro', 'sidd']" in _one_error_line(result.output)


def test_summaries_are_sentences():
    from restorebench.data.prepare import describe_prepare
    from restorebench.degrade.stage import describe_degrade

    stats = {"images": 12, "subimages": 480, "size": 64, "step": 48, "bytes": 11_796_480, "path": "data/store/sidd/train"}
    assert describe_prepare("sidd", stats) == (
        "prepare sidd: 12 training pairs -> 480 sub-images of 64x64 (step 48), 11.8 MB in data/store/sidd/train"
    )
    assert describe_degrade({"images": 20, "patches": 80, "tasks": 6, "path": "p", "bytes": 8_847_360}) == (
        "degrade: 20 ImageNet images -> 80 clean patches (8.8 MB), 6 task(s) synthesised per draw, in p"
    )


def test_a_preempted_run_exits_143_with_one_line(project_root, monkeypatch):
    import restorebench.train.finetune as finetune_module
    from restorebench.train.loop import Preempted

    def preempted(*args, **kwargs):
        raise Preempted("runs/finetune/denoise/nafnet/full", "SIGTERM at step 3; checkpoint x", "rerun to resume")

    monkeypatch.chdir(project_root)
    monkeypatch.setattr(finetune_module, "finetune", preempted)
    result = runner.invoke(app, ["finetune", "--task", "denoise", "--model", "nafnet", "--strategy", "full"])
    assert result.exit_code == 143
    assert _one_error_line(result.output) == (
        "error: runs/finetune/denoise/nafnet/full: SIGTERM at step 3; checkpoint x (rerun to resume)"
    )
