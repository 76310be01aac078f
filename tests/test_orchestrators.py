"""Snakemake and DVC are two views of restorebench.pipeline: the same stages, commands and outputs; a cut
params list shrinks both plans alike; a change to one model's recipe re-runs exactly that model's stages in
both; --config entries reach the commands; the Snakefile lints clean."""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from restorebench import pipeline
from tests.helpers.dvcnames import CODE_STAGE, dvc_jobs, dvc_name
from tests.helpers.project import (
    copy_project,
    generate_dvc,
    git_commit,
    git_init,
    run,
    set_params,
    snakemake_plan,
    stage_key,
    tool_env,
)

BIN = Path(sys.executable).parent


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["DVC_NO_ANALYTICS"] = "1"
    return env


def _normalise(cmd: str) -> str:
    """`restorebench --threads 1 fetch --dataset x > log 2>&1` -> `restorebench fetch --dataset x`."""
    cmd = re.sub(r"\s*>\s*\S+\s+2>&1\s*$", "", cmd.strip())
    cmd = re.sub(r"\s--threads \d+", "", cmd)
    return " ".join(cmd.split())


def snakemake_jobs(root: Path, *extra: str) -> dict[tuple[str, frozenset[str]], str]:
    """{(rule, outputs): command} from `snakemake -n -F -p` (the default target `all`)."""
    out = subprocess.run(
        [str(BIN / "snakemake"), "-n", "-F", "-p", "--cores", "1", *extra],
        cwd=root,
        env=_env(),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    jobs = {}
    for block in re.split(r"\n(?=\[[^\n]*\]\n(?:local)?rule )", out):
        rule = re.search(r"^(?:local)?rule (\w+):", block, re.M)
        outputs = re.search(r"^\s+output: (.*)$", block, re.M)
        cmd = re.search(r"^Shell command: (.*)$", block, re.M)
        if rule and outputs:
            paths = frozenset(p.strip() for p in outputs.group(1).split(","))
            jobs[(rule.group(1), paths)] = _normalise(cmd.group(1)) if cmd else ""
    return jobs


def dvc_stages(root: Path) -> dict[tuple[str, frozenset[str]], str]:
    from dvc.repo import Repo

    stages = {}
    jobs = dvc_jobs(root / "params.yaml")
    with Repo(str(root)) as repo:
        for stage in repo.index.stages:
            if stage.name == CODE_STAGE:  # DVC's fingerprints of the sources; Snakemake lists the files
                continue
            paths = frozenset(str(out.def_path) for out in stage.outs)
            stages[(jobs[stage.name].rule, paths)] = _normalise(stage.cmd)
    return stages


def test_snakemake_and_dvc_declare_the_same_stages(project_root):
    snake = snakemake_jobs(project_root)
    dvc = dvc_stages(project_root)
    assert snake, "snakemake planned no jobs"
    assert set(snake) == set(dvc), (
        f"only in Snakefile: {sorted(set(snake) - set(dvc))}\nonly in dvc.yaml: {sorted(set(dvc) - set(snake))}"
    )
    for key, cmd in snake.items():
        assert cmd == dvc[key], f"{key}: snakemake runs {cmd!r}, dvc runs {dvc[key]!r}"


def _dvc_names(repo: Path) -> set[str]:
    out = run([str(BIN / "dvc"), "stage", "list", "--name-only"], repo)
    return set(out.split())


def _expected_names(repo: Path) -> set[str]:
    return set(dvc_jobs(repo / "params.yaml")) | {CODE_STAGE}


# Each params list cut from the study's grid (the lists that must change together changed together; the
# others stay the demo's); the ones dvc.yaml's matrix blocks follow need no regeneration (`dvc exp run -S
# 'models=[nafnet,restormer]'`)
CUTS = {
    "datasets": {"datasets": ["sidd", "gopro"], "pretrain_models": {"ipt": [], "dcpt": []}},
    "tasks": {"tasks": ["deblur"]},
    "models": {"models": ["nafnet", "restormer"], "pretrain_models": {"ipt": ["ipt"], "dcpt": ["nafnet"], "scratch": []}},
    "strategies": {"strategies": ["full", "llrd"]},
    "pretrain_models.ipt": {"pretrain_models": {"ipt": [], "dcpt": ["nafnet", "restormer"]}},
    "pretrain_models.dcpt": {"pretrain_models": {"ipt": ["ipt"], "dcpt": ["nafnet", "restormer"],
                                                 "scratch": ["swin_upernet", "swin_mask2former", "vit_adapter"]}},
    "pretrain_models.dcpt=[]": {"pretrain_models": {"ipt": ["ipt"], "dcpt": []}},  # the family goes: regenerate
    "pretrain_strategies": {"pretrain_strategies": []},
}


NO_REGENERATION = {"models", "strategies", "pretrain_models.dcpt"}


@pytest.mark.slow
@pytest.mark.parametrize("cut", list(CUTS))
def test_a_cut_params_list_shrinks_both_plans_alike(project_root, tmp_path, cut):
    """Cut one list in params.yaml: Snakemake's plan is the pipeline module's jobs, fewer than the full grid's,
    and so are DVC's stages. The lists dvc.yaml's matrix blocks follow need no regeneration (`dvc exp run -S
    'models=[nafnet,restormer]'`): DVC expands the committed file to the cut grid, plus at most the demo's
    segpretrain jobs (written one per checkpoint the profile names, whatever `models` holds). The others
    (tasks, IPT's expanded cells, datasets, an emptied family) are regenerated, as the freshness check asks."""
    repo = copy_project(project_root, tmp_path / "repo")
    full_names = _dvc_names(project_root) if (project_root / ".git").exists() else None
    set_params(repo / "params.yaml", **CUTS[cut])
    if cut not in NO_REGENERATION:
        stale = subprocess.run([str(BIN / "restorebench"), "pipeline", "dvc", "-o", "dvc.yaml", "--check"], cwd=repo,
                               env=_env(), capture_output=True, text=True).returncode != 0  # fmt: skip
        assert stale, f"{cut}: the generated dvc.yaml did not change"
        generate_dvc(repo)
    git_init(repo)
    expected = pipeline.load(repo / "params.yaml").stages()
    from restorebench.config import profile_overrides, read_params

    study = profile_overrides(read_params(project_root / "params.yaml"), "paper")[1:]  # its lists, demo profile
    full = pipeline.load(project_root / "params.yaml", study).stages()
    assert {s.name for s in expected} < {s.name for s in full}
    extra = _dvc_names(repo) - _expected_names(repo)
    assert _expected_names(repo) <= _dvc_names(repo) and all(n.startswith("segpretrain.") for n in extra), extra
    if full_names is not None:
        assert extra <= full_names
    assert set(snakemake_plan(repo)) == {stage_key(s) for s in expected}


@pytest.mark.slow
def test_seeds_repeat_the_cells_in_both_plans(project_root, tmp_path):
    """`seeds: [0, 1]` (Snakemake: --config 'seeds=[0, 1]'): both plans hold each training cell twice."""
    repo = copy_project(project_root, tmp_path / "repo")
    set_params(repo / "params.yaml", tasks=["denoise"], seeds=[0, 1])
    generate_dvc(repo)
    git_init(repo)
    expected = pipeline.load(repo / "params.yaml").stages()
    assert "finetune.denoise.nafnet.full-seed1" in {s.name for s in expected}
    assert _dvc_names(repo) == _expected_names(repo)
    assert "finetune_denoise@nafnet-full-1" in _dvc_names(repo)
    set_params(repo / "params.yaml", seeds=None)  # the same through --config
    text = (repo / "params.yaml").read_text().replace("\nseeds: null\n", "\n")
    (repo / "params.yaml").write_text(text)
    plan = snakemake_plan(repo, "--config", "seeds=[0, 1]")
    assert set(plan) == {stage_key(s) for s in expected}
    assert all("-S 'seeds=[0, 1]'" in cmd for cmd in plan.values())


TINY_STEPS = 4  # training steps of the small grid built below


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_one_models_learning_rate_reruns_that_models_stages_only(project_root, tmp_path):
    """A small grid (denoise; nafnet and restormer, full) built by each orchestrator; then NAFNet's learning
    rate changes: `dvc status` names only NAFNet's finetune, `dvc repro` re-runs NAFNet's finetune and
    evaluate, the aggregate and the report (restormer's cell stays), and `snakemake -n` plans those four.
    Then an edit of models/restormer.py re-runs restormer's two stages, the aggregate and the report in both."""
    grid = {"datasets": ["sidd"], "tasks": ["denoise"], "models": ["nafnet", "restormer"], "strategies": ["full"],
            "pretrain_models": {"ipt": [], "dcpt": []}, "profiles.demo.train.steps": TINY_STEPS,
            "profiles.demo.train.validate_every": 0}  # fmt: skip
    dvc_repo = copy_project(project_root, tmp_path / "dvc")
    set_params(dvc_repo / "params.yaml", **grid)
    generate_dvc(dvc_repo)
    snake_repo = copy_project(dvc_repo, tmp_path / "snake", ("Snakefile", "params.yaml", "workflow", "src"))
    git_init(dvc_repo)
    env = tool_env(OMP_NUM_THREADS="1")
    run([str(BIN / "dvc"), "repro"], dvc_repo, env)
    git_commit(dvc_repo, "built")
    run([str(BIN / "snakemake"), "--cores", "2"], snake_repo, env)  # the default target: table and report
    assert json.loads(run([str(BIN / "dvc"), "status", "--json"], dvc_repo, env)) == {}
    assert snakemake_plan(snake_repo, env=env) == {}

    lr = {"profiles.demo.train.models.nafnet.lr": 1.0e-3}
    for repo in (dvc_repo, snake_repo):
        set_params(repo / "params.yaml", **lr)
    finetune = dvc_name(dvc_repo / "params.yaml", "finetune.denoise.nafnet.full")
    assert set(json.loads(run([str(BIN / "dvc"), "status", "--json"], dvc_repo, env))) == {finetune}
    expected = {"finetune.denoise.nafnet.full", "evaluate.denoise.nafnet.full", "aggregate", "report"}
    out = run([str(BIN / "dvc"), "repro"], dvc_repo, env)
    jobs = dvc_jobs(dvc_repo / "params.yaml")
    assert {jobs[n].name for n in re.findall(r"^Running stage '([^']+)'", out, re.M)} == expected
    pipe = pipeline.load(snake_repo / "params.yaml")
    planned = {pipe.stage(rule, **dict(w)).name for rule, w in snakemake_plan(snake_repo, env=env)}
    assert planned == expected

    # one model's source file: exactly its stages re-run (DVC through the `code` stage's fingerprints)
    run([str(BIN / "snakemake"), "--cores", "2"], snake_repo, env)
    for repo in (dvc_repo, snake_repo):
        with open(repo / "src/restorebench/models/restormer.py", "a") as f:
            f.write("\n# an edit\n")
    expected = {"finetune.denoise.restormer.full", "evaluate.denoise.restormer.full", "aggregate", "report"}
    out = run([str(BIN / "dvc"), "repro"], dvc_repo, env)
    assert {jobs[n].name for n in re.findall(r"^Running stage '([^']+)'", out, re.M) if n != CODE_STAGE} == expected
    planned = {pipe.stage(rule, **dict(w)).name for rule, w in snakemake_plan(snake_repo, env=env)}
    assert planned == expected


def test_paper_profile_plans_the_whole_grid(project_root, tmp_path):
    """After `restorebench profile paper`, Snakemake plans the paper study's whole grid: every strategy for
    every model, DCPT for every model, IPT, the scratch controls."""
    import yaml

    from restorebench.config import use_profile

    repo = copy_project(project_root, tmp_path / "repo", ("Snakefile", "params.yaml", "workflow", "src"))
    use_profile(repo / "params.yaml", "paper")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    assert params["profile"] == "paper" and params["strategies"] == ["frozen", "full_lowlr", "full", "llrd"]
    snake = snakemake_jobs(repo)
    tasks, models = len(params["tasks"]), len(params["models"])
    plain = tasks * models * len(params["strategies"])
    per_task = sum(len(v) for v in params["pretrain_models"].values())
    # the paper grid: DCPT for every model, IPT for ipt, a scratch control for the three segmentation models
    assert per_task == models + 1 + 3
    pretrained = tasks * per_task * len(params["pretrain_strategies"])
    assert sum(rule == "finetune" for rule, _ in snake) == plain + pretrained == 58
    assert sum(rule == "evaluate" for rule, _ in snake) == plain + pretrained
    assert sum(rule == "pretrain_dcpt" for rule, _ in snake) == tasks * models
    assert sum(rule == "pretrain_ipt" for rule, _ in snake) == 1
    assert not [rule for rule, _ in snake if rule == "segpretrain"]  # the paper loads the published checkpoints


def test_every_snakemake_config_entry_reaches_the_commands(project_root, tmp_path):
    """`--config seed=5` (once re-ran jobs that then ignored it) is `-S seed=5` in every command,
    and a nested entry is flattened to its dotted key."""
    repo = copy_project(project_root, tmp_path / "repo", ("Snakefile", "params.yaml", "workflow", "src"))
    plan = snakemake_plan(repo, "-F", "--config", "seed=5", "profiles={demo: {train: {steps: 7}}}")
    assert plan and all(cmd.startswith("restorebench -S seed=5 -S profiles.demo.train.steps=7 ")
                        for cmd in plan.values())  # fmt: skip


def test_a_wrong_profile_under_snakemake_gets_the_config_message(project_root, tmp_path):
    repo = copy_project(project_root, tmp_path / "repo", ("Snakefile", "params.yaml", "workflow", "src"))
    out = subprocess.run([str(BIN / "snakemake"), "-n", "--cores", "1", "--config", "profile=papr"], cwd=repo,
                         env=_env(), capture_output=True, text=True)  # fmt: skip
    assert out.returncode != 0
    text = out.stdout + out.stderr
    assert "error: profile: 'papr' is not allowed" in text and "did you mean 'paper'?" in text, text[-2000:]
    assert "KeyError" not in text and "Traceback" not in text


def test_grid_commands_are_the_same_cells(project_root, tmp_path):
    from restorebench.config import use_profile

    repo = copy_project(project_root, tmp_path / "repo", ("Snakefile", "params.yaml", "workflow", "src"))
    use_profile(repo / "params.yaml", "paper")  # the study's grid: every strategy, DCPT for every model
    snake = {cmd for (rule, _), cmd in snakemake_jobs(repo).items() if rule == "finetune"}
    assert "restorebench finetune --task denoise --model nafnet --strategy frozen --pretrain none" in snake
    assert "restorebench finetune --task deblur --model restormer --strategy llrd --pretrain none" in snake
    assert "restorebench finetune --task deblur --model restormer --strategy full --pretrain dcpt" in snake
    assert "restorebench finetune --task denoise --model ipt --strategy full --pretrain ipt" in snake


def test_snakemake_lint_is_clean(project_root, tmp_path):
    out = subprocess.run(
        [str(BIN / "snakemake"), "--lint"], cwd=project_root, env=_env(), capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Lints for" not in out.stdout, out.stdout


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_dvc_is_initialised_in_git(project_root):
    """DVC's files are committed, its cache and machine-local config are not, it skips the venv and
    Snakemake's state when hashing, and it opens the checkout with git as its SCM (as `dvc init` leaves it)."""
    from dvc.repo import Repo

    tracked = subprocess.run(["git", "ls-files", ".dvc", ".dvcignore"], cwd=project_root, capture_output=True,
                             text=True, check=True).stdout.split()  # fmt: skip
    assert {".dvc/config", ".dvc/.gitignore", ".dvcignore"} <= set(tracked)
    assert {"/cache", "/tmp", "/config.local"} <= set((project_root / ".dvc" / ".gitignore").read_text().split())
    assert {".venv/", ".snakemake/"} <= set((project_root / ".dvcignore").read_text().split())
    with Repo(str(project_root)) as repo:
        assert type(repo.scm).__name__ == "Git" and Path(repo.root_dir) == project_root.resolve()


@pytest.mark.parametrize("profile", ["demo", "paper"])
def test_every_param_dvc_lists_is_in_params_yaml(project_root, tmp_path, profile):
    """DVC fails a stage whose listed params key is absent from params.yaml (restorebench's defaults do not
    count): every key every stage lists must be written out, in every profile."""
    import yaml
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    repo = copy_project(project_root, tmp_path / "repo")
    text = (repo / "params.yaml").read_text().replace("\nprofile: demo\n", f"\nprofile: {profile}\n", 1)
    (repo / "params.yaml").write_text(text)
    params = yaml.safe_load(text)
    git_init(repo)
    missing = set()
    with Repo(str(repo)) as dvc:
        for stage in dvc.index.stages:
            for dep in stage.deps:
                if isinstance(dep, ParamsDependency):
                    for key in dep.params:
                        node = params
                        for part in key.split("."):
                            node = node.get(part) if isinstance(node, dict) and part in node else missing
                        if node is missing:
                            missing.add(key)
    assert not missing, f"dvc.yaml lists params that params.yaml (profile {profile}) lacks: {sorted(missing)}"


# pretraining rule -> the modules whose `cfg.train.<key>` reads it runs on
PRETRAIN_MODULES = {"pretrain_ipt": ("runner.py", "ipt.py"), "pretrain_dcpt": ("runner.py", "dcpt.py")}


def train_keys_read(path: Path) -> set[str]:
    """The keys a module reads from `cfg.train`: `cfg.train.<key>`, or `<t>.<key>` in a function that binds
    `t = cfg.train`."""

    def is_train(node: ast.AST) -> bool:
        return isinstance(node, ast.Attribute) and node.attr == "train" and getattr(node.value, "id", None) == "cfg"

    keys = set()
    for fn in ast.walk(ast.parse(path.read_text())):
        if not isinstance(fn, ast.FunctionDef):
            continue
        aliases = {t.id for n in ast.walk(fn) if isinstance(n, ast.Assign) and is_train(n.value)
                   for t in n.targets if isinstance(t, ast.Name)}  # fmt: skip
        for n in ast.walk(fn):
            if isinstance(n, ast.Attribute) and (is_train(n.value) or getattr(n.value, "id", None) in aliases):
                keys.add(n.attr)
    return keys


def test_pretrain_stages_list_the_train_keys_pretraining_reads(project_root):
    """dvc.yaml's pretrain stages list, of the train section, exactly the keys pretraining reads (not the
    whole section: train.steps is finetuning's), less the operational ones that change no result."""
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    from restorebench.train.checkpoint import OPERATIONAL

    listed: dict[str, set[frozenset[str]]] = {}
    jobs = dvc_jobs(project_root / "params.yaml")
    with Repo(str(project_root)) as repo:
        for stage in repo.index.stages:
            rule = jobs[stage.name].rule if stage.name in jobs else stage.name
            if rule in PRETRAIN_MODULES:
                keys = [k for d in stage.deps if isinstance(d, ParamsDependency) for k in d.params]
                train = {k.removeprefix("profiles.demo.train").lstrip(".") or "<the whole section>"
                         for k in keys if k.startswith("profiles.demo.train")}  # fmt: skip
                listed.setdefault(rule, set()).add(frozenset(train))
    assert set(listed) == set(PRETRAIN_MODULES)
    pretrain = project_root / "src" / "restorebench" / "pretrain"
    for rule, modules in PRETRAIN_MODULES.items():
        read = set().union(*(train_keys_read(pretrain / m) for m in modules))
        assert {"amp", "ema_decay"} <= read, f"{rule}: the scan found {sorted(read)}"  # the scan works
        # + gpus: `restorebench pretrain`, like finetune, re-runs itself under torchrun on train.gpus
        expected = frozenset((read | {"gpus"}) - set(OPERATIONAL))
        assert listed[rule] == {expected}, f"{rule}: dvc.yaml lists {listed[rule]}, pretraining reads {expected}"


STUB = """#!{python}
# restorebench stand-in for `pretrain`: writes the stage's outputs, trains nothing
import sys
from pathlib import Path

args = sys.argv[1:]
if args[args.index("--method") + 1] == "ipt":
    run, metrics = Path("runs/pretrain/ipt/ipt"), Path("metrics/pretrain/ipt/ipt.json")
else:
    task, model = args[args.index("--task") + 1], args[args.index("--model") + 1]
    run, metrics = Path("runs/pretrain/dcpt", task, model), Path("metrics/pretrain/dcpt", task, model + ".json")
(run / "dvclive/plots/metrics").mkdir(parents=True, exist_ok=True)
(run / "dvclive/plots/metrics/loss.tsv").write_text("step\\tloss\\n1\\t0.5\\n")
(run / "model.safetensors").write_text("weights")
(run / "pretrain.json").write_text("{{}}")
metrics.parent.mkdir(parents=True, exist_ok=True)
metrics.write_text("{{}}")
"""


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_both_orchestrators_rerun_pretraining_only_for_its_train_keys(project_root, tmp_path):
    """After IPT and DCPT pretraining ran (a stand-in CLI), a finetuning-only change (train.steps) and
    operational ones leave both up to date in Snakemake and DVC alike; train.amp and train.deterministic
    re-run both."""
    import yaml

    repo = copy_project(project_root, tmp_path / "repo")
    git_init(repo)
    (repo / "data/store/imagenet/train").mkdir(parents=True)
    (repo / "data/store/imagenet/train/meta.json").write_text("{}")
    (repo / "runs/segmentation").mkdir(parents=True)  # dvc.yaml's DCPT template depends on the checkpoints' folder
    (repo / "runs/segmentation/README").write_text("a stand-in for the segpretrain jobs' outputs")
    stub = tmp_path / "bin" / "restorebench"
    stub.parent.mkdir()
    stub.write_text(STUB.format(python=sys.executable))
    stub.chmod(0o755)
    env = tool_env(PATH=f"{stub.parent}{os.pathsep}{tool_env()['PATH']}")
    outputs = {"pretrain_ipt": "runs/pretrain/ipt/ipt/model.safetensors",
               "pretrain_dcpt": "runs/pretrain/dcpt/denoise/nafnet/model.safetensors"}  # fmt: skip
    stages = {"pretrain_ipt": "pretrain_ipt", "pretrain_dcpt": dvc_name(repo / "params.yaml", "pretrain_dcpt.denoise.nafnet")}
    # only the pretraining rules: the store stands in for the stages upstream (and the real CLI writes the
    # sources' fingerprints, DVC's code deps)
    run([str(BIN / "dvc"), "repro", "--single-item", CODE_STAGE], repo, tool_env())
    snakemake = [str(BIN / "snakemake"), "--cores", "1", "--allowed-rules", *outputs]
    run([*snakemake, "--", *outputs.values()], repo, env)
    run([str(BIN / "dvc"), "repro", "--single-item", *stages.values()], repo, env)

    def planned() -> tuple[set[str], set[str]]:
        snake = run([*snakemake, "-n", "--", *outputs.values()], repo, env)
        dvc = json.loads(run([str(BIN / "dvc"), "status", "--json", *stages.values()], repo, env))
        return (set(re.findall(r"^(?:local)?rule (\w+):", snake, re.M)),
                {rule for rule, stage in stages.items() if stage in dvc})  # fmt: skip

    original = (repo / "params.yaml").read_text()
    assert planned() == (set(), set())
    cases = [({"steps": 123, "holdout": 0.3, "compile": True, "sync_every": 1}, set()),
             ({"amp": True}, {"pretrain_ipt", "pretrain_dcpt"}),
             ({"deterministic": False}, {"pretrain_ipt", "pretrain_dcpt"})]  # fmt: skip
    for change, expected in cases:
        params = yaml.safe_load(original)
        params["profiles"]["demo"]["train"].update(change)
        (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        assert planned() == (expected, expected), f"train.{change}: (snakemake, dvc) re-run"


def test_a_dry_run_on_a_fresh_clone_plans_every_stage_with_force(project_root, tmp_path):
    """README: on a clone with nothing built, `dvc repro --dry --force` lists every stage in order. A plain
    `--dry` stops at the first stage whose input an earlier stage would make (DVC hashes the missing input
    for its run cache, the failure in treeverse/dvc#9818); should DVC fix that, the README line can go."""
    from dvc.repo import Repo

    repo = copy_project(project_root, tmp_path / "repo")
    git_init(repo)
    with Repo(str(repo)) as dvc:
        names = {stage.name for stage in dvc.index.stages}
    out = run([str(BIN / "dvc"), "repro", "--dry", "--force"], repo, _env())
    planned = re.findall(r"^Running stage '([^']+)':", out, re.M)
    assert sorted(planned) == sorted(names) and len(planned) == len(set(planned))
    first = {name: planned.index(name) for name in planned}
    assert first["code"] < first["fetch@sidd"] < first["validate@sidd"] < first["prepare.sidd"] < first["aggregate"]
    assert not (repo / "data").exists()  # nothing ran
