"""Faults of training, results and the CLI's run-side commands: each checked for the one-line error naming
the file or key, nothing built replaced, and no half-written or leftover output.

24 kinds of fault: training (SIGKILL at 20 random steps in a row with hash files removed in some rounds;
hashless checkpoints, verified or set aside, and a killed write's .step_*.tmp; old higher-step checkpoints
beside new ones at cleanup; disk full while saving a checkpoint; a read-only runs folder; corrupt dvclive rows
at resume), results (a kill between evaluate's writes; a read-only metrics folder; the same run writing other
bytes), params (a duplicate key, --params naming a folder, a non-UTF-8 file, lr .inf, lr .nan), report on a
table cut to its header, weights metadata (bad JSON, no model key, unknown architecture keywords, an absurd
size), restore (an existing output without --overwrite, OUTPUT naming a .jpg file, a 15000x15000 image, a large
image within the memory bound) and a second orchestrator on the same tree.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from restorebench.errors import RestorebenchError
from restorebench.train import checkpoint


def _env(root: Path) -> dict[str, str]:
    # this checkout's code, not whichever copy the venv installed in editable mode
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(root / "src"), str(root)])}


def _intact(ckpt_dir: Path, fingerprint: str) -> int:
    """The step of the newest checkpoint a user would trust, checked here without the module's code: its hash
    file matches its bytes, or, with no hash file, it loads with weights_only and records its own step and the
    run's fingerprint. 0 when there is none."""
    best = 0
    for path in ckpt_dir.glob("step_*.pt"):
        step = int(path.stem.split("_")[1])
        sidecar = path.with_suffix(".sha256")
        if sidecar.exists():
            ok = sidecar.read_text().strip() == hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
                ok = state["step"] == step and state.get("fingerprint") == fingerprint
            except Exception:
                ok = False
        if ok:
            best = max(best, step)
    return best


