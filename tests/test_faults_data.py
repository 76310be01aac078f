"""Faults on the data side (fetch, validate, prepare, degrade, and the data finetune and evaluate read):
20 kinds, each checked for a one-line error naming the file, member or disk, and for nothing good replaced
and nothing left behind.

The kinds:
- archives: a zip of a 20 MB zero stream (expansion past 100:1), a zip past the RESTOREBENCH_MAX_UNPACKED_GB
  cap, an ImageNet tar holding a gzip-compressed class tar of zeros, a nested class tar larger than the free
  space (counted unpacked), a tar hard link to a missing member, a tar file member followed by a member
  under it, the same in a zip;
- bad data never replaces good data: a SIDD folder with one ground-truth image missing (fetch keeps the good
  copy), prepare after validate failed on a 16-bit GoPro frame, prepare and degrade with no validation
  report, prepare and finetune after a re-fetch the report does not cover, evaluate's data that failed validation;
- leftovers: a fetch and a prepare killed by SIGKILL leave staging that the next run removes (a live
  process's staging is kept), prepare's workers die with their parent;
- disks: a read-only data folder at fetch and at prepare, a full disk during prepare (naming the disk and
  the bytes it needed).
"""

from __future__ import annotations

import errno
import gzip
import io
import json
import os
import tarfile
import zipfile
from pathlib import Path

import pytest

from restorebench.data import archives, fetch
from restorebench.data.archives import InsufficientSpace, UnsafeArchive, extract_into
from tests.helpers.data_stages import fetch_tiny, prepare_tiny, validate_tiny

ZEROS = 20 * 10**6  # a 20 MB zero stream: about 20 KB deflated


def _one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert "\n" not in text and "Traceback" not in text, text
    return text


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _gopro_zip(path: Path, extra: dict[str, bytes]) -> Path:
    """A zip with GoPro's layout (so only `extra` can make it fail) and the `extra` members after it."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for split in ("train", "test"):
            zf.writestr(f"GOPRO_Large/{split}/GOPR0001_00_00/blur/000001.png", b"x")
            zf.writestr(f"GOPRO_Large/{split}/GOPR0001_00_00/sharp/000001.png", b"y")
        for name, data in extra.items():
            zf.writestr(name, data)
    return path


# ------------------------------------------------------------------------------------------ archives


def test_a_zip_expanding_past_100_to_1_is_refused_naming_the_member_and_the_good_copy_kept(tmp_path):
    work = tmp_path / "project"
    fetch_tiny("gopro", "sample", work)
    raw, manifest = work / "data/raw/gopro", work / "data/manifests/gopro.parquet"
    before = {**_files(raw), "manifest": manifest.read_bytes()}
    bomb = _gopro_zip(tmp_path / "bomb.zip", {"GOPRO_Large/train/GOPR0001_00_00/blur/zeros.png": bytes(ZEROS)})
    assert bomb.stat().st_size < ZEROS / 100
    with pytest.raises(UnsafeArchive) as err:
        fetch_tiny("gopro", bomb, work)
    line = _one_line(err)
    assert "member 'GOPRO_Large/train/GOPR0001_00_00/blur/zeros.png' expands" in line and "compression bomb" in line
    assert {**_files(raw), "manifest": manifest.read_bytes()} == before
    assert sorted(p.name for p in (work / "data/raw").iterdir()) == ["gopro"]  # no staging left


def test_a_zip_past_the_unpacked_cap_is_refused_while_streaming(tmp_path, monkeypatch):
    monkeypatch.setenv(archives.MAX_UNPACKED_ENV, str(1 / 1024))  # 1 MiB
    noise = os.urandom(2 * 2**20)  # incompressible: the ratio passes, the cap does not
    bomb = _gopro_zip(tmp_path / "big.zip", {"GOPRO_Large/train/GOPR0001_00_00/sharp/big.png": noise})
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(UnsafeArchive) as err:
        extract_into(bomb, out)
    assert f"member 'GOPRO_Large/train/GOPR0001_00_00/sharp/big.png' unpacks past {2**20} bytes" in _one_line(err)
    assert f"{archives.MAX_UNPACKED_ENV}=" in str(err.value)
    # the header check refused it before a byte was written
    assert not (out / "GOPRO_Large/train/GOPR0001_00_00/sharp/big.png").exists()


def _class_tar(members: dict[str, bytes], compress: bool) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return gzip.compress(buf.getvalue(), mtime=0) if compress else buf.getvalue()


def _imagenet_tar(path: Path, classes: dict[str, bytes]) -> Path:
    """ILSVRC2012_img_train.tar's shape: one top-level `nXXXXXXXX.tar` per class."""
    with tarfile.open(path, "w") as tf:
        for name, data in classes.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def test_an_imagenet_tar_holding_a_gzipped_class_tar_of_zeros_is_refused_naming_the_member(tmp_path):
    inner = _class_tar({"n01440764_1.JPEG": b"j" * 100, "n01440764_2.JPEG": bytes(ZEROS)}, compress=True)
    archive = _imagenet_tar(tmp_path / "ILSVRC2012_img_train.tar", {"n01440764.tar": inner})
    assert archive.stat().st_size < ZEROS / 100  # the outer header sees only the packed size
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(UnsafeArchive) as err:
        extract_into(archive, out, class_tars_into="train")
    line = _one_line(err)
    assert "ILSVRC2012_img_train.tar!n01440764.tar: member 'n01440764_2.JPEG' expands" in line, line
    assert not (out / "train/n01440764/n01440764_2.JPEG").exists()


