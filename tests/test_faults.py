"""Fault injection through the CLI: 24 kinds of fault, each run as a user would run it
(`restorebench ...` in a throwaway copy of the project), each checked for

- the one-line message `error: <file or key>: <what> (<what to do>)` naming the file or params key,
  exit status 1, and no traceback;
- nothing built before the fault changed: every file under data/, runs/, metrics/ and results/ hashes the
  same after the failed command (the fault's own planted file included; a run folder's .lock is a lock).

The kinds: archives (zip symlink chain, a deeper chain, tar symlink chain, zip-slip by '..', an absolute
member), datasets (zero pairs, fewer than expected_pairs, a cut SIDD .mat from a folder source,
a dataset-level validation failure), values in params (train.steps 0 and -5, betas of one value, a negative
LR, evaluate.crop_size 0, a misspelt key under train.models.nafnet, a holdout of 1, overlap >= tile),
weights (a missing pretrained file, a cut one, a pickle weights_only refuses, a cut model.safetensors at
evaluate), a cut packed store, a second concurrent run of one cell, and the mistaken re-run (another LR,
then the original command: it resumes from its own checkpoint, nothing deleted).

With the two files beside it the suite covers 68 kinds: these 24, 24 of training, results and the run-side
commands in tests/test_faults_run.py (the resume guarantee under 20 random kills among them), and 20 of
data in tests/test_faults_data.py (archive size limits, bad data never replacing good, staging leftovers,
workers outliving their stage, read-only and full disks).
"""

from __future__ import annotations

import hashlib
import shutil
import stat
import subprocess
import tarfile
import zipfile
from pathlib import Path

import pytest
import yaml

from tests.helpers.project import BIN, copy_project, tool_env

pytestmark = pytest.mark.slow

CELL = ["--task", "deblur", "--model", "nafnet", "--strategy", "full"]
RUN = Path("runs/finetune/deblur/nafnet/full")
BUILT = ("data", "runs", "metrics", "results")


def _tiny(params: dict) -> dict:
    """The demo profile cut to seconds: tiny samples, 4 training steps."""
    demo = params["profiles"]["demo"]
    demo["data"]["sample"].update(sidd_instances=1, sidd_height=48, sidd_width=48, sidd_val_images=1,
                                  sidd_val_blocks=2, sidd_val_block_size=16, gopro_train_sequences=1,
                                  gopro_test_sequences=1, gopro_frames=2, gopro_height=64, gopro_width=96)  # fmt: skip
    demo["data"]["sidd"].update(expected_pairs={"train": 2, "val": 2}, expected_groups={"train": 1})
    demo["data"]["gopro"].update(
        expected_pairs={"train": 2, "test": 2}, expected_groups={"train": 1, "test": 1}
    )
    demo["prepare"] = {"sidd": {"size": 48, "step": 48}, "gopro": {"size": 48, "step": 48}}
    demo["train"].update(steps=4, batch=2, patch=32, checkpoint_every=2, log_every=1, holdout=0.0,
                         validate_every=0)  # fmt: skip
    demo["evaluate"].update(max_images=1, crops=1, crop_size=16)
    return params


def cli(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "restorebench"), "--threads", "1", *args], cwd=root, env=tool_env(),
                          capture_output=True, text=True, timeout=600)  # fmt: skip


