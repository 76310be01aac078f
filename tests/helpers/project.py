"""A throwaway copy of the project (optionally a git repo with one commit), and commands run in it with this
venv's `restorebench`, `snakemake` and `dvc` first on PATH. Nothing here touches the real checkout's outputs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent
# what a pipeline run needs from the checkout (no data/, runs/, results/, metrics/)
PROJECT_FILES = (
    "Snakefile",
    "dvc.yaml",
    "params.yaml",
    "workflow",
    "src",
    ".dvc/config",
    ".dvc/plots",  # the Vega-Lite templates and the offline page .dvc/config names
    ".dvcignore",
    ".gitignore",
)
GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "restorebench tests",
    "GIT_AUTHOR_EMAIL": "tests@restorebench.invalid",
    "GIT_COMMITTER_NAME": "restorebench tests",
    "GIT_COMMITTER_EMAIL": "tests@restorebench.invalid",
}


def tool_env(**extra: str) -> dict[str, str]:
    """os.environ with the venv's bin first on PATH, DVC analytics off, a git identity (DVC experiments commit)."""
    return {
        **os.environ,
        **GIT_IDENTITY,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "DVC_NO_ANALYTICS": "1",
        **extra,
    }


def run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    """Run `cmd` in `cwd`; return stdout, or fail the test with the command and the tail of its output."""
    out = subprocess.run(cmd, cwd=cwd, env=env or tool_env(), capture_output=True, text=True)
    assert out.returncode == 0, (
        f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    )
    return out.stdout


def copy_project(root: Path, dest: Path, files: tuple[str, ...] = PROJECT_FILES) -> Path:
    """Copy `files` (paths relative to the checkout `root`) into `dest`, skipping caches; return `dest`."""
    dest.mkdir(parents=True, exist_ok=True)
    for item in files:
        src, dst = root / item, dest / item
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(src, dst)
    return dest


def git_init(repo: Path, message: str = "project") -> None:
    """Make `repo` a git repo on branch main with everything committed (DVC experiments need a commit)."""
    run(["git", "init", "-q", "-b", "main"], repo)
    git_commit(repo, message)


def git_commit(repo: Path, message: str) -> None:
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", message], repo)


def set_params(path: Path, **changes: object) -> None:
    """Set dotted keys (`profiles.demo.train.steps`) of the params file at `path`."""
    import yaml

    params = yaml.safe_load(path.read_text())
    for dotted, value in changes.items():
        node = params
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node[key]
        node[leaf] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def generate_dvc(repo: Path) -> None:
    """Regenerate `repo`'s dvc.yaml from its params.yaml, as a user does after changing the grid."""
    run([str(BIN / "restorebench"), "pipeline", "dvc", "-o", "dvc.yaml"], repo)


def snakemake_plan(repo: Path, *args: str, env: dict[str, str] | None = None) -> dict[tuple, str]:
    """{(rule, frozenset(wildcards)): shell command} of `snakemake -n -p` in `repo` (default target unless
    `args` names one), without the `all` rule."""
    import re

    out = run([str(BIN / "snakemake"), "-n", "-p", "--cores", "1", *args], repo, env)
    jobs = {}
    for block in re.split(r"\n(?=\[[^\n]*\]\n(?:local)?rule )", out):
        rule = re.search(r"^(?:local)?rule (\w+):", block, re.M)
        if not rule or rule.group(1) == "all":
            continue
        found = re.search(r"^\s+wildcards: (.*)$", block, re.M)
        wildcards = frozenset(tuple(kv.split("=", 1)) for kv in found.group(1).split(", ")) if found else frozenset()
        cmd = re.search(r"^Shell command: (.*)$", block, re.M)
        jobs[(rule.group(1), wildcards)] = cmd.group(1) if cmd else ""
    return jobs


def stage_key(stage) -> tuple:
    """A restorebench.pipeline.Stage as snakemake_plan keys its jobs."""
    return (stage.rule, frozenset(stage.wildcards))
