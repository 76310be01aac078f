"""`restorebench restore` and the finetuned run folder it reads: config.json, the weights' metadata, the model
card, build_model(pretrained=<run folder>), and a folder of mixed 8/16-bit images restored at their bit depth."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file
from typer.testing import CliRunner

from restorebench.card import FORMAT, run_config, safetensors_metadata, write_run_config
from restorebench.cli import app
from restorebench.config import load_config
from restorebench.errors import RestorebenchError
from restorebench.images import read_image, read_png16, write_png
from restorebench.models import build_model
from restorebench.restore import plan
from tests.helpers.stores import write_sidd_store

runner = CliRunner()


def _filtered_png16(arr: np.ndarray, filters: list[int]) -> bytes:
    """A 16-bit RGB PNG whose rows use the given filter types (PNG spec 9.2), to test every unfilter path."""
    import struct
    import zlib

    h, w, c = arr.shape
    rows = np.ascontiguousarray(arr.astype(">u2")).view(np.uint8).reshape(h, -1).astype(np.int32)
    bpp, out, prior = 2 * c, [], np.zeros(rows.shape[1], np.int32)
    for y in range(h):
        kind, row = filters[y % len(filters)], rows[y]
        left = np.concatenate([np.zeros(bpp, np.int32), row[:-bpp]])
        upleft = np.concatenate([np.zeros(bpp, np.int32), prior[:-bpp]])
        if kind == 0:
            pred = np.zeros_like(row)
        elif kind == 1:
            pred = left
        elif kind == 2:
            pred = prior
        elif kind == 3:
            pred = (left + prior) // 2
        else:
            p = left + prior - upleft
            pa, pb, pc = abs(p - left), abs(p - prior), abs(p - upleft)
            pred = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, prior, upleft))
        out.append(bytes([kind]) + ((row - pred) % 256).astype(np.uint8).tobytes())
        prior = row

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"".join(out))) + chunk(b"IEND", b""))  # fmt: skip


def test_png16_codec_round_trips_every_row_filter(tmp_path):
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 65536, (10, 7, 3), dtype=np.uint16)
    write_png(tmp_path / "a.png", arr)
    np.testing.assert_array_equal(read_png16(tmp_path / "a.png"), arr)
    (tmp_path / "f.png").write_bytes(_filtered_png16(arr, [0, 1, 2, 3, 4]))
    np.testing.assert_array_equal(read_image(tmp_path / "f.png"), arr)
    grey = rng.integers(0, 65536, (6, 5), dtype=np.uint16)
    write_png(tmp_path / "g.png", grey)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "g.png"), dtype=np.uint16), grey)  # Pillow agrees


def _fake_run(root: Path, model: str = "nafnet", kwargs: dict | None = None) -> Path:
    """A run folder as finetune writes it, from a demo model: weights with metadata, config.json."""
    torch.manual_seed(0)
    net = build_model(model, variant="demo", **(kwargs or {}))
    run = root / "runs/finetune/denoise" / model / "full"
    run.mkdir(parents=True)
    config = run_config(model=model, variant="demo", kwargs=kwargs or {}, task="denoise", cell="full",
                        strategy="full", pretrain="none", seed=0, init="random(seed=0)", loss="l1",
                        profile="demo", params_hash="0" * 64, git_revision="abc")  # fmt: skip
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(run / "model.safetensors"),
              metadata=safetensors_metadata(config))  # fmt: skip
    write_run_config(run, config)
    return run


@pytest.mark.parametrize("model,kwargs", [("nafnet", {}), ("ipt", {"tasks": ["noise30"], "scales": [1], "num_queries": 1})])
def test_build_model_from_a_run_folder_rebuilds_the_architecture(tmp_path, model, kwargs):
    run = _fake_run(tmp_path, model, kwargs)
    torch.manual_seed(1)  # a different init: only loading can make the two equal
    net = build_model(pretrained=str(run))
    ref = build_model(model, variant="demo", pretrained=None, **kwargs)
    ref.load_state_dict(load_file(run / "model.safetensors"))
    assert type(net) is type(ref) and net.state_dict().keys() == ref.state_dict().keys()
    x = torch.rand(1, 3, 24, 24)
    with torch.no_grad():
        torch.testing.assert_close(net.eval()(x), ref.eval()(x))
    # the weights file alone, copied elsewhere, still says what it is (its header metadata)
    alone = tmp_path / "elsewhere" / "weights.safetensors"
    alone.parent.mkdir()
    shutil.copy(run / "model.safetensors", alone)
    assert type(build_model(pretrained=str(alone))) is type(ref)
    with pytest.raises(ValueError, match=f"a finetuned '{model}' run"):
        build_model("restormer", pretrained=str(run))


def test_plan_never_overwrites_inputs(tmp_path):
    (tmp_path / "in").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "in/a.png")
    with pytest.raises(RestorebenchError, match="the output folder is the input folder"):
        plan(tmp_path / "in", tmp_path / "in")
    with pytest.raises(RestorebenchError, match="would overwrite an input"):
        plan(tmp_path / "in/a.png", tmp_path / "in/a.png")
    with pytest.raises(RestorebenchError, match="would overwrite an input"):
        plan(tmp_path / "in/a.png", tmp_path / "in")  # -> in/a.png
    assert [j.dest for j in plan(tmp_path / "in", tmp_path / "out")] == [tmp_path / "out/a.png"]


def _mixed_folder(folder: Path) -> dict[str, tuple[tuple[int, ...], type]]:
    """PNG 8/16-bit RGB, 16-bit grey, RGBA, JPEG, TIFF 8/16-bit; returns name -> (shape, dtype)."""
    rng = np.random.default_rng(0)
    folder.mkdir()
    images = {
        "png8": (rng.integers(0, 256, (40, 56, 3), dtype=np.uint8), "png"),
        "png16": (rng.integers(0, 65536, (70, 45, 3), dtype=np.uint16), "png"),  # taller than the 32 tile
        "grey16": (rng.integers(0, 65536, (30, 33), dtype=np.uint16), "png"),
        "rgba8": (rng.integers(0, 256, (20, 24, 4), dtype=np.uint8), "png"),
        "photo": (rng.integers(0, 256, (36, 48, 3), dtype=np.uint8), "jpg"),
        "scan16": (rng.integers(0, 65536, (25, 31, 3), dtype=np.uint16), "tif"),
        "scan8": (rng.integers(0, 256, (26, 30, 3), dtype=np.uint8), "tiff"),
    }
    for name, (arr, ext) in images.items():
        path = folder / f"{name}.{ext}"
        if ext.startswith("tif"):
            tifffile.imwrite(path, arr)
        elif arr.dtype == np.uint16:
            write_png(path, arr)
        else:
            Image.fromarray(arr).save(path)
    return {name: (arr.shape, arr.dtype) for name, (arr, _) in images.items()}


@pytest.fixture(scope="module")
def finetuned(project_root, tmp_path_factory):
    """A real (6-step) finetuned demo NAFNet cell, evaluated (after the identity floor) on one synthetic item;
    returns its run folder
    (relative paths under the module's own folder, where each test using it runs)."""
    import restorebench.evaluate as ev

    root = tmp_path_factory.mktemp("cell")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        write_sidd_store(root)
        params = ["--params", str(project_root / "params.yaml"), "-S", "profiles.demo.train.steps=6",
                  "-S", "profiles.demo.train.batch=2", "-S", "profiles.demo.train.patch=16"]  # fmt: skip
        result = runner.invoke(app, [*params, "finetune", "--task", "denoise", "--model", "nafnet", "--strategy", "full"])
        assert result.exit_code == 0, result.output
        rng = np.random.default_rng(0)
        item = ev.EvalItem("0000_00", *(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8) for _ in range(2)))
        mp.setattr(ev, "eval_items", lambda task, data_root: iter([item]))
        result = runner.invoke(app, [*params, "evaluate", "--task", "denoise", "--model", "identity"])  # the floor
        assert result.exit_code == 0, result.output
        result = runner.invoke(app, [*params, "evaluate", "--task", "denoise", "--model", "nafnet", "--strategy", "full"])
        assert result.exit_code == 0, result.output
    return root / "runs/finetune/denoise/nafnet/full"


