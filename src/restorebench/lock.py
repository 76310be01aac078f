"""The pinned environment: requirements.lock (exact versions of every dependency and the dev extras).

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
