"""The Slurm profile (workflow/profiles/slurm): it parses as Snakemake parses it, names only rules the workflow
has, and a dry run through it plans the whole grid with a GPU, memory and a time limit on every job. Dry runs
only: nothing is submitted (no sbatch needed) and they run in a copy of the workflow, not in the checkout."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest
import yaml

from tests.helpers.project import BIN, copy_project, run, tool_env

PROFILE = Path("workflow/profiles/slurm")
WORKFLOW_FILES = ("Snakefile", "params.yaml", "workflow", "src")  # rules list the source files as inputs
GPU_RULES = {"finetune", "pretrain_ipt", "pretrain_dcpt", "evaluate", "evaluate_official"}
SLURM_ENV = ("RESTOREBENCH_SLURM_ACCOUNT", "RESTOREBENCH_SLURM_PARTITION", "RESTOREBENCH_SLURM_GPU_PARTITION")


def _load_profile(root: Path, monkeypatch: pytest.MonkeyPatch, **env: str) -> dict:
    """The profile as Snakemake reads it: YTE-templated YAML, rendered with `env` as the environment."""
    import yte

    for name in SLURM_ENV:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with open(root / PROFILE / "config.yaml") as f:
        return yte.process_yaml(f, require_use_yte=True)


def _plan(workdir: Path, *args: str, **env: str) -> dict[str, list[dict]]:
    """{rule: [{"wildcards": {...}, "resources": {...}}, ...]} from `snakemake -n` in `workdir`."""
    clean = {k: v for k, v in tool_env().items() if k not in SLURM_ENV}
    out = run([str(BIN / "snakemake"), "-n", *args], workdir, env={**clean, **env})
    assert "This was a dry-run" in out
    jobs: dict[str, list[dict]] = {}
    for block in re.split(r"\n(?=\[[^\n]*\]\n(?:local)?rule )", out):
        rule = re.search(r"^(?:local)?rule (\w+):", block, re.M)
        if not rule:
            continue
        fields = {}
        for name in ("wildcards", "resources"):
            found = re.search(rf"^\s+{name}: (.*)$", block, re.M)
            fields[name] = dict(kv.split("=", 1) for kv in found.group(1).split(", ")) if found else {}
        jobs.setdefault(rule.group(1), []).append(fields)
    return jobs


@pytest.fixture(scope="module")
def workdir(project_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the workflow with no outputs, so a dry run plans every job (the checkout may hold results)."""
    return copy_project(project_root, tmp_path_factory.mktemp("slurm"), WORKFLOW_FILES)


def test_profile_keys(project_root, monkeypatch):
    profile = _load_profile(project_root, monkeypatch)
    assert profile["executor"] == "slurm"
    assert profile["jobs"] >= 1
    assert profile["retries"] >= 1  # a preempted or timed-out finetune is resubmitted and resumes
    assert profile["rerun-incomplete"] is True
    assert profile["latency-wait"] >= 30
    assert profile["slurm-requeue"] is True
    defaults = profile["default-resources"]
    assert defaults["mem_mb"] > 0 and defaults["runtime"] > 0
    assert "slurm_account" not in defaults and "slurm_partition" not in defaults  # left to the cluster
    rules = profile["set-resources"]
    for rule in GPU_RULES:
        assert rules[rule]["gpu"] == 1, rule
        assert "gres" not in rules[rule]  # the plugin rejects gpu and gres together
    for rule, res in rules.items():
        assert isinstance(res["runtime"], int) and isinstance(res["mem_mb"], int), rule  # minutes, MB
        if rule not in GPU_RULES:
            assert "gpu" not in res, f"{rule} is a CPU rule"
    assert rules["evaluate"]["runtime"] < rules["finetune"]["runtime"]
    # `restorebench --threads` gets the rule's threads; they must match the CPUs Slurm grants
    assert set(profile["set-threads"]) == set(rules)
    for rule, threads in profile["set-threads"].items():
        assert rules[rule]["cpus_per_task"] == threads, rule


