"""The DVC cache holds each output once (.dvc/config links outputs from the cache), and a re-run of a stage
cannot corrupt it: every writer replaces its output (restorebench.io: a new file renamed over the old name),
never writes into the file a cache link points at."""

from __future__ import annotations

import configparser
import hashlib
import os
import sys
from pathlib import Path

import pytest

from tests.helpers.project import BIN, run, tool_env

# a stage that writes its outputs the way every restorebench stage does: a file (io.write_json) and a
# folder (io.atomic_dir), both from params.yaml's `value`
WRITER = """
import sys, yaml
from restorebench import io
value = yaml.safe_load(open("params.yaml"))["value"]
io.write_json("out/result.json", {"value": value})
with io.atomic_dir("out/store") as tmp:
    (tmp / "a.bin").write_bytes(bytes([value % 256]) * 4096)
"""
# the way no stage may write: into the existing file, which is the cache's file when it is a link
IN_PLACE = "import json\nwith open('out/result.json', 'w') as f:\n    json.dump({'value': -1}, f)\n"


def _cache_files(repo: Path) -> list[Path]:
    """The cache's content files (.dvc/cache/files/md5/ab/cdef...), not its run cache or temporary files."""
    cache = repo / ".dvc" / "cache"
    files = [p for p in cache.rglob("*") if p.is_file() and not p.name.endswith(".dir")
             and not {"runs", "tmp"} & set(p.relative_to(cache).parts)]  # fmt: skip
    assert files, f"no files in {cache}"
    return files


def _corrupt(repo: Path) -> list[str]:
    """Cache files whose content no longer has the md5 their name says (DVC names them by it)."""
    bad = []
    for p in _cache_files(repo):
        name = p.parent.name + p.name
        if len(name) == 32 and hashlib.md5(p.read_bytes()).hexdigest() != name:
            bad.append(str(p.relative_to(repo)))
    return bad


def _dvc(repo: Path, *args: str) -> str:
    env = tool_env()
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parents[1] / "src"), env.get("PYTHONPATH", "")])
    return run([str(BIN / "dvc"), *args], repo, env)


@pytest.mark.slow
def test_a_rerun_keeps_every_cached_output_intact_and_checkout_restores_it(tmp_path, project_root):
    repo = tmp_path / "repo"
    repo.mkdir()
    _dvc(repo, "init", "--no-scm", "-q")
    types = configparser.ConfigParser()
    types.read(project_root / ".dvc" / "config")
    chosen = [t.strip() for t in types["cache"]["type"].strip('"').split(",")]
    assert chosen[0] == "hardlink"  # the repository's first choice (docs/paper.md: why), as it is
    _dvc(repo, "config", "cache.type", ",".join(chosen))
    (repo / "writer.py").write_text(WRITER)
    (repo / "params.yaml").write_text("value: 1\n")
    (repo / "dvc.yaml").write_text(f"stages:\n  write:\n    cmd: {sys.executable} writer.py\n    deps: [writer.py]\n"
                                   "    params: [value]\n    outs: [out/result.json, out/store]\n")  # fmt: skip
    _dvc(repo, "repro", "-q")
    result = repo / "out" / "result.json"
    first = result.read_bytes()
    # linked, not copied: the workspace and the cache share the file, a folder output's files too
    assert os.stat(result).st_nlink == 2
    assert os.stat(repo / "out" / "store" / "a.bin").st_nlink == 2
    cached_before = {p: p.read_bytes() for p in _cache_files(repo)}
    lock_before = (repo / "dvc.lock").read_text()

    (repo / "params.yaml").write_text("value: 2\n")
    _dvc(repo, "repro", "-q")
    assert b'"value": 2' in result.read_bytes()
    assert _corrupt(repo) == []
    assert all(p.read_bytes() == data for p, data in cached_before.items())  # the first run's objects, intact
    assert "up to date" in _dvc(repo, "status").lower() or "unchanged" in _dvc(repo, "status").lower()

    # back to the first run (what `git checkout` of params.yaml and dvc.lock does): its outputs come back
    (repo / "params.yaml").write_text("value: 1\n")
    (repo / "dvc.lock").write_text(lock_before)
    _dvc(repo, "checkout", "--force", "-q")
    assert result.read_bytes() == first and (repo / "out" / "store" / "a.bin").read_bytes() == b"\x01" * 4096
    assert os.stat(result).st_nlink == 2

    # the control: a writer that opens the linked output in place corrupts the cache, and the check sees it
    os.chmod(result, 0o644)  # DVC makes linked files read-only; root ignores that anyway
    (repo / "inplace.py").write_text(IN_PLACE)
    run([sys.executable, "inplace.py"], repo)
    assert _corrupt(repo) != []
