"""The CLI as a user meets it: choices in --help, --version, `config show SECTION`, `models` with a filter,
sentences instead of dicts, and one line for a known failure (weights of another profile included)."""

from __future__ import annotations

import json

import click
import pytest
import typer
from typer.testing import CliRunner

from restorebench import __version__
from restorebench.cli import app
from restorebench.cli_support import hoist_global_options
from restorebench.config import MODEL_NAMES
from restorebench.errors import RestorebenchError
from tests.helpers.cells import finetuned_cell

runner = CliRunner()


@pytest.mark.parametrize(
    ("command", "choices"),
    [
        ("finetune", ["[denoise | deblur]", "[none | ipt | dcpt | scratch]", "frozen", "llrd", *MODEL_NAMES]),
        ("evaluate", ["identity", "none"]),
        ("validate", ["[sidd | gopro | imagenet]"]),
        ("pretrain", ["[ipt | dcpt]"]),
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


def test_models_filter_prints_rows_of_the_named_models_only(project_root, monkeypatch):
    monkeypatch.chdir(project_root)
    result = runner.invoke(app, ["models", "nafnet", "restormer"])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    rows = [r for r in lines if not r.startswith(("from ckpt:", "("))]  # the legend and notes follow the rows
    assert rows[0].split()[:3] == ["model", "variant", "params"] and "from ckpt" in rows[0]
    assert {r.split()[0] for r in rows[1:]} == {"nafnet", "restormer"}
    assert lines[-1].startswith("from ckpt: share of the parameters the checkpoint it loads fills")
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
    line = _one_error_line(result.output)
    assert line.startswith("error: --dataset: 'imagenet' has no paired training set for prepare") and \
        "packed by `restorebench degrade`" in line and "(run `restorebench degrade`" in line
    result = runner.invoke(app, [*params, "prepare", "--dataset", "gopr"])
    assert "--dataset: 'gopr' is not allowed; choose from ['gopro', 'sidd']; did you mean 'gopro'?" in (
        _one_error_line(result.output))


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


# ---------------------------------------------------------------------------------------------- papercuts


def _commands(group: click.Command, path: tuple[str, ...] = ()):
    """Every subcommand of the app as (its words, the click command)."""
    for name, command in getattr(group, "commands", {}).items():
        if hasattr(command, "commands"):
            yield from _commands(command, (*path, name))
        else:
            yield (*path, name), command


def test_global_options_work_after_the_subcommand(project_root, monkeypatch):
    monkeypatch.chdir(project_root)
    monkeypatch.setenv("RESTOREBENCH_DEBUG", "0")  # --debug sets it for the process; restored after the test
    result = runner.invoke(app, ["config", "show", "train", "-S", "profile=paper"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[1] == "  steps: 200000"  # the paper profile's, not the demo's 80
    result = runner.invoke(app, ["config", "show", "evaluat"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    result = runner.invoke(app, ["config", "show", "evaluat", "--debug"])
    assert isinstance(result.exception, RestorebenchError) and "did you mean 'evaluate'" in str(result.exception)
    monkeypatch.setenv("RESTOREBENCH_DEBUG", "0")
    result = runner.invoke(app, ["config", "show", "--params", "nowhere.yaml"])
    assert result.exit_code == 1 and "nowhere.yaml: params file not found" in _one_error_line(result.output)


def test_hoisting_keeps_values_and_stops_at_a_double_dash():
    options = {"--debug": False, "--params": True, "--set": True, "-S": True, "--threads": True}
    args = ["--threads", "2", "restore", "a.png", "--debug", "-Sprofile=paper", "--params=p.yaml", "b",
            "--set", "seed=1", "--", "--debug"]
    assert hoist_global_options(args, options) == [
        "--threads", "2", "--debug", "-Sprofile=paper", "--params=p.yaml", "--set", "seed=1",
        "restore", "a.png", "b", "--", "--debug"]  # fmt: skip


def test_no_subcommand_reuses_a_global_option_name():
    main = typer.main.get_command(app)
    global_names = set(main.global_options())
    assert {"--debug", "--params", "--set", "-S", "--threads"} <= global_names
    for words, command in _commands(main):
        own = {name for p in command.params for name in (*p.opts, *p.secondary_opts)}
        assert not own & global_names, (words, own & global_names)


def test_help_at_80_columns_has_whole_choices_and_no_flag_placeholder(monkeypatch):
    import typer.rich_utils

    monkeypatch.setattr(typer.rich_utils, "MAX_WIDTH", 80)  # read from TERMINAL_WIDTH once, at its import
    main = typer.main.get_command(app)
    for words, command in _commands(main):
        result = runner.invoke(app, [*words, "--help"], env={"COLUMNS": "80", "TERMINAL_WIDTH": "80"})
        assert result.exit_code == 0, (words, result.output)
        assert "<bool>" not in result.output, words
        assert max(len(line) for line in result.output.splitlines()) <= 80, words
        for param in command.params:
            if param.metavar and param.metavar.startswith("["):
                for choice in param.metavar.strip("[]").split(" | "):
                    assert choice in result.output, (words, choice)  # never folded across two lines


def test_prepare_offers_only_its_datasets_and_evaluate_seed_says_what_it_scores():
    wide = {"COLUMNS": "300", "TERMINAL_WIDTH": "300"}
    result = runner.invoke(app, ["prepare", "--help"], env=wide)
    assert "[sidd | gopro]" in result.output and "imagenet" not in result.output.split("Options")[1]
    seed = next(line for line in runner.invoke(app, ["evaluate", "--help"], env=wide).output.splitlines()
                if "--seed" in line)  # fmt: skip
    assert "scores the cell trained with that seed" in seed and "trains" not in seed


def test_near_misses_get_a_did_you_mean(project_root, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text((project_root / "params.yaml").read_text())
    weights = tmp_path / "runs/finetune/denoise/nafnet/full/model.safetensors"
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"")
    image = tmp_path / "x.png"
    image.write_bytes(b"")
    restore = ["restore", str(image), str(tmp_path / "out"), "--task", "denoise", "--model", "nafnet"]
    cases = {
        ("evaluate", "--task", "denoise", "--model", "nafnet", "--strategy", "ful"):
            "error: --strategy: 'ful' is not allowed; choose from ['frozen', 'full', 'full_lowlr', 'llrd', 'none', "
            "'official']; did you mean 'full'?",
        (*restore, "--cell", "ful"):
            "error: --cell: 'ful' is not a grid cell; did you mean 'full'? (trained here: ['full'])",
        (*restore, "--cell", "dcpt-ful"): "error: --cell: 'dcpt-ful' is not a grid cell; did you mean 'dcpt-full'?",
        (*restore, "--cell", "frozen"):
            "error: runs/finetune/denoise/nafnet/frozen/model.safetensors: no finetuned weights; trained cells of "
            "denoise/nafnet: ['full'] (run `restorebench finetune",
        ("restore", str(image), "out", "--task", "denoise", "--model", "nafnett"): "did you mean 'nafnet'?",
        ("restore", str(image), "out", "--task", "denoise", "--model", "nafnet", "--task", "denoice"):
            "error: --task: 'denoice' is not allowed; choose from ['deblur', 'denoise']; did you mean 'denoise'?",
    }  # fmt: skip
    for args, expected in cases.items():
        result = runner.invoke(app, list(args))
        assert result.exit_code == 1, args
        assert _one_error_line(result.output).startswith(expected) or expected in result.output, (args, result.output)


def test_restore_outside_a_project_says_so_and_how_to_pass_weights(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x.png").write_bytes(b"")
    for extra in ([], ["--task", "denoise", "--model", "nafnet"]):
        result = runner.invoke(app, ["restore", "x.png", "out.png", *extra])
        assert result.exit_code == 1
        line = _one_error_line(result.output)
        assert f"error: {tmp_path.resolve()}: no restorebench project here (no params.yaml, no runs/finetune/)" in line
        assert "--weights PATH: a finetuned run folder" in line and "no finetuned weights" not in line


def test_config_show_says_what_a_zero_means(project_root, monkeypatch):
    from restorebench.config import load_config

    monkeypatch.chdir(project_root)
    demo = load_config(project_root / "params.yaml")
    assert demo.train.models["nafnet"].steps == 0  # the recipe takes the profile's train.steps
    result = runner.invoke(app, ["config", "show", "train"])
    lines = result.output.splitlines()
    nafnet = lines.index("    nafnet:")
    steps = next(line for line in lines[nafnet:] if line.strip().startswith("steps:"))
    assert steps == f"      steps: 0  # 0: train.steps (stages, when given, set it); here {demo.train.steps}"
    assert "      grad_clip: 0.0  # 0: off" in lines
    paper = load_config(project_root / "params.yaml", ["profile=paper"])
    progressive = [m for m, r in paper.train.models.items() if r.stages and r.steps == 0]
    assert progressive, "the paper profile has a progressive recipe (Restormer's)"
    result = runner.invoke(app, ["config", "show", "train", "-S", "profile=paper"])
    lines = result.output.splitlines()
    start = lines.index(f"    {progressive[0]}:")
    steps = next(line for line in lines[start:] if line.strip().startswith("steps:"))
    total = sum(s.iters for s in paper.train.models[progressive[0]].stages)
    assert steps == f"      steps: 0  # set by its stages: {total} steps"


def test_models_reports_what_the_active_profile_loads(project_root, monkeypatch, tmp_path):
    from restorebench.config import load_config
    from restorebench.models.summary import summarize

    def rows(output: str) -> dict[tuple[str, str], list[str]]:
        lines = [r for r in output.strip().splitlines()[1:] if not r.startswith(("from ckpt:", "("))]
        return {(r.split()[0], r.split()[1]): r.split("  ")[-1].strip() for r in lines} | {
            ("share", r.split()[0], r.split()[1]): r.split()[6] for r in lines}

    monkeypatch.chdir(project_root)
    random_init = "profiles.demo.pretrained.swin_upernet=null"  # (the demo names its own checkpoint)
    no_scratch = ["pretrain_models.scratch=[]"]  # (no scratch control for it then)
    demo = load_config(project_root / "params.yaml", [random_init, *no_scratch])
    assert demo.pretrained["swin_upernet"] is None and demo.variants["swin_upernet"]["denoise"] == "demo"
    result = runner.invoke(app, ["models", "swin_upernet", "nafnet", "-S", random_init,
                                 *[arg for item in no_scratch for arg in ("-S", item)]])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0].endswith("from ckpt  loads (profile demo)")
    got = rows(result.output)
    # a random init fills nothing from a checkpoint, though the variant could load one
    assert summarize("swin_upernet", "demo", macs=False)["from_checkpoint"] > 0.5
    assert got["swin_upernet", "demo"] == "random init" and got["share", "swin_upernet", "demo"] == "-"
    assert got["nafnet", "demo"] == "random init" and got["swin_upernet", "swin-t"] == "- (not used)"
    # a checkpoint named in the profile: its source and the share it fills
    result = runner.invoke(app, ["models", "swin_upernet", "-S", "profiles.demo.pretrained.swin_upernet=ckpt/seg"])
    got = rows(result.output)
    share = summarize("swin_upernet", "demo", macs=False)["from_checkpoint"]
    assert got["swin_upernet", "demo"] == "ckpt/seg" and got["share", "swin_upernet", "demo"] == f"{100 * share:.1f}%"
    paper = load_config(project_root / "params.yaml", ["profile=paper"])
    result = runner.invoke(app, ["-S", "profile=paper", "models", "swin_upernet"])
    got = rows(result.output)
    variant = paper.variants["swin_upernet"]["denoise"]
    assert got["swin_upernet", variant] == paper.pretrained["swin_upernet"] and got["swin_upernet", "demo"] == "- (not used)"
    # outside a project there is no profile: each variant's possible share, and the legend says so
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["models", "swin_upernet"])
    got = rows(result.output)
    assert got["share", "swin_upernet", "demo"] == f"{100 * share:.1f}%"
    assert "would fill (no params.yaml here: no profile)" in result.output