def test_profile_takes_account_and_partitions_from_the_environment(project_root, monkeypatch):
    profile = _load_profile(
        project_root,
        monkeypatch,
        RESTOREBENCH_SLURM_ACCOUNT="proj42",
        RESTOREBENCH_SLURM_PARTITION="cpu",
        RESTOREBENCH_SLURM_GPU_PARTITION="gpu-a100",
    )
    assert profile["default-resources"]["slurm_account"] == "proj42"
    assert profile["default-resources"]["slurm_partition"] == "cpu"
    for rule, res in profile["set-resources"].items():
        assert res.get("slurm_partition", "cpu") == ("gpu-a100" if rule in GPU_RULES else "cpu"), rule
    # no GPU partition given: the GPU rules use the CPU one
    profile = _load_profile(project_root, monkeypatch, RESTOREBENCH_SLURM_PARTITION="shared")
    assert {profile["set-resources"][rule]["slurm_partition"] for rule in GPU_RULES} == {"shared"}


def test_profile_names_only_workflow_rules(project_root, workdir, monkeypatch):
    profile = _load_profile(project_root, monkeypatch)
    out = run([str(BIN / "snakemake"), "--list-rules"], workdir)
    rules = set(out.split())
    named = set(profile["set-resources"]) | set(profile["set-threads"])
    assert named <= rules, f"not in the workflow: {sorted(named - rules)}"
    assert {"fetch", "validate", "prepare", "degrade", "finetune", "evaluate"} <= named


def test_every_gpu_rule_gets_a_gpu_on_the_cluster(project_root, workdir, monkeypatch):
    """A rule declaring `resources: gpu` in the workflow (all targets, no profile) is a GPU rule in the profile."""
    profile = _load_profile(project_root, monkeypatch)
    local = _plan(workdir, "--cores", "1")
    declared = {rule for rule, jobs in local.items() if any("gpu" in job["resources"] for job in jobs)}
    assert "finetune" in declared
    missing = {rule for rule in declared if profile["set-resources"].get(rule, {}).get("gpu") != 1}
    assert not missing, (
        f"declare gpu in the workflow but get no GPU from the Slurm profile: {sorted(missing)}"
    )


@pytest.mark.parametrize("profile_name", ["demo", "paper"])
def test_dry_run_plans_the_whole_grid(project_root, workdir, profile_name):
    params = yaml.safe_load((project_root / "params.yaml").read_text())
    plan = _plan(
        workdir, "--profile", str(PROFILE), "results/table.csv", "--config", f"profile={profile_name}"
    )
    grid = set(itertools.product(params["tasks"], params["models"], params["strategies"]))
    pretrained = {(t, m, f"{p}-{s}") for p, models in params["pretrain_models"].items()
                  for t, m, s in itertools.product(params["tasks"], models, params["pretrain_strategies"])}
    for rule in ("finetune", "evaluate"):
        cells = {(j["wildcards"]["task"], j["wildcards"]["model"], j["wildcards"]["cell"]) for j in plan[rule]}
        assert cells == grid | pretrained, f"{rule}: missing {sorted(grid | pretrained - cells)}"
    assert len(plan["pretrain_dcpt"]) == len(params["tasks"]) * len(params["pretrain_models"]["dcpt"])
    assert len(plan["pretrain_ipt"]) == 1
    assert len(plan["evaluate"]) == len(plan["finetune"])  # every trained cell is scored
    assert {j["wildcards"]["dataset"] for j in plan["fetch"]} == set(params["datasets"])
    for rule, jobs in plan.items():
        for job in jobs:
            res = job["resources"]
            # the plugin warns and falls back to cluster defaults when these are missing
            assert int(res["runtime"]) > 0 and int(res["mem_mb"]) > 0, (rule, res)
            assert res.get("gpu") == ("1" if rule in GPU_RULES else None), (rule, res)
            assert "slurm_partition" not in res and "slurm_account" not in res  # environment unset
    finetune = plan["finetune"][0]["resources"]
    assert int(finetune["runtime"]) >= 12 * 60 and int(finetune["cpus_per_task"]) >= 4
    assert not any((workdir / d).exists() for d in ("data", "runs", "results", "metrics"))  # planned, not run


def test_dry_run_sends_gpu_rules_to_the_gpu_partition(workdir):
    env = {
        "RESTOREBENCH_SLURM_ACCOUNT": "proj42",
        "RESTOREBENCH_SLURM_PARTITION": "cpu",
        "RESTOREBENCH_SLURM_GPU_PARTITION": "gpu-a100",
    }
    plan = _plan(workdir, "--profile", str(PROFILE), "results/table.csv", **env)
    for rule, jobs in plan.items():
        for job in jobs:
            assert job["resources"]["slurm_account"] == "proj42"
            assert job["resources"]["slurm_partition"] == ("gpu-a100" if rule in GPU_RULES else "cpu"), rule