@pytest.fixture()
def in_cell(finetuned, monkeypatch) -> Path:
    monkeypatch.chdir(finetuned.parents[4])
    return finetuned


def test_finetune_writes_config_metadata_and_evaluate_the_model_card(in_cell):
    finetuned = in_cell
    config = json.loads((finetuned / "config.json").read_text())
    assert config["format"] == FORMAT
    assert {k: config[k] for k in ("model", "variant", "task", "cell", "pretrain", "loss")} == {
        "model": "nafnet", "variant": "demo", "task": "denoise", "cell": "full", "pretrain": "none", "loss": "psnr"}
    assert len(config["params_hash"]) == 64 and config["git_revision"]
    with safe_open(str(finetuned / "model.safetensors"), framework="pt") as f:
        meta = f.metadata()
    assert meta["model"] == "nafnet" and meta["cell"] == "full" and meta["params_hash"] == config["params_hash"]
    card = (finetuned / "README.md").read_text()
    scores = json.loads(Path("metrics/finetune/denoise/nafnet/full.json").read_text())
    assert "# nafnet (demo) for denoise, cell full" in card and f"{scores['psnr']:.3f}" in card
    # what the weights are: demo weights say so first; profile, steps, data, LR, time; the identity floor
    train = json.loads((finetuned / "train.json").read_text())
    lines = card.splitlines()
    assert lines[2] == ("> **Warning: demo weights (6 training steps under the demo profile): they show that the "
                        "pipeline runs end to end; they are not a real restorer.**")
    held = train["holdout_images"]
    assert 0 < held < 5  # write_sidd_store: 5 source images, 2 sub-images each
    assert "| profile | `demo` |" in lines and "| steps | 6 |" in lines
    assert f"| data | sidd training set: {5 - held} image pairs ({2 * (5 - held)} sub-images), {held} held out " \
           "for val/psnr |" in lines
    demo = load_config(Path(__file__).resolve().parents[1] / "params.yaml")
    assert demo.train.models["nafnet"].lr == 0.002 and demo.train.models["nafnet"].schedule == "cosine"
    assert "| learning rate | 0.002 peak (cosine) |" in lines
    assert f"| training time | {train['train_seconds']:.1f} s on {train['device']} |" in lines
    floor = json.loads(Path("metrics/finetune/denoise/identity/none.json").read_text())["psnr"]
    assert (f"Identity floor (the degraded input, scored by the same protocol): {floor:.2f} dB on the same 1 "
            f"image (this cell {scores['psnr'] - floor:+.2f} dB).") in lines
    assert "restorebench restore INPUT OUTPUT --weights runs/finetune/denoise/nafnet/full" in card
    net = build_model(pretrained=str(finetuned))
    assert sum(p.numel() for p in net.parameters()) == json.loads(
        Path("results/eval/denoise/nafnet/full/provenance.json").read_text())["params"]


