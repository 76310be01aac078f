"""Orchestration overhead (the orchestration part of run_all.py): how long Snakemake and DVC take to plan or
check the paper grid before any stage runs, in a temporary copy of the repository.

    python benchmarks/run_all.py --only orchestration [--repeats 3]
"""

from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from restorebench.config import use_profile

ROOT = Path(__file__).resolve().parents[1]
TARGET_ORCHESTRATION_S = 5.0
OUTPUT_ROOTS = ("data/", "metrics/", "results/", "runs/", "logs/")  # pipeline outputs, not copied


def section(*, repeats: int = 3, quick: bool = False) -> dict:
    """Planning overhead of both orchestrators on the paper grid, in a temporary copy of the repository.

    The copy holds the files git sees (tracked, plus untracked files that are not ignored) minus pipeline
    outputs, with params.yaml set to the paper profile and its grid (`restorebench profile paper`: DVC has no
    `-S` for repro/status), and its own `git init` (DVC needs a git repository). Measured, each the
    median of --repeats runs of the whole command (interpreter start-up included):
      fresh: `snakemake -n results/table.csv` (plans every job of the grid) and
             `dvc status` (nothing built yet).
      built: every DVC output replaced by a placeholder file and committed (`dvc commit -f`), so the grid is
             up to date; then `dvc repro` (a real no-op: every stage checked, none run) and `dvc status`.
             Placeholders are tiny, so a real paper-scale no-op also pays for stat-ing the datasets' files,
             which this does not measure.
    """
    repeats = 1 if quick else repeats
    bindir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}", "DVC_NO_ANALYTICS": "1"}
    print(f"\n== orchestration: paper grid in a temporary copy, median of {repeats} (target < "
          f"{TARGET_ORCHESTRATION_S:.0f} s)", flush=True)
    if shutil.which("git") is None or not (bindir / "snakemake").exists() or not (bindir / "dvc").exists():
        print("  skipped: needs git, and snakemake and dvc beside this Python", flush=True)
        return {"status": "skipped", "reason": "needs git, snakemake and dvc"}

    def run(cmd: list[str], cwd: Path) -> tuple[float, str]:
        t0 = time.perf_counter()
        p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - t0
        if p.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}): {(p.stderr or p.stdout)[-800:]}")
        return seconds, p.stdout + p.stderr

    def timed(name: str, cmd: list[str], cwd: Path) -> dict:
        times, text = [], ""
        for _ in range(repeats):
            seconds, text = run(cmd, cwd)
            times.append(seconds)
        row = {"command": " ".join(cmd), "median_s": statistics.median(times), "first_s": times[0],
               "times_s": times}
        jobs = re.search(r"^total\s+(\d+)", text, re.M)
        if jobs:
            row["jobs_planned"] = int(jobs.group(1))
        if "dvc repro" in row["command"]:
            row["stages_run"] = text.count("Running stage")
            row["stages_skipped"] = text.count("didn't change, skipping")
        print(f"  {name:<20} {row['median_s']:6.2f} s (first {times[0]:.2f} s)  {row['command']}"
              + (f"  [{row['jobs_planned']} jobs]" if "jobs_planned" in row else "")
              + (f"  [{row['stages_skipped']} stages checked, {row['stages_run']} run]" if "stages_run" in row
                 else ""), flush=True)
        return row

    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split("\0")
    rows: dict = {}
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="restorebench-orch-") as tmp:
        repo = Path(tmp)
        for rel in files:
            if rel and not rel.startswith(OUTPUT_ROOTS) and (ROOT / rel).is_file():
                (repo / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / rel, repo / rel)
        use_profile(repo / "params.yaml", "paper")  # the paper profile and its whole grid
        run(["git", "init", "-q"], repo)
        snake = [str(bindir / "snakemake"), "-n", "results/table.csv"]
        dvc = str(bindir / "dvc")
        for key, name, cmd in (("snakemake_fresh", "snakemake -n, fresh", snake),
                               ("dvc_status_fresh", "dvc status, fresh", [dvc, "status"])):
            try:
                rows[key] = timed(name, cmd, repo)
            except RuntimeError as err:
                problems.append(f"{name}: {err}")
        try:
            setup_s = _build_placeholders(repo, run, dvc)
            rows["dvc_repro_noop"] = timed("dvc repro, no-op", [dvc, "repro"], repo)
            rows["dvc_status_built"] = timed("dvc status, built", [dvc, "status"], repo)
        except RuntimeError as err:
            setup_s = None
            problems.append(f"dvc on the built grid: {err}")
    if rows.get("dvc_repro_noop", {}).get("stages_run"):
        problems.append("dvc repro ran stages on the placeholder grid: the no-op time is not a no-op")
        rows.pop("dvc_repro_noop")
    for p in problems:
        print(f"  PROBLEM: {p}", flush=True)
    checks = {"snakemake -n (paper grid)": rows.get("snakemake_fresh", {}).get("median_s"),
              "dvc repro no-op (paper grid)": rows.get("dvc_repro_noop", {}).get("median_s")}
    verdict = {k: {"seconds": v, "pass": v is not None and v < TARGET_ORCHESTRATION_S} for k, v in checks.items()}
    for k, v in verdict.items():
        took = f"{v['seconds']:.2f} s" if v["seconds"] is not None else "failed"
        print(f"  {k}: {took} -> {'PASS' if v['pass'] else 'FAIL'} (< {TARGET_ORCHESTRATION_S:.0f} s)", flush=True)
    return {"repeats": repeats, "target_s": TARGET_ORCHESTRATION_S, "placeholder_setup_s": setup_s,
            "what": section.__doc__.split("\n\n", 1)[1].strip(), "rows": rows, "verdict": verdict, "problems": problems}


def _build_placeholders(repo: Path, run, dvc: str) -> float:
    """Create a placeholder for every output of dvc.yaml (a file where the name has a suffix, else a folder
    with one file) and commit them, so that the whole grid is up to date."""
    script = (
        "from pathlib import Path\nfrom dvc.repo import Repo\n"
        "with Repo('.') as repo:\n"
        "    for stage in repo.index.stages:\n"
        "        for out in stage.outs:\n"
        "            p = Path(str(out.def_path))\n"
        "            if p.suffix:\n"
        "                p.parent.mkdir(parents=True, exist_ok=True); p.write_text('placeholder\\n')\n"
        "            else:\n"
        "                p.mkdir(parents=True, exist_ok=True); (p / 'placeholder').write_text('placeholder\\n')\n"
    )
    t0 = time.perf_counter()
    run([sys.executable, "-c", script], repo)
    run([dvc, "commit", "-f", "-q"], repo)  # a params key missing from params.yaml fails here, named
    return time.perf_counter() - t0