def test_the_free_space_check_counts_a_nested_class_tar_unpacked(tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    noise = bytes(b & 0x0F for b in os.urandom(3 * 2**20))  # 4 bits a byte: gzip packs it about 2:1
    inner = _class_tar({"n01440764_1.JPEG": noise[: 2**20], "n01440764_2.JPEG": noise[2**20 :]}, compress=True)
    archive = _imagenet_tar(tmp_path / "train.tar", {"n01440764.tar": inner})
    assert archive.stat().st_size < 2 * 2**20  # packed, it fits
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**12, 10**12, 4 * 2**20))  # 4 MiB free
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(InsufficientSpace) as err:
        extract_into(archive, out, min_free_bytes=2 * 2**20, class_tars_into="train")  # 2 MiB usable
    line = _one_line(err)
    assert f"member 'n01440764_2.JPEG' unpacks past {2 * 2**20} bytes (the free space on" in line, line
    assert (out / "train/n01440764/n01440764_1.JPEG").stat().st_size == 2**20  # counted, then refused
    assert not (out / "train/n01440764/n01440764_2.JPEG").exists()


def test_a_tar_hard_link_to_a_missing_member_is_one_line(tmp_path):
    archive = tmp_path / "links.tar"
    with tarfile.open(archive, "w") as tf:
        info = tarfile.TarInfo("GOPRO_Large/train/a.png")
        info.type, info.linkname = tarfile.LNKTYPE, "GOPRO_Large/train/missing.png"
        tf.addfile(info)
    with pytest.raises(UnsafeArchive) as err:
        archives.safe_extract(archive, tmp_path / "out")
    assert ("member 'GOPRO_Large/train/a.png' is a hard link to 'GOPRO_Large/train/missing.png', which is not a "
            "file extracted before it") in _one_line(err)
    assert not (tmp_path / "out").exists()


def test_a_tar_file_member_followed_by_a_member_under_it_is_one_line(tmp_path):
    archive = tmp_path / "clash.tar"
    with tarfile.open(archive, "w") as tf:
        for name in ("d/f", "d/f/child"):
            info = tarfile.TarInfo(name)
            info.size = 1
            tf.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(UnsafeArchive) as err:
        archives.safe_extract(archive, tmp_path / "out")
    assert "member 'd/f/child' lies under 'd/f', which the archive made a file" in _one_line(err)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.*"))