def test_restore_a_mixed_folder_keeps_sizes_and_bit_depth(in_cell, tmp_path):
    finetuned = in_cell
    expected = _mixed_folder(tmp_path / "mine")
    before = {p.name: p.read_bytes() for p in (tmp_path / "mine").iterdir()}
    result = runner.invoke(app, ["restore", str(tmp_path / "mine"), str(tmp_path / "restored"), "--task", "denoise",
                                 "--model", "nafnet", "--cell", "full", "--tile", "32", "--overlap", "8"])  # fmt: skip
    assert result.exit_code == 0, result.output
    scores = json.loads(Path("metrics/finetune/denoise/nafnet/full.json").read_text())
    floor = json.loads(Path("metrics/finetune/denoise/identity/none.json").read_text())["psnr"]
    assert (f"weights: runs/finetune/denoise/nafnet/full (nafnet (demo) denoise/full: profile demo, 6 steps at peak "
            f"LR 0.002; scored PSNR {scores['psnr']:.2f} dB / SSIM {scores['ssim_matlab3d']:.4f} by the denoise "
            f"protocol, identity floor {floor:.2f} dB on the same 1 image (this cell {scores['psnr'] - floor:+.2f} "
            "dB))") in result.output  # fmt: skip
    assert "warning: demo weights (6 training steps under the demo profile)" in result.output
    assert "restored 7 images" in result.output
    for name, (shape, dtype) in expected.items():
        out = read_image(tmp_path / "restored" / f"{name}.png")
        assert out.shape == shape and out.dtype == dtype, name
    assert {p.name: p.read_bytes() for p in (tmp_path / "mine").iterdir()} == before  # inputs untouched
    # one image, by --weights, to a named file; the weights' task is checked
    one = tmp_path / "one.png"
    result = runner.invoke(app, ["restore", str(tmp_path / "mine/png16.png"), str(one), "--weights", str(finetuned)])
    assert result.exit_code == 0, result.output
    assert read_image(one).dtype == np.uint16
    result = runner.invoke(app, ["restore", str(tmp_path / "mine/png8.png"), str(tmp_path / "two.png"), "--weights",
                                 str(finetuned), "--task", "deblur"])  # fmt: skip
    assert result.exit_code == 1 and "a nafnet run for denoise, not task 'deblur'" in result.output
    result = runner.invoke(app, ["restore", str(tmp_path / "mine"), str(tmp_path / "mine"), "--weights", str(finetuned)])
    assert result.exit_code == 1 and "the output folder is the input folder" in result.output


