"""The pinned environment: requirements.lock (exact versions of every dependency and the dev extras), and the
project lock that keeps two orchestrators off one tree (take_project_lock, below).

`make install` installs from it; `make lock` re-resolves it (uv pip compile, universal, from
pyproject.toml). Here: find it, hash it (metrics provenance records which environment a number came
from), and list the installed packages whose version differs from it (`restorebench doctor`).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

LOCK_NAME = "requirements.lock"
# src/restorebench/lock.py -> the repository root, for an editable install run from another folder
_SOURCE_ROOT = Path(__file__).resolve().parents[2]


def lock_path(root: Path | None = None) -> Path | None:
    """The lock file: ROOT/requirements.lock, else the working directory's, else the source tree's."""
    candidates = [root] if root is not None else [Path("."), _SOURCE_ROOT]
    for folder in candidates:
        if (folder / LOCK_NAME).is_file():
            return folder / LOCK_NAME
    return None


def lock_sha256(path: Path | None = None) -> str | None:
    """sha256 of the lock file's bytes; None when there is none (an installed wheel, not a checkout)."""
    path = path or lock_path()
    return hashlib.sha256(path.read_bytes()).hexdigest() if path is not None else None


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()  # PEP 503


def read_pins(path: Path) -> dict[str, str]:
    """{canonical name: version} for the pins that apply to this interpreter and platform (markers)."""
    from packaging.markers import Marker

    pins: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        requirement, _, marker = line.partition(";")
        if marker.strip() and not Marker(marker.strip()).evaluate():
            continue
        name, sep, version = requirement.partition("==")
        if sep:
            pins[_canonical(name.split("[", 1)[0].strip())] = version.strip()
    return pins


@dataclass(frozen=True)
class Drift:
    package: str
    locked: str
    installed: str | None  # None: not installed

    def __str__(self) -> str:
        return f"{self.package} {self.installed or 'missing'} (lock {self.locked})"


def drift(path: Path, installed: dict[str, str] | None = None) -> list[Drift]:
    """Packages whose installed version differs from the lock (or that are missing), sorted by name.

    `installed`: {name: version}; default: this interpreter's distributions. A local version label
    (2.14.1+cpu) is the same release as its lock pin (2.14.1).
    """
    if installed is None:
        installed = {d.metadata["Name"]: d.version for d in metadata.distributions() if d.metadata["Name"]}
    have = {_canonical(k): v for k, v in installed.items()}
    out = []
    for name, version in sorted(read_pins(path).items()):
        got = have.get(name)
        if got is None or got.split("+", 1)[0] != version.split("+", 1)[0]:
            out.append(Drift(name, version, got))
    return out


# ---------------------------------------------------------------------------------------------- the project lock
#
# Snakemake and `dvc repro` on one tree would build the same outputs at once, each unaware of the other. Every
# stage command records which orchestrator session runs it in .restorebench/orchestrator.json; a stage of another
# live session on this host fails at once, naming the holder. Jobs of one session share it (Snakemake's own
# parallel jobs, torchrun's ranks): the session is the RESTOREBENCH_ORCHESTRATOR variable when set (the
# Snakefile sets it for all its jobs, cluster ones too), else the nearest `snakemake` or `dvc` process above the
# command. A command run by hand belongs to no session: it only checks that none is running. A holder that has
# exited (its pid gone, or reused by another process) holds nothing; a holder on another host cannot be checked
# from here and is not waited for.

ORCHESTRATOR_ENV = "RESTOREBENCH_ORCHESTRATOR"
PROJECT_LOCK = Path(".restorebench") / "orchestrator.json"
ORCHESTRATORS = ("snakemake", "dvc")


@dataclass(frozen=True)
class Holder:
    name: str  # "snakemake (pid 123)", or the RESTOREBENCH_ORCHESTRATOR value
    pid: int
    host: str
    started: int | None  # the process's start time in clock ticks since boot (Linux), against pid reuse


def _proc(pid: int) -> tuple[int, int, list[str]] | None:
    """(parent pid, start time in ticks, argv) of a process, from /proc; None where unreadable."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) ": state, ppid, ...; starttime is 22nd
    return int(fields[1]), int(fields[19]), [a for a in argv if a]


def _tool(argv: list[str]) -> str | None:
    """'snakemake' or 'dvc' when argv runs one (its script, or `python -m snakemake`)."""
    names = [Path(a).name for a in argv[:2]]
    if len(argv) > 2 and argv[1] == "-m":
        names.append(argv[2])
    return next((n for n in names if n in ORCHESTRATORS), None)


def current_orchestrator() -> Holder | None:
    """The orchestrator session this process runs under (see above), or None for a command run by hand."""
    import os
    import socket

    host = socket.gethostname()
    named = os.environ.get(ORCHESTRATOR_ENV, "").strip()
    if named:
        pid = int(named.rsplit(":", 1)[-1]) if named.rsplit(":", 1)[-1].isdigit() else 0
        info = _proc(pid) if pid else None
        return Holder(named, pid, named.split(":")[1] if named.count(":") >= 2 else host, info[1] if info else None)
    pid = os.getppid()
    for _ in range(32):  # up the process tree to the first orchestrator
        info = _proc(pid)
        if info is None or pid <= 1:
            return None
        tool = _tool(info[2])
        if tool is not None:
            return Holder(f"{tool} (pid {pid})", pid, host, info[1])
        pid = info[0]
    return None


def process_start(pid: int) -> int | None:
    """The start time of process `pid` in clock ticks since boot (field 22 of /proc/PID/stat, Linux), so a
    pid the system has since given to another process is told apart; None where /proc has no answer or the
    process is a zombie (it has finished)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()  # the command name (in parentheses) may hold spaces
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def process_alive(pid: int, start: int | None = None) -> bool:
    """Whether process `pid` (started at `start`, when given) still runs on this host; a zombie counts as
    ended. Without /proc, the pid alone decides."""
    import os

    if Path("/proc/self/stat").exists():
        now = process_start(pid)
        return now is not None and (start is None or now == start)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _alive(holder: dict) -> bool:
    import socket

    pid = holder.get("pid")
    if holder.get("host") != socket.gethostname():
        return False  # cannot be checked from here
    return isinstance(pid, int) and pid > 0 and process_alive(pid, holder.get("started"))


def take_project_lock(stage: str, root: Path = Path(".")) -> Holder | None:
    """Record this command's orchestrator session as the project's, or fail (RestorebenchError, naming the
    holder) when another live session holds it. A command run by hand only checks. Returns the session."""
    import fcntl
    import json
    import os
    from dataclasses import asdict

    from restorebench.errors import RestorebenchError

    me = current_orchestrator()
    path = root / PROJECT_LOCK
    if me is None and not path.exists():
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # a short mutex around read-and-write; released on close
        f.seek(0)
        try:
            held = json.loads(f.read() or "{}")
        except json.JSONDecodeError:
            held = {}
        if held.get("name") and (me is None or held["name"] != me.name) and _alive(held):
            raise RestorebenchError(
                path, f"{held['name']} is running this project's stages on {held['host']}; `{stage}` "
                f"{'of ' + me.name if me else 'run by hand'} would build beside it",
                "wait for it to finish or stop it: one orchestrator per tree, Snakemake or dvc repro")
        if me is not None and held.get("name") != me.name:
            f.seek(0)
            f.truncate()
            f.write(json.dumps(asdict(me), sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())
    return me