def snapshot(root: Path) -> dict[str, str]:
    """sha256 of every file (and the target of every link) under the built folders."""
    out = {}
    for top in BUILT:
        for path in sorted((root / top).rglob("*")) if (root / top).exists() else []:
            rel = str(path.relative_to(root))
            if path.is_symlink():
                out[rel] = "-> " + str(path.readlink())
            elif path.is_file() and path.name != ".lock":
                out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def built(project_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project copy with both datasets fetched, GoPro's store prepared, one cell trained and evaluated."""
    root = copy_project(project_root, tmp_path_factory.mktemp("faults") / "project")
    params = root / "params.yaml"
    params.write_text(yaml.safe_dump(_tiny(yaml.safe_load(params.read_text())), sort_keys=False))
    for args in (["fetch", "-d", "gopro"], ["fetch", "-d", "sidd"], ["validate", "-d", "gopro"],
                 ["validate", "-d", "sidd"], ["prepare", "-d", "gopro"],
                 ["finetune", *CELL], ["evaluate", *CELL]):  # fmt: skip
        out = cli(root, *args)
        assert out.returncode == 0, f"{args}: {out.stdout}\n{out.stderr}"
    return root


@pytest.fixture
def project(built: Path, tmp_path: Path) -> Path:
    """A fresh copy of the built project for one fault."""
    return Path(shutil.copytree(built, tmp_path / "project", symlinks=True))


def fails_cleanly(root: Path, args: list[str], expected: str, *, changed: tuple[str, ...] = ()) -> str:
    """Run the command; check one `error:` line matching `expected`, exit 1, no traceback, and that nothing
    under the built folders changed except `changed` (the stage's own report of the failure)."""
    import re

    before = snapshot(root)
    out = cli(root, *args)
    text = out.stdout + out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert out.returncode == 1, text
    assert "Traceback" not in text, text
    assert len(errors) == 1 and re.search(expected, errors[0]), text
    after = snapshot(root)
    for key in changed:
        before.pop(key, None)
        after.pop(key, None)
    assert after == before
    return errors[0]


def _use_source(root: Path, dataset: str, source: str | Path) -> list[str]:
    return ["-S", f"profiles.demo.data.{dataset}.source={source}", "fetch", "-d", dataset]


def _zip(path: Path, links: dict[str, str], files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("GOPRO_Large/train/GOPR0001_00_00/blur/000001.png", b"x")
        zf.writestr("GOPRO_Large/test/GOPR0002_00_00/blur/000001.png", b"x")
        for name, target in links.items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
        for name, data in files.items():
            zf.writestr(name, data)
    return path


# ------------------------------------------------------------------------------------------ archives


@pytest.mark.parametrize(
    ("links", "files", "expected"),
    [
        ({"d/l": "..", "d/l/l2": ".."}, {"d/l/l2/evil.txt": b"pwned"}, r"member 'd/l' is a symbolic link"),
        (
            {"a/l": "..", "a/l/l2": "..", "a/l/l2/l3": ".."},
            {"a/l/l2/l3/evil.txt": b"!"},
            r"member 'a/l' is a symbolic",
        ),
        ({}, {"../evil.txt": b"pwned"}, r"member '\.\./evil\.txt' contains '\.\.'"),
        ({}, {"/tmp/evil.txt": b"pwned"}, r"member '/tmp/evil\.txt' has an absolute path"),
    ],
    ids=["zip-chain", "zip-deeper-chain", "zip-slip", "zip-absolute"],
)
def test_a_hostile_zip_is_refused_and_the_previous_copy_kept(project, tmp_path, links, files, expected):
    archive = _zip(tmp_path / "evil.zip", links, files)
    line = fails_cleanly(project, _use_source(project, "gopro", archive), expected)
    assert str(archive) in line
    assert not list(tmp_path.rglob("evil.txt")) and not list(project.parent.parent.rglob("evil.txt"))


def test_a_symlink_chain_in_a_tar_is_refused(project, tmp_path):
    archive = tmp_path / "evil.tar"
    with tarfile.open(archive, "w") as tf:
        for name, target in {"d/l": "..", "d/l/l2": ".."}.items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tf.addfile(info)
        info = tarfile.TarInfo("d/l/l2/evil.txt")
        tf.addfile(info)
    fails_cleanly(
        project, _use_source(project, "gopro", archive), r"member 'd/l/l2' links to '\.\.', which resolves"
    )
    assert not list(tmp_path.parent.rglob("evil.txt"))


# ------------------------------------------------------------------------------------------ datasets


def test_a_dataset_with_zero_pairs_fails_fetch(project, tmp_path):
    for split in ("train", "test"):
        (tmp_path / "empty/GOPRO_Large" / split).mkdir(parents=True)
    fails_cleanly(project, _use_source(project, "gopro", tmp_path / "empty"), r"gopro: 0 pairs found")


def test_fewer_pairs_than_expected_fails_fetch_with_the_count(project):
    args = ["-S", "profiles.demo.data.gopro.expected_pairs.train=5", "fetch", "-d", "gopro"]
    fails_cleanly(project, args, r"fewer pairs than expected \(train 2 of 5\)")


def test_a_cut_sidd_mat_fails_fetch_naming_it_before_the_swap(project, tmp_path):
    theirs = tmp_path / "theirs"
    shutil.copytree(project / "data/raw/sidd", theirs)
    mat = theirs / "ValidationNoisyBlocksSrgb.mat"
    mat.write_bytes(mat.read_bytes()[:300])
    fails_cleanly(project, _use_source(project, "sidd", theirs),
                  r"data/raw/sidd/ValidationNoisyBlocksSrgb\.mat: unreadable \.mat file .*download it again")  # fmt: skip


def test_a_dataset_level_validation_failure_names_the_dataset_not_none(project):
    args = ["-S", "profiles.demo.data.gopro.expected_groups.train=7", "validate", "-d", "gopro"]
    line = fails_cleanly(project, args, r"\(dataset\): ", changed=("data/validation/gopro.json",))
    assert "None" not in line


# ------------------------------------------------------------------------------------- params values


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("profiles.demo.train.steps=0", r"profiles\.demo\.train\.steps: must be >= 1, got 0"),
        ("profiles.demo.train.steps=-5", r"profiles\.demo\.train\.steps: must be >= 1, got -5"),
        (
            "profiles.demo.train.models.nafnet.betas=[0.9]",
            r"train\.models\.nafnet\.betas: must hold 2 values",
        ),
        ("profiles.demo.train.models.nafnet.lr=-1e-3", r"train\.models\.nafnet\.lr: must be > 0"),
        (
            "profiles.demo.train.models.nafnet.lrr=1",
            r"train\.models\.nafnet\.lrr: unknown key.*did you mean 'lr'",
        ),
        ("profiles.demo.train.holdout=1", r"profiles\.demo\.train\.holdout: must be in \[0, 1\), got 1"),
        ("profiles.demo.evaluate.crop_size=0", r"profiles\.demo\.evaluate\.crop_size: must be >= 8, got 0"),
        ("profiles.demo.evaluate.tile=16", r"profiles\.demo\.evaluate\.overlap: must be < evaluate\.tile"),
    ],
)
def test_a_bad_value_is_refused_at_load_with_its_key(project, override, expected):
    fails_cleanly(project, ["-S", override, "finetune", *CELL], expected)