@pytest.mark.slow
def test_training_killed_20_times_resumes_each_time_from_the_newest_intact_checkpoint(tmp_path, project_root):
    """SIGKILL at a random step (and a random moment within it) 20 times in a row, hash files removed after
    some kills: each restart resumes from the newest intact checkpoint, so a kill loses at most
    checkpoint_every (2) steps; killed writes' .step_*.tmp files are gone when the next session starts; the
    weights at the end are bit-identical to an uninterrupted run's."""
    steps, every, rng = 130, 2, random.Random(24)
    cmd = [sys.executable, "-m", "tests.helpers.killed_run"]
    run, env = tmp_path / "killed", _env(project_root)
    expected, last_step, hashless_rounds = 0, 0, 0
    for round_ in range(20):
        proc = subprocess.Popen([*cmd, str(run), str(steps)], cwd=project_root, env=env, stdout=subprocess.PIPE,
                                text=True)  # fmt: skip
        first = proc.stdout.readline().split()
        assert first[:2] == ["start", str(expected)], (round_, first, last_step)
        assert first[2:] == [], f"temporary files of a killed write left at round {round_}: {first[2:]}"
        assert expected >= (last_step // every) * every  # at most checkpoint_every steps lost
        target = expected + rng.randint(1, 6)
        for line in proc.stdout:
            if line.split() == ["step", str(target)]:
                break
        # a random moment within the step: mid-forward, mid-save, between the .pt and its hash ...
        deadline = rng.random() * 0.05
        try:
            proc.wait(timeout=deadline)
        except subprocess.TimeoutExpired:
            pass
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        last_step = target
        if rng.random() < 0.4:  # a user (or a copy) lost the hash files
            hashless_rounds += 1
            for sidecar in (run / "checkpoints").glob("*.sha256"):
                sidecar.unlink()
        fp = json.loads((run / "checkpoints" / "run.json").read_text())["fingerprint"]
        expected = _intact(run / "checkpoints", fp)
        assert expected >= (last_step // every) * every - every, (round_, expected, last_step)
    assert hashless_rounds >= 3  # the seeded draw removes hashes in several rounds
    done = subprocess.run([*cmd, str(run), str(steps)], cwd=project_root, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[:2] == ["start", str(expected)]
    assert not list((run / "checkpoints").glob(".step_*.tmp"))
    ref = subprocess.run([*cmd, str(tmp_path / "ref"), str(steps)], cwd=project_root, env=env, capture_output=True,
                         text=True)  # fmt: skip
    assert ref.returncode == 0, ref.stderr[-2000:]
    from safetensors.torch import load_file

    want, got = load_file(tmp_path / "ref" / "model.safetensors"), load_file(run / "model.safetensors")
    assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)


# ---------------------------------------------------------------------------------------------- checkpoints


def _tiny_run(run: Path, steps: int, *, batches=None, metadata: dict | None = None, every: int = 1):
    from restorebench.train.loop import LoopConfig
    from restorebench.train.session import train_and_save
    from tests.helpers.tiny import TinyRestorer, make_batches

    torch.manual_seed(0)
    cfg = LoopConfig(steps=steps, lr=2e-3, checkpoint_every=every, log_every=1)
    return train_and_save(TinyRestorer(width=4), batches or make_batches(size=8, batch=2), cfg, run_dir=run,
                          params={"test": "faults"}, progress=False, metadata=metadata)  # fmt: skip


def _crash_at(step_to_fail: int):
    from tests.helpers.tiny import make_batches

    def batches(start):
        for step, batch in enumerate(make_batches(size=8, batch=2)(start), start):
            if step == step_to_fail:
                raise KeyboardInterrupt
            yield batch

    return batches


def test_hashless_checkpoints_resume_when_they_verify_and_are_set_aside_when_not(tmp_path):
    """The reported case: hash files deleted, the run started again. Checkpoints that load and record this run's
    step and fingerprint are resumed from (their hash written again); one that does not check out is moved to
    checkpoints/set_aside/, not deleted; a killed write's temporary file is removed."""
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        _tiny_run(run, 12, batches=_crash_at(6))
    ckpts = run / "checkpoints"
    assert sorted(p.name for p in ckpts.glob("step_*.pt")) == ["step_00000005.pt", "step_00000006.pt"]
    for sidecar in ckpts.glob("*.sha256"):
        sidecar.unlink()
    foreign = ckpts / "step_00000009.pt"  # a higher step whose content says step 6: not this file's checkpoint
    six = (ckpts / "step_00000006.pt").read_bytes()
    foreign.write_bytes(six)
    (ckpts / ".step_00000007.pt.abc123.tmp").write_bytes(b"half a checkpoint")
    with pytest.raises(KeyboardInterrupt):
        _tiny_run(run, 12, batches=_crash_at(8))
    assert (ckpts / "set_aside" / "step_00000009.pt").read_bytes() == six
    assert not list(ckpts.glob(".step_*.tmp"))
    assert sorted(p.name for p in ckpts.glob("step_*.pt")) == ["step_00000007.pt", "step_00000008.pt"]
    result, _ = _tiny_run(run, 12)
    assert result.resumed_from == 8  # not 0: the resumed-from-6 session's checkpoints were kept


def test_cleanup_counts_by_step_and_never_deletes_the_checkpoint_it_wrote(tmp_path):
    """Old higher-step checkpoints (another run's, set there by hand) never push out the one just written."""
    state = {"step": 3, "model": {"w": torch.zeros(2)}}
    for step in (59, 60):
        checkpoint.save(tmp_path, step, {**state, "step": step})
    for step in (1, 2, 3):
        checkpoint.save(tmp_path, step, {**state, "step": step})
    names = sorted(p.name for p in tmp_path.glob("step_*.pt"))
    assert names == ["step_00000002.pt", "step_00000003.pt", "step_00000059.pt", "step_00000060.pt"]
    # ordered by number, so a step past 10**8 still sorts after the others
    checkpoint.save(tmp_path, 123_456_789, {**state, "step": 123_456_789})
    assert checkpoint.list_checkpoints(tmp_path)[-1].name == "step_123456789.pt"


def test_disk_full_while_saving_a_checkpoint_is_one_line_and_keeps_the_last_good_one(tmp_path, monkeypatch):
    import contextlib

    from restorebench import io as rio

    checkpoint.save(tmp_path, 2, {"step": 2, "w": torch.zeros(1000)})

    @contextlib.contextmanager
    def full_disk(dest, suffix=""):  # the temporary file lands on /dev/full: every write fails with ENOSPC
        yield Path("/dev/full")

    monkeypatch.setattr(rio, "atomic_path", full_disk)
    with pytest.raises(RestorebenchError) as err:
        checkpoint.save(tmp_path, 4, {"step": 4, "w": torch.zeros(1000)})
    text = str(err.value)
    assert "\n" not in text and text.startswith(f"{tmp_path}: disk full while writing checkpoint step_00000004.pt")
    assert "needed about 4,000 bytes" in text and "bytes free there" in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_00000002.pt", "step_00000002.sha256"]


def test_a_read_only_runs_folder_is_one_line_naming_it(tmp_path, monkeypatch):
    import errno

    run = tmp_path / "runs" / "cell"
    real = Path.mkdir

    def read_only(self, *a, **kw):
        if str(self).startswith(str(tmp_path / "runs")):
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real(self, *a, **kw)

    monkeypatch.setattr(Path, "mkdir", read_only)
    with pytest.raises(RestorebenchError, match=r"cannot write the run folder: Read-only file system \(make .* "
                                                r"writable"):  # fmt: skip
        _tiny_run(run, 2)


def test_corrupt_dvclive_rows_at_resume_name_the_file_and_line_and_a_cut_last_line_is_dropped(tmp_path):
    table = tmp_path / "dvclive" / "plots" / "metrics" / "train" / "loss.tsv"
    table.parent.mkdir(parents=True)
    table.write_text("timestamp\tstep\tloss\n1\t1\t0.5\n2\t2\t0.4\n3\t3")  # the last line cut by a kill
    (tmp_path / "dvclive" / "metrics.json").write_text('{"step": 3, "tra')  # cut too: dvclive rewrites it
    checkpoint.trim_curves(tmp_path / "dvclive", 1)
    assert table.read_text() == "timestamp\tstep\tloss\n1\t1\t0.5\n"
    assert not (tmp_path / "dvclive" / "metrics.json").exists()
    table.write_text("timestamp\tstep\tloss\n1\t1\t0.5\n\x00\x13garbage\tx\t?\n2\t2\t0.4\n")
    with pytest.raises(RestorebenchError, match=rf"^{table}:3: corrupt dvclive row"):
        checkpoint.trim_curves(tmp_path / "dvclive", 2)


# ---------------------------------------------------------------------------------------------- results


def _sidd_val(root: Path, shift: int = 0) -> None:
    """A two-block SIDD validation set (the two .mat files evaluate reads)."""
    import scipy.io

    rng = np.random.default_rng(0)
    gt = rng.integers(0, 256, (1, 2, 16, 16, 3), dtype=np.uint8)
    noisy = np.clip(gt.astype(int) + rng.integers(-20, 21, gt.shape) + shift, 0, 255).astype(np.uint8)
    raw = root / "data" / "raw" / "sidd"
    raw.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(raw / "ValidationNoisyBlocksSrgb.mat", {"ValidationNoisyBlocksSrgb": noisy})
    scipy.io.savemat(raw / "ValidationGtBlocksSrgb.mat", {"ValidationGtBlocksSrgb": gt})
    # evaluate reads only validated data: a passing report, as `restorebench validate` writes one (no manifest
    # here, so none is recorded for it)
    report = root / "data" / "validation" / "sidd.json"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(json.dumps({"dataset": "sidd", "success": True, "failures": []}) + "\n")


def _evaluate_identity(root: Path):
    from restorebench.evaluate import evaluate_cell

    return evaluate_cell(task="denoise", model="identity", strategy="none", pretrain="none", cell="none",
                         profile="demo", params_hash="0" * 64, data_root=root / "data", build=None, variant=None,
                         rerun="-", crops=1, crop_size=8)  # fmt: skip


def _files(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}  # fmt: skip


def test_a_kill_between_evaluate_writes_leaves_a_set_aggregate_refuses(tmp_path, monkeypatch):
    """The cell's folder is published in one rename, then its metrics file: a kill between the two leaves a new
    folder beside the old metrics, and aggregate names the file that does not belong; the next evaluate removes
    a killed run's staging folder and writes a whole set again."""
    from restorebench import io as rio
    from restorebench.aggregate import read_cell

    monkeypatch.chdir(tmp_path)
    _sidd_val(tmp_path)
    _evaluate_identity(tmp_path)
    metrics = Path("metrics/finetune/denoise/identity/none.json")
    before = metrics.read_bytes()
    read_cell(Path("metrics"), Path("results/eval"), "denoise", "identity", "none")  # a whole set reads
    _sidd_val(tmp_path, shift=9)  # another evaluation set: other scores
    real = rio.write_bytes

    def killed(dest, data):
        if Path(dest).parts[0] == "metrics":
            raise KeyboardInterrupt  # the process dies here: the folder is published, the metrics file is not
        real(dest, data)

    monkeypatch.setattr(rio, "write_bytes", killed)
    with pytest.raises(KeyboardInterrupt):
        _evaluate_identity(tmp_path)
    assert metrics.read_bytes() == before
    with pytest.raises(RestorebenchError) as err:
        read_cell(Path("metrics"), Path("results/eval"), "denoise", "identity", "none")
    assert str(err.value).startswith(f"{metrics}: not from the evaluate run that wrote "
                                     "results/eval/denoise/identity/none/provenance.json")  # fmt: skip
    assert "\n" not in str(err.value)
    monkeypatch.setattr(rio, "write_bytes", real)
    stale = Path("results/eval/denoise/identity/.none.x1y2.tmp")  # a staging folder a SIGKILL left
    (stale / "crops").mkdir(parents=True)
    _evaluate_identity(tmp_path)
    assert not stale.exists()
    read_cell(Path("metrics"), Path("results/eval"), "denoise", "identity", "none")


def test_a_read_only_metrics_folder_at_evaluate_is_one_line(tmp_path, monkeypatch):
    import errno

    from restorebench import io as rio

    monkeypatch.chdir(tmp_path)
    _sidd_val(tmp_path)
    real = rio.atomic_path

    def read_only(dest, suffix=""):
        if Path(dest).parts[0] == "metrics":
            raise PermissionError(errno.EACCES, "Permission denied", str(dest))
        return real(dest, suffix)

    monkeypatch.setattr(rio, "atomic_path", read_only)
    with pytest.raises(RestorebenchError, match=r"^metrics/finetune/denoise/identity/none.json: cannot write the "
                                                r"metrics file none.json: Permission denied"):  # fmt: skip
        _evaluate_identity(tmp_path)


def test_the_same_run_writes_the_same_bytes(tmp_path, monkeypatch):
    """A cell trained twice and evaluated twice: every output a orchestrator hashes is byte-identical (the
    weights' header metadata sorted; timings only in train.json's summary, dvclive's curves and timing.json,
    which hold measured seconds and are named here)."""
    from restorebench.card import run_config, safetensors_metadata

    config = run_config(model="nafnet", variant="demo", kwargs={"width": 8}, task="denoise", cell="full",
                        strategy="full", pretrain="none", seed=0, init="random(seed=0)", loss="l1", profile="demo",
                        params_hash="0" * 64, git_revision="abc")  # fmt: skip
    timed = ("history.json", "dvclive", "timing.json", "checkpoints")  # measured seconds (loop totals, rates)
    digests = []
    for attempt in ("a", "b"):
        root = tmp_path / attempt
        _tiny_run(root / "run", 3, metadata=safetensors_metadata(config))
        monkeypatch.chdir(root)
        _sidd_val(root)
        _evaluate_identity(root)
        files = _files(root)
        outputs = {k: v for k, v in files.items() if not k.startswith("data/")}  # the inputs (.mat: dated headers)
        digests.append({k: v for k, v in outputs.items() if not any(part in timed for part in Path(k).parts)})
    assert "run/model.safetensors" in digests[0] and "results/eval/denoise/identity/none/provenance.json" in digests[0]
    assert digests[0] == digests[1]
    with open(tmp_path / "a/run/model.safetensors", "rb") as f:
        header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
    assert list(header["__metadata__"]) == sorted(header["__metadata__"])


# ---------------------------------------------------------------------------------------------- the CLI


def _cli(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    from tests.helpers.project import BIN, tool_env

    return subprocess.run([str(BIN / "restorebench"), *args], cwd=cwd, env={**tool_env(), **_env(ROOT)},
                          capture_output=True, text=True, timeout=300)  # fmt: skip


def _one_line(done: subprocess.CompletedProcess, start: str) -> str:
    err = done.stderr.strip()
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert err.count("\n") == 0 and err.startswith(f"error: {start}"), err
    return err


ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["duplicate", "folder", "latin1", "inf", "nan"])
def test_bad_params_files_and_values_are_one_line(tmp_path, kind):
    text = (ROOT / "params.yaml").read_text()
    params, extra = tmp_path / "params.yaml", []
    if kind == "duplicate":
        params.write_text(text.replace("\nseed:", "\nseed: 7\nseed:", 1))
        line = text[: text.index("\nseed:")].count("\n") + 2
        start, words = f"{params}:{line + 1}: duplicate key 'seed' (first at line {line})", ""
    elif kind == "folder":
        params, start, words = tmp_path, f"{tmp_path}: not a file", "pass --params"
    elif kind == "latin1":
        params.write_bytes(text.encode() + "# café\n".encode("latin-1"))
        start, words = f"{params}: not UTF-8 text", "save the params file as UTF-8"
    else:
        params.write_text(text)
        extra = ["-S", f"profiles.demo.train.models.nafnet.lr=.{kind}"]
        start, words = f"profiles.demo.train.models.nafnet.lr: must be > 0, got {kind}", "(not a finite number)"
    done = _cli(tmp_path, "--params", str(params), *extra, "config", "show")
    assert words in _one_line(done, start)


def test_report_on_a_table_cut_to_its_header_fails_in_one_line(tmp_path):
    import shutil

    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    (tmp_path / "results").mkdir()
    table = tmp_path / "results" / "table.csv"
    from restorebench.aggregate import COLUMNS

    table.write_text(",".join(COLUMNS) + "\n")
    _one_line(_cli(tmp_path, "report"), "results/table.csv: has no rows (only its header)")
    table.write_text("")
    _one_line(_cli(tmp_path, "report"), "results/table.csv: not a readable results table")
    assert not (tmp_path / "results" / "report.html").exists()


def _weights(tmp_path: Path, meta: dict[str, str] | None = None, **kwargs) -> Path:
    """A copied nafnet (demo) model.safetensors whose header metadata is `meta` (default: its run config)."""
    from safetensors.torch import save_file

    from restorebench.card import run_config, safetensors_metadata
    from restorebench.models import build_model

    net = build_model("nafnet", variant="demo")
    config = run_config(model="nafnet", variant="demo", kwargs=kwargs, task="denoise", cell="full", strategy="full",
                        pretrain="none", seed=0, init="random(seed=0)", loss="l1", profile="demo",
                        params_hash="0" * 64, git_revision="abc")  # fmt: skip
    path = tmp_path / "copied" / "model.safetensors"
    path.parent.mkdir(exist_ok=True)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path),
              metadata=meta if meta is not None else safetensors_metadata(config))  # fmt: skip
    return path