def test_a_zip_file_member_followed_by_a_member_under_it_is_one_line(tmp_path):
    archive = _gopro_zip(tmp_path / "clash.zip", {"GOPRO_Large/x": b"1", "GOPRO_Large/x/y.png": b"2"})
    with pytest.raises(UnsafeArchive) as err:
        archives.safe_extract(archive, tmp_path / "out")
    assert "member 'GOPRO_Large/x/y.png' lies under 'GOPRO_Large/x', which the archive made a file" in _one_line(err)


# ------------------------------------------------------------------- bad data never replaces good data


def test_a_sidd_folder_missing_one_ground_truth_image_fails_fetch_and_keeps_the_good_copy(tmp_path):
    import shutil

    work = tmp_path / "project"
    fetch_tiny("sidd", "sample", work)
    raw, manifest = work / "data/raw/sidd", work / "data/manifests/sidd.parquet"
    before = {**_files(raw), "manifest": manifest.read_bytes()}
    source = Path(shutil.copytree(raw, tmp_path / "user_copy"))
    gone = sorted(source.rglob("*_GT_SRGB_*.PNG"))[0]
    gone.unlink()
    with pytest.raises(fetch.IncompleteDataset) as err:
        fetch_tiny("sidd", source, work)
    assert f"1 file(s) of a pair missing: {gone.relative_to(source)}" in _one_line(err)
    assert {**_files(raw), "manifest": manifest.read_bytes()} == before
    assert sorted(p.name for p in (work / "data/raw").iterdir()) == ["sidd"]


def test_prepare_refuses_a_dataset_whose_validation_failed_on_a_16_bit_frame(tmp_path):
    import shutil

    import numpy as np

    from restorebench.data.validate import NotValidated, ValidationFailed
    from restorebench.images import write_png

    work = tmp_path / "project"
    fetch_tiny("gopro", "sample", work)
    source = Path(shutil.copytree(work / "data/raw/gopro", tmp_path / "user_copy"))
    frame = sorted(source.rglob("train/*/sharp/*.png"))[0]
    write_png(frame, np.full((32, 48, 3), 40000, np.uint16))  # 16-bit RGB: a uint8 reader sees 255s
    fetch_tiny("gopro", source, work)  # fetch checks pairs, not bit depths
    with pytest.raises(ValidationFailed, match="16-bit PNG"):
        validate_tiny(work, "gopro")
    report = work / "data/validation/gopro.json"
    assert json.loads(report.read_text())["success"] is False
    with pytest.raises(NotValidated) as err:
        prepare_tiny(work)
    line = _one_line(err)
    assert line.startswith(f"{report}: gopro failed validation") and "16-bit PNG" in line, line
    assert not (work / "data/store/gopro").exists()


def test_prepare_and_degrade_refuse_a_dataset_never_validated_or_fetched_again_since(tmp_path):
    from restorebench.config import load_config
    from restorebench.data.validate import NotValidated
    from restorebench.degrade.stage import degrade_imagenet
    from restorebench.train.finetune import training_data

    work = tmp_path / "project"
    fetch_tiny("gopro", "sample", work)
    with pytest.raises(NotValidated) as err:
        prepare_tiny(work)
    assert (f"{work}/data/validation/gopro.json: gopro has no validation report; prepare reads only validated "
            "data (run `restorebench validate --dataset gopro` before prepare)") == _one_line(err)
    validate_tiny(work, "gopro")
    assert prepare_tiny(work)["subimages"] > 0  # validated: it packs
    fetch_tiny("gopro", "sample", work, seed=1)  # other frames: the report does not vouch for them
    with pytest.raises(NotValidated, match=r"gopro\.json: made for another .*gopro\.parquet"):
        prepare_tiny(work)
    cfg = load_config(Path(__file__).resolve().parents[1] / "params.yaml", [f"profiles.demo.data.root={work / 'data'}"])
    with pytest.raises(NotValidated, match=r"gopro\.json: made for another .*gopro\.parquet.* before finetune"):
        training_data(cfg, "deblur", "nafnet")  # the prepared store's dataset no longer passes
    fetch_tiny("imagenet", "sample", work)
    with pytest.raises(NotValidated, match=r"imagenet\.json: imagenet has no validation report; degrade"):
        degrade_imagenet(root=work / "data", tasks={"n": [{"name": "gaussian_noise", "sigma": 30}]}, patch=16,
                         patches_per_image=1, workers=1)  # fmt: skip