# ------------------------------------------------------------------------------------------- weights


def test_a_missing_pretrained_file_names_the_params_key(project, tmp_path):
    args = ["-S", f"profiles.demo.pretrained.nafnet={tmp_path / 'gone.safetensors'}", "finetune", *CELL]
    fails_cleanly(project, args, r"profiles\.demo\.pretrained\.nafnet: .*gone\.safetensors.*no such file")


def test_a_cut_pretrained_file_names_the_params_key(project, tmp_path):
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes((project / RUN / "model.safetensors").read_bytes()[:100])
    args = ["-S", f"profiles.demo.pretrained.nafnet={cut}", "finetune", *CELL]
    fails_cleanly(project, args, r"profiles\.demo\.pretrained\.nafnet: could not read .*cut\.safetensors")


def test_a_pickle_is_refused_by_weights_only_naming_the_key(project, tmp_path):
    import argparse

    import torch

    evil = tmp_path / "evil.pth"
    torch.save({"params": {"w": torch.zeros(1)}, "args": argparse.Namespace(x=1)}, evil)
    args = ["-S", f"profiles.demo.pretrained.nafnet={evil}", "finetune", *CELL]
    fails_cleanly(
        project, args, r"profiles\.demo\.pretrained\.nafnet: .*weights_only=True.*argparse\.Namespace"
    )


def test_a_cut_model_safetensors_fails_evaluate_naming_it(project):
    weights = project / RUN / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    fails_cleanly(project, ["evaluate", *CELL], r"model\.safetensors as safetensors")


# ------------------------------------------------------------------------------------ stores and runs


def test_a_cut_packed_store_names_the_file(project):
    array = project / "data/store/gopro/train/gt.u8"
    array.write_bytes(array.read_bytes()[: array.stat().st_size // 2])
    fails_cleanly(
        project, ["finetune", *CELL], r"data/store/gopro/train/gt\.u8: truncated: \d+ bytes, expected"
    )


def test_a_second_run_of_the_same_cell_fails_at_once(project):
    from restorebench.train.checkpoint import lock_run

    with lock_run(project / RUN):  # a first run holds the cell
        fails_cleanly(project, ["finetune", *CELL], r"another run of this cell is in progress \(pid \d+")


def test_a_mistaken_rerun_deletes_nothing_and_the_original_resumes(project):
    """Another LR once, then the original command: it resumes from its own last checkpoint (step 4 of 4)."""
    import json

    original = {p.name: p.read_bytes() for p in (project / RUN / "checkpoints").glob("step_*")}
    out = cli(project, "-S", "profiles.demo.train.models.nafnet.lr=1e-4", "finetune", *CELL)
    assert out.returncode == 0, out.stderr
    assert json.loads((project / RUN / "train.json").read_text())["resumed_from"] == 0
    out = cli(project, "finetune", *CELL)
    assert out.returncode == 0, out.stderr
    assert json.loads((project / RUN / "train.json").read_text())["resumed_from"] == 4
    assert {p.name: p.read_bytes() for p in (project / RUN / "checkpoints").glob("step_*")} == original
    (other,) = (project / RUN / "superseded").iterdir()  # the mistaken run's, kept
    assert sorted(p.name for p in (other / "checkpoints").glob("step_*.pt")) == [
        "step_00000002.pt",
        "step_00000004.pt",
    ]


def test_outputs_are_written_with_the_umask(built):
    """Atomic outputs get a plain open()'s mode (0644 under the usual umask 022), not a temp file's 0600."""
    import os

    mask = os.umask(0)
    os.umask(mask)
    for rel in (
        "data/manifests/gopro.parquet",
        f"{RUN}/model.safetensors",
        "metrics/finetune/deblur/nafnet/full.json",
    ):
        assert stat.S_IMODE((built / rel).stat().st_mode) == 0o666 & ~mask, rel
    assert stat.S_IMODE((built / "data/raw/gopro").stat().st_mode) == 0o777 & ~mask