@pytest.mark.parametrize("case", ["bad_json", "no_model", "unknown_kwarg", "absurd_size"])
def test_weights_metadata_is_checked_before_the_model_is_built(tmp_path, case):
    from restorebench.card import safetensors_metadata
    from restorebench.models import build_model

    good = safetensors_metadata({"format": "restorebench-finetuned/1", "model": "nafnet", "variant": "demo",
                                 "kwargs": {}, "task": "denoise", "cell": "full"})  # fmt: skip
    if case == "bad_json":
        path, expected = _weights(tmp_path, {**good, "kwargs": "{width: 8"}), "header metadata 'kwargs' is not valid JSON"
    elif case == "no_model":
        path, expected = _weights(tmp_path, {k: v for k, v in good.items() if k != "model"}), "run config has no 'model' key"
    elif case == "unknown_kwarg":
        path, expected = _weights(tmp_path, depth_of_field=3), "architecture keywords ['depth_of_field'] do not fit nafnet"
    else:  # a width that would allocate about 80 GB of parameters: counted on the meta device, refused
        path = _weights(tmp_path, width=20000)
        expected = "its metadata describes a nafnet of "
    with pytest.raises(RestorebenchError) as err:
        build_model(pretrained=str(path))
    assert str(err.value).startswith(f"{path}: {expected}") and "\n" not in str(err.value)


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG whose header says width x height (8-bit grey) and whose data is empty: PIL reads the size."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) +
                     chunk(b"IEND", b""))  # fmt: skip