def test_evaluate_refuses_data_that_failed_validation(tmp_path):
    from restorebench.data.validate import NotValidated
    from restorebench.evaluate import eval_items

    work = tmp_path / "project"
    fetch_tiny("sidd", "sample", work)
    report = work / "data/validation/sidd.json"
    report.parent.mkdir(parents=True)
    report.write_text(json.dumps({"dataset": "sidd", "success": False,
                                  "failures": [{"file": "ValidationGtBlocksSrgb.mat", "reason": "missing file"}]}))
    with pytest.raises(NotValidated) as err:
        eval_items("denoise", work / "data")
    assert "sidd failed validation (1 problem(s), first ValidationGtBlocksSrgb.mat: missing file); evaluate" in (
        _one_line(err))


# -------------------------------------------------------------------------------------------- leftovers


def _children(pid: int) -> set[int]:
    """Every live descendant of `pid` (from /proc: the fork server, its workers, the resource tracker)."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if fields[0] != "Z":
            parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, pp in parents.items() if pp in frontier} - found
        found |= frontier
    return found


def _killed_midway(work: Path, code: str) -> set[int]:
    """Run `code` (which ends by blocking after writing work/ready) in a child Python, SIGKILL it once
    ready; returns the descendants it had then."""
    import signal
    import subprocess
    import sys
    import time

    import restorebench

    env = {**os.environ, "PYTHONPATH": f"{Path(restorebench.__file__).parents[1]}{os.pathsep}{os.getcwd()}"}
    child = subprocess.Popen([sys.executable, "-c", code], cwd=work, env=env)
    try:
        for _ in range(1200):  # the child imports torch-free modules only: seconds
            if (work / "ready").exists() or child.poll() is not None:
                break
            time.sleep(0.1)
        assert child.poll() is None and (work / "ready").exists(), "the child ended before it was ready"
        kids = _children(child.pid)
        child.send_signal(signal.SIGKILL)
        child.wait()
    finally:
        child.kill()
    return kids


BLOCK = """
import os, time
from pathlib import Path
def block(*args, **kwargs):
    Path("ready").write_text(str(os.getpid()))
    time.sleep(600)
"""


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_a_killed_fetch_leaves_staging_that_the_next_fetch_removes(tmp_path):
    from restorebench.data import staging

    work = tmp_path / "project"
    work.mkdir()
    code = BLOCK + f"""
from restorebench.data import manifest
from tests.helpers.data_stages import fetch_tiny
manifest.build_manifest = block  # killed after the copy is staged, before the swap
fetch_tiny("gopro", "sample", Path({str(work)!r}))
"""
    _killed_midway(work, code)
    raw = work / "data/raw"
    left = sorted(raw.glob(".gopro.*.fetch"))
    assert len(left) == 1 and staging.marker(left[0]).is_file() and list(left[0].rglob("*.png"))
    mine = Path(raw / ".gopro.live.fetch")  # a staging folder of a process still running is kept
    mine.mkdir()
    staging.claim(mine)
    fetch_tiny("gopro", "sample", work)
    assert sorted(p.name for p in raw.iterdir()) == [".gopro.live.fetch", ".gopro.live.fetch.owner", "gopro"]


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_a_killed_prepare_leaves_no_workers_and_its_staging_goes_at_the_next_prepare(tmp_path):
    import time

    from restorebench.lock import process_alive as alive

    work = tmp_path / "project"
    fetch_tiny("gopro", "sample", work)
    validate_tiny(work, "gopro")
    code = BLOCK + f"""
