"""`dvc repro` against `snakemake --cores 1` on the same grid, in one run: wall time, the time inside the
restorebench commands, the rest (the orchestrator's own bookkeeping per stage), and dvc.lock's size.

    python benchmarks/orchestrators.py                 # the demo grid (params.yaml as it is): ~2 x 10 min
    python benchmarks/orchestrators.py --small         # denoise x {nafnet, restormer} x full, 4 steps: ~2 min
    python benchmarks/orchestrators.py --stub          # the demo grid, each command a stand-in: bookkeeping only

Each orchestrator builds results/table.csv in its own fresh copy of the tracked files (Snakemake: `snakemake
--cores 1 results/table.csv`; DVC: `dvc repro aggregate` in a git repo). A wrapper `restorebench` first on
PATH records each command's start and end, so "commands" is the sum of the stages' own run times and
"overhead" what the orchestrator adds around them. Both run one job at a time with one torch thread each
(Snakemake's rules have threads 1, dvc.yaml's commands pass --threads 1), one after the other on this
machine: compare the ratio, not the seconds (a shared machine's load moves both). With --stub each stage's
command is a stand-in that writes the job's declared outputs and trains nothing, so the wall time is each
orchestrator's own cost per stage (plus one Python start and params load per job, the same for both).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SMALL = {"datasets": ["sidd"], "tasks": ["denoise"], "models": ["nafnet", "restormer"], "strategies": ["full"],
         "pretrain_models": {"ipt": [], "dcpt": []}}  # fmt: skip

STUB = """#!{python}
# a stand-in for restorebench: writes the outputs the pipeline declares for this command, trains nothing
import json, subprocess, sys, time
from pathlib import Path
start = time.time()
argv = sys.argv[1:]
if argv[:2] == ["pipeline", "code"]:
    rc = subprocess.call([{real!r}, *argv])
else:
    from restorebench import pipeline
    overrides, rest = [], []
    it = iter(argv)
    for a in it:
        if a == "-S":
            overrides.append(next(it))
        elif a == "--threads":
            next(it)
        else:
            rest.append(a)
    args = " ".join(rest)
    (stage,) = [s for s in pipeline.load("params.yaml", overrides).stages() if s.args == args]
    for _, out in stage.outs:
        path = Path(out.path)
        if out.directory:
            path.mkdir(parents=True, exist_ok=True)
            (path / "stub.txt").write_text(stage.name)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(stage.name)
    rc = 0
with open({log!r}, "a") as f:
    f.write(json.dumps({{"argv": argv, "start": start, "end": time.time(), "rc": rc}}) + "\\n")
sys.exit(rc)
"""

WRAPPER = """#!{python}
import json, os, subprocess, sys, time
start = time.time()
rc = subprocess.call([{real!r}, *sys.argv[1:]])
with open({log!r}, "a") as f:
    f.write(json.dumps({{"argv": sys.argv[1:], "start": start, "end": time.time(), "rc": rc}}) + "\\n")
sys.exit(rc)
"""


def _copy(dest: Path, small: bool) -> Path:
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for f in files:
        if (ROOT / f).is_file():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, dest / f)
    if small:
        import yaml

        params = yaml.safe_load((dest / "params.yaml").read_text())
        params.update(SMALL)
        params["profiles"]["demo"]["train"]["steps"] = 4
        (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        env = dict(os.environ, PYTHONPATH=str(dest / "src"))
        subprocess.run([str(BIN / "restorebench"), "pipeline", "dvc", "-o", "dvc.yaml"], cwd=dest, env=env, check=True)
    return dest


def _env(work: Path, log: Path, stub: bool = False) -> dict[str, str]:
    wrap = work / "wrapper"
    wrap.mkdir(exist_ok=True)
    script = wrap / "restorebench"
    script.write_text((STUB if stub else WRAPPER).format(python=sys.executable, real=str(BIN / "restorebench"),
                                                         log=str(log)))
    script.chmod(0o755)
    path = f"{wrap}{os.pathsep}{BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    return dict(os.environ, PATH=path, OMP_NUM_THREADS="1", DVC_NO_ANALYTICS="1", PYTHONPATH=str(work / "repo/src"))


def _measure(name: str, cmd: list[str], repo: Path, env: dict[str, str], log: Path) -> dict:
    start = time.time()
    out = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True)
    wall = time.time() - start
    if out.returncode != 0:
        raise SystemExit(f"{name}: {' '.join(cmd)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    jobs = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    stages = [j for j in jobs if j["argv"][:2] != ["pipeline", "code"]]
    inside = sum(j["end"] - j["start"] for j in jobs)
    gaps = [b["start"] - a["end"] for a, b in zip(jobs, jobs[1:], strict=False)]
    return {"orchestrator": name, "wall_s": wall, "commands_s": inside, "overhead_s": wall - inside,
            "stages": len(stages), "overhead_per_stage_s": (wall - inside) / max(len(jobs), 1),
            "median_gap_s": statistics.median(gaps) if gaps else 0.0}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true", help="a 2-cell grid (a smoke run)")
    ap.add_argument("--stub", action="store_true", help="stand-in commands: the orchestrators' own cost only")
    ap.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    ap.add_argument("--keep", type=Path, default=None, help="copy each run's results/table.csv and dvc.lock here")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="rb-orch-") as tmp:
        for name in ("snakemake", "dvc"):
            work = Path(tmp) / name
            repo = _copy(work / "repo", args.small)
            log = work / "commands.jsonl"
            env = _env(work, log, args.stub)
            if name == "snakemake":
                rows.append(_measure(name, [str(BIN / "snakemake"), "--cores", "1", "results/table.csv"], repo, env, log))
            else:
                git = ["git", "-c", "user.email=b@b", "-c", "user.name=b"]
                subprocess.run([*git, "init", "-q", "-b", "main"], cwd=repo, check=True)
                subprocess.run([*git, "add", "-A"], cwd=repo, check=True)
                subprocess.run([*git, "commit", "-qm", "bench"], cwd=repo, check=True)
                row = _measure(name, [str(BIN / "dvc"), "repro", "aggregate"], repo, env, log)
                row["dvc_lock_lines"] = len((repo / "dvc.lock").read_text().splitlines())
                row["dvc_yaml_lines"] = len((repo / "dvc.yaml").read_text().splitlines())
                start = time.time()
                subprocess.run([str(BIN / "dvc"), "status"], cwd=repo, env=env, capture_output=True, check=True)
                row["dvc_status_s"] = time.time() - start
                rows.append(row)
            if args.keep:
                args.keep.mkdir(parents=True, exist_ok=True)
                if not args.stub:
                    shutil.copy2(repo / "results/table.csv", args.keep / f"table_{name}.csv")
                if (repo / "dvc.lock").exists():
                    shutil.copy2(repo / "dvc.lock", args.keep / "dvc.lock")
    snake, dvc = rows
    print(f"{'':22}{'snakemake':>12}{'dvc':>12}")
    for key in ("wall_s", "commands_s", "overhead_s", "stages", "overhead_per_stage_s", "median_gap_s"):
        print(f"{key:22}{snake[key]:>12.1f}{dvc[key]:>12.1f}")
    print(f"dvc repro / snakemake --cores 1 (wall): {dvc['wall_s'] / snake['wall_s']:.2f}x")
    print(f"dvc.lock: {dvc['dvc_lock_lines']} lines; dvc.yaml: {dvc['dvc_yaml_lines']} lines; "
          f"dvc status afterwards: {dvc['dvc_status_s']:.1f} s")  # fmt: skip
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