@pytest.mark.slow
def test_restore_replaces_nothing_unasked_writes_the_named_file_and_refuses_a_bomb(tmp_path):
    from PIL import Image

    weights = _weights(tmp_path)
    (tmp_path / "in").mkdir()
    Image.fromarray(np.full((20, 24, 3), 120, np.uint8)).save(tmp_path / "in" / "a.jpg")
    Image.fromarray(np.full((8, 8, 3), 7, np.uint8)).save(tmp_path / "in" / "a.png")
    before = (tmp_path / "in" / "a.png").read_bytes()
    # the reported case: dir/a.jpg into dir/ would replace the existing dir/a.png
    done = _cli(tmp_path, "restore", "in/a.jpg", "in", "--weights", str(weights))
    _one_line(done, "in/a.png: exists already; restore replaces nothing unasked (pass --overwrite")
    assert (tmp_path / "in" / "a.png").read_bytes() == before
    done = _cli(tmp_path, "restore", "in/a.jpg", "out/a.jpg", "--weights", str(weights))
    assert done.returncode == 0, done.stderr
    with Image.open(tmp_path / "out" / "a.jpg") as im:
        assert im.format == "JPEG" and im.size == (24, 20)  # a file named a.jpg, not a folder
    _one_line(_cli(tmp_path, "restore", "in/a.jpg", "out/a.jpg", "--weights", str(weights)), "out/a.jpg: exists")
    done = _cli(tmp_path, "restore", "in/a.jpg", "in", "--weights", str(weights), "--overwrite")
    assert done.returncode == 0 and np.asarray(Image.open(tmp_path / "in" / "a.png")).shape == (20, 24, 3)
    _png_header_only(tmp_path / "in" / "big.png", 15000, 15000)
    done = _cli(tmp_path, "restore", "in/big.png", "out", "--weights", str(weights))
    _one_line(done, "in/big.png: 15000x15000 pixels, over the 178,956,970-pixel limit against decompression bombs")
    assert not (tmp_path / "out" / "big.png").exists()