def test_one_image_to_a_file_name_writes_that_file(in_cell, tmp_path):
    src = tmp_path / "x.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (20, 28, 3), dtype=np.uint8)).save(src)
    out = tmp_path / "out" / "a.jpg"
    result = runner.invoke(app, ["restore", str(src), str(out), "--weights", str(in_cell)])
    assert result.exit_code == 0, result.output
    assert out.is_file() and Image.open(out).format == "JPEG" and Image.open(out).size == (28, 20)
    assert f"restored 1 image -> {out}" in result.output
    result = runner.invoke(app, ["restore", str(tmp_path / "out"), str(tmp_path / "b.png"), "--weights", str(in_cell)])
    assert result.exit_code == 1 and not (tmp_path / "b.png").exists()
    assert f"error: {tmp_path / 'b.png'}: a folder of inputs (1 image) needs an output folder, not the image file " \
           "name 'b.png' (name a folder (no image suffix), or restore one image to a file)" in result.output


def test_the_card_states_what_is_missing_and_warns_on_a_short_paper_run(tmp_path):
    from restorebench.card import demo_warning, model_card, run_facts

    run = _fake_run(tmp_path)  # config.json only: no train.json, no metrics in the project
    facts = run_facts(run)
    assert facts["train"] == {} and facts["scores"] is None and facts["floor"] is None
    scores = {"psnr": 30.0, "ssim_matlab3d": 0.8, "ssim_basicsr": 0.8}
    card = model_card(facts["config"], scores, {"images": 3}, facts)
    assert "| data | not recorded |" in card and "| learning rate | not recorded |" in card
    assert ("Identity floor (the degraded input, scored by the same protocol): not known: "
            "metrics/finetune/denoise/identity/none.json not found (`restorebench evaluate --task denoise --model "
            "identity` writes it).") in card  # fmt: skip
    # a floor on other images is not set beside the score
    floor = tmp_path / "metrics/finetune/denoise/identity/none.json"
    floor.parent.mkdir(parents=True)
    floor.write_text(json.dumps({"psnr": 28.5}))
    prov = tmp_path / "results/eval/denoise/identity/none/provenance.json"
    prov.parent.mkdir(parents=True)
    prov.write_text(json.dumps({"images": 5}))
    card = model_card(facts["config"], scores, {"images": 3}, run_facts(run))
    assert "28.50 dB, but on 5 images, not this cell's 3: not comparable" in card
    # paper-profile weights warn only when trained for a small share of the published recipe
    paper = {**run_facts(run), "config": {**facts["config"], "profile": "paper"}, "train": {"steps": 5000}}
    assert demo_warning(paper, recipe_steps=200000) == (
        "demo weights (5000 training steps of the published recipe's 200000): they show that the pipeline runs end "
        "to end; they are not a real restorer")
    assert demo_warning(paper, recipe_steps=40000) is None and demo_warning(paper) is None


def test_restore_warns_on_weights_trained_for_a_small_share_of_the_published_recipe(project_root, tmp_path,
                                                                                    monkeypatch):  # fmt: skip
    run = _fake_run(tmp_path)
    config = {**json.loads((run / "config.json").read_text()), "profile": "paper"}
    write_run_config(run, config)
    (run / "train.json").write_text(json.dumps({"steps": 50, "lr": 1e-3, "lr_schedule": "cosine"}))
    paper = load_config(project_root / "params.yaml", ["profile=paper"])
    recipe = sum(st.iters for st in paper.train.stages("nafnet", "denoise"))
    assert recipe > 500  # the published budget dwarfs the 50 steps
    Image.fromarray(np.zeros((12, 12, 3), np.uint8)).save(tmp_path / "x.png")
    monkeypatch.chdir(project_root)  # its params.yaml holds the paper profile's recipe
    result = runner.invoke(app, ["restore", str(tmp_path / "x.png"), str(tmp_path / "y.png"), "--weights", str(run)])
    assert result.exit_code == 0, result.output
    assert "(nafnet (demo) denoise/full: profile paper, 50 steps at peak LR 0.001; no scores found beside these " \
           "weights (not evaluated in this project))" in result.output
    assert f"warning: demo weights (50 training steps of the published recipe's {recipe})" in result.output