from restorebench.data import store
from tests.helpers.data_stages import prepare_tiny
store.StoreWriter.add = block  # killed with the workers' first results in hand
prepare_tiny(Path({str(work)!r}), workers=2)
"""
    kids = _killed_midway(work, code)
    assert len(kids) >= 3, kids  # the fork server and two workers (and maybe the resource tracker)
    for _ in range(300):  # the workers follow their parent at once (PDEATHSIG) or within a second
        if not any(alive(pid) for pid in kids):
            break
        time.sleep(0.1)
    assert not [pid for pid in kids if alive(pid)]
    store_dir = work / "data/store/gopro"
    assert len(list(store_dir.glob(".train.*.tmp"))) == 1 and len(list(store_dir.glob(".train.*.tmp.owner"))) == 1
    prepare_tiny(work)
    assert sorted(p.name for p in store_dir.iterdir()) == ["train"]


# ------------------------------------------------------------------------------------------------ disks


def test_a_read_only_data_folder_at_fetch_is_one_line_from_the_cli(tmp_path, monkeypatch):
    import tempfile

    from typer.testing import CliRunner

    from restorebench.cli import app

    def read_only(*args, dir=None, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(dir))

    monkeypatch.setattr(tempfile, "mkdtemp", read_only)
    params = Path(__file__).resolve().parents[1] / "params.yaml"
    result = CliRunner().invoke(app, ["--params", str(params), "-S", f"profiles.demo.data.root={tmp_path / 'data'}",
                                      "fetch", "--dataset", "gopro"])  # fmt: skip
    assert result.exit_code == 1 and "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert lines == [f"error: {tmp_path / 'data/raw'}: fetch gopro: read-only file system (make the folder "
                     "writable, or point data.root at a writable folder)"], result.output


def test_a_read_only_store_folder_at_prepare_is_one_line(tmp_path, monkeypatch):
    import tempfile

    from restorebench.errors import RestorebenchError

    work = tmp_path / "project"
    fetch_tiny("gopro", "sample", work)
    validate_tiny(work, "gopro")

    def denied(*args, dir=None, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(dir))

    monkeypatch.setattr(tempfile, "mkdtemp", denied)
    with pytest.raises(RestorebenchError) as err:
        prepare_tiny(work)
    assert _one_line(err) == (f"{work / 'data/store/gopro'}: prepare gopro: permission denied (make the folder "
                              "writable, or point data.root at a writable folder)")


def test_a_full_disk_during_prepare_names_the_disk_and_the_bytes_needed(tmp_path, monkeypatch):
    from restorebench.data import store
    from restorebench.data.archives import mount_point

    work = tmp_path / "project"
    fetch_tiny("gopro", "sample", work)
    validate_tiny(work, "gopro")
    need = prepare_tiny(work)["bytes"]  # what the stage really writes: the figure the message must give
    real_add, added = store.StoreWriter.add, []

    def add_then_full(self, **item):
        if added:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        added.append(item["id"])
        real_add(self, **item)

    monkeypatch.setattr(store.StoreWriter, "add", add_then_full)
    before = _files(work / "data/store")
    with pytest.raises(InsufficientSpace) as err:
        prepare_tiny(work)
    line = _one_line(err)
    disk = mount_point(work)
    assert line.startswith(f"{work / 'data/store/gopro/train'}: prepare gopro: the disk {disk} is full (")
    assert f"it needs {need} bytes" in line and f"free space on {disk}" in line and "raw" not in line, line
    assert _files(work / "data/store") == before  # the previous store is untouched, no staging left
    assert sorted(p.name for p in (work / "data/store/gopro").iterdir()) == ["train"]