def test_restore_of_a_large_image_goes_tile_by_tile_without_a_whole_float_copy(tmp_path):
    """Tiles give the whole image's result for a model whose receptive field is within the overlap, and the
    host memory numpy allocates stays under one float32 copy of the image (the stated bound: input and output
    at the image's bit depth plus one tile)."""
    import tracemalloc

    from restorebench.restore import restore_array

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 3, 3, padding=1), torch.nn.Sigmoid()).eval()
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (600, 500, 4), dtype=np.uint8)  # RGBA: alpha passes through
    whole = restore_array(net, arr, tile=None, overlap=8, device="cpu")
    tracemalloc.start()
    tiled = restore_array(net, arr, tile=64, overlap=8, device="cpu")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    np.testing.assert_array_equal(tiled, whole)
    np.testing.assert_array_equal(tiled[..., 3], arr[..., 3])
    tile_floats = 64 * 64 * 3 * 8 * 4  # a tile's float copies, generously
    assert peak < arr.nbytes + tile_floats < arr.size // 4 * 3 * 4  # under one float32 copy of the colour


# ---------------------------------------------------------------------------------------------- the project lock


@pytest.mark.slow
def test_a_second_orchestrator_fails_at_its_first_stage_naming_the_holder(tmp_path):
    """A stage of a dvc repro (found as the dvc process above it) records the session; a stage of a Snakemake
    run (RESTOREBENCH_ORCHESTRATOR) on the same tree fails at once naming it; once that holder has exited,
    the lock is stale and the next session takes it. A command run by hand while a session runs fails too."""
    import shutil
    import socket

    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake_dvc = bin_dir / "dvc"  # stands in for `dvc repro`: runs the stage command as its child, then waits
    fake_dvc.write_text(f"#!{sys.executable}\nimport subprocess, sys, time\n"
                        "p = subprocess.Popen(sys.argv[1:])\np.wait()\nprint('stage done', flush=True)\n"
                        "time.sleep(120)\n")  # fmt: skip
    fake_dvc.chmod(0o755)
    from tests.helpers.project import BIN, tool_env

    env = {**tool_env(), **_env(ROOT)}
    env.pop("RESTOREBENCH_ORCHESTRATOR", None)
    holder = subprocess.Popen([str(fake_dvc), str(BIN / "restorebench"), "aggregate"], cwd=tmp_path, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "stage done"
        record = json.loads((tmp_path / ".restorebench" / "orchestrator.json").read_text())
        assert record["name"] == f"dvc (pid {holder.pid})" and record["host"] == socket.gethostname()
        snake = {**env, "RESTOREBENCH_ORCHESTRATOR": f"snakemake:{socket.gethostname()}:{os.getpid()}"}
        done = subprocess.run([str(BIN / "restorebench"), "aggregate"], cwd=tmp_path, env=snake, capture_output=True,
                              text=True)  # fmt: skip
        err = _one_line(done, f".restorebench/orchestrator.json: dvc (pid {holder.pid}) is running this project's "
                              "stages")  # fmt: skip
        assert "wait for it to finish or stop it" in err
        _one_line(_cli(tmp_path, "report"), f".restorebench/orchestrator.json: dvc (pid {holder.pid})")
        _cli(tmp_path, "config", "show")  # not a stage: no lock
    finally:
        holder.kill()
        holder.wait()
    done = subprocess.run([str(BIN / "restorebench"), "aggregate"], cwd=tmp_path, env=snake, capture_output=True,
                          text=True)  # fmt: skip
    assert "orchestrator.json" not in done.stderr  # the holder exited: its lock holds nothing
    assert json.loads((tmp_path / ".restorebench" / "orchestrator.json").read_text())["name"].startswith("snakemake:")
