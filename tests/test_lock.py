"""The pinned environment: requirements.lock covers pyproject's dependencies, doctor reports drift, and
metrics provenance records the lock's hash."""

from __future__ import annotations

import hashlib
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

from restorebench.doctor import environment_status
from restorebench.lock import _canonical, drift, lock_path, lock_sha256, read_pins


def test_lock_pins_every_dependency_and_dev_extra_exactly(project_root):
    lock = project_root / "requirements.lock"
    pins = read_pins(lock)
    project = tomllib.loads((project_root / "pyproject.toml").read_text())["project"]
    wanted = [Requirement(r) for r in [*project["dependencies"], *project["optional-dependencies"]["dev"]]]
    for req in wanted:
        name = _canonical(req.name)
        assert name in pins, f"{req.name} is not in requirements.lock; run `make lock`"
        assert req.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} breaks {req}"
    for line in lock.read_text().splitlines():  # every requirement line is an exact pin
        if line and not line.lstrip().startswith("#"):
            assert "==" in line, line


def test_lock_resolves_torch_to_what_this_machine_tests_on(project_root):
    import torch

    assert read_pins(project_root / "requirements.lock")["torch"] == torch.__version__.split("+")[0]


def test_markers_select_the_pins_of_this_platform(tmp_path):
    lock = tmp_path / "requirements.lock"
    lock.write_text(
        "# header\nfoo==1.0\n    # via bar\nBar_Baz==2.0 ; python_version >= '3.0'\n"
        "pywin32==312 ; sys_platform == 'nonexistent'\n"
    )
    assert read_pins(lock) == {"foo": "1.0", "bar-baz": "2.0"}


def test_drift_names_missing_and_different_versions(tmp_path):
    lock = tmp_path / "requirements.lock"
    lock.write_text("foo==1.0\nbar==2.0\ntorch==2.14.1\nqux==3.0\n")
    installed = {"Foo": "1.0", "bar": "2.1", "torch": "2.14.1+cpu"}
    assert [str(d) for d in drift(lock, installed)] == ["bar 2.1 (lock 2.0)", "qux missing (lock 3.0)"]
    line = environment_status(lock, installed)
    assert "2 package(s) differ" in line and "bar 2.1 (lock 2.0)" in line and "make install" in line
    assert environment_status(lock, {"foo": "1.0", "bar": "2.0", "torch": "2.14.1", "qux": "3.0"}) == (
        f"matches {lock}"
    )


def test_provenance_records_the_lock_hash(project_root, monkeypatch):
    from restorebench.evaluate import provenance

    monkeypatch.chdir(project_root)
    expected = hashlib.sha256((project_root / "requirements.lock").read_bytes()).hexdigest()
    assert lock_path() == Path("requirements.lock")
    assert lock_sha256() == expected
    assert provenance(params_hash="x", data_files=[], checkpoint=None)["lock_sha256"] == expected
