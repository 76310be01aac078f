"""restorebench.pipeline, the one definition of the pipeline: its grid follows every params list, each stage
lists exactly the params keys and source files it reads, dvc.yaml is its fresh generation, aggregate reads
exactly the grid's cells, and a released checkpoint is a cell scored through the same evaluate stage.

End to end (slow): a throwaway git + DVC repo of the project runs the demo pipeline on two branches that
differ in one parameter; `dvc metrics diff` shows numeric deltas per cell and `dvc params diff` the
parameter. The grid is cut to one model, one strategy and DCPT for it (IPT off) to keep it to a couple of
minutes on two cores."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from restorebench import pipeline
from restorebench.config import ConfigError, profile_overrides, read_params
from restorebench.dvcyaml import dvc_yaml
from restorebench.snakemake_config import snakemake_overrides
from tests.helpers.project import BIN, copy_project, generate_dvc, set_params

P = pipeline.PROFILE_KEY


def _load(root: Path, *overrides: str) -> pipeline.Pipeline:
    return pipeline.load(root / "params.yaml", overrides)


def test_committed_dvc_yaml_is_a_fresh_generation(project_root):
    """dvc.yaml is generated (`restorebench pipeline dvc -o dvc.yaml`); edit the pipeline module or params,
    then regenerate."""
    fresh = dvc_yaml(_load(project_root))
    assert (project_root / "dvc.yaml").read_text() == fresh, "dvc.yaml is stale: run `restorebench pipeline dvc -o dvc.yaml`"


def test_the_grid_follows_every_params_list(project_root):
    full = _load(project_root)
    n = {r: sum(s.rule == r for s in full.stages()) for r in ("fetch", "prepare", "degrade", "finetune",
                                                              "pretrain_dcpt", "pretrain_ipt", "segpretrain")}  # fmt: skip
    # the demo's cut: per task 5 models x full, DCPT for nafnet, IPT, 3 scratch controls (+ the floor)
    assert n == {"fetch": 3, "prepare": 2, "degrade": 1, "finetune": 20, "pretrain_dcpt": 2, "pretrain_ipt": 1,
                 "segpretrain": 3}  # fmt: skip
    assert len(full.stages()) == 59  # Snakemake's 60 jobs less its target `all`
    study = _load(project_root, *profile_overrides(read_params(project_root / "params.yaml"), "paper"))
    assert sum(s.rule == "finetune" for s in study.stages()) == 58  # 2 x 5 x 4 + 2 x (5 DCPT + IPT + 3 scratch)
    cut = _load(project_root, "tasks=[denoise]")
    assert {c.task for c in cut.cells()} == {"denoise"} and len(cut.cells()) == 10  # the floor is no cell
    assert [s.name for s in cut.stages() if s.rule == "prepare"] == ["prepare.sidd"]
    cut = _load(project_root, "models=[nafnet]", "pretrain_models.dcpt=[nafnet]", "pretrain_models.scratch=[]")
    assert {c.model for c in cut.cells()} == {"nafnet", "ipt"}
    cut = _load(project_root, "strategies=[full]", "pretrain_strategies=[llrd]")
    assert {c.name for c in cut.cells()} == {"full", "ipt-llrd", "dcpt-llrd", "scratch-llrd"}
    off = _load(project_root, "pretrain_models={ipt: [], dcpt: []}", "datasets=[sidd, gopro]")
    assert not [s for s in off.stages() if s.rule in ("degrade", "pretrain_ipt", "pretrain_dcpt")]
    assert [s.name for s in off.stages() if s.rule == "fetch"] == ["fetch.sidd", "fetch.gopro"]
    agg = off.stage("aggregate")
    assert "data/validation/imagenet.json" not in agg.deps
    assert len([d for d in off.job_inputs(agg) if d.startswith("metrics/finetune/")]) == 2 + 10  # floors + cells
    with pytest.raises(ConfigError, match="'imagenet'"):  # pretraining needs its dataset
        _load(project_root, "datasets=[sidd, gopro]")


def test_each_cell_lists_its_own_model_recipe_and_no_other(project_root):
    pipe = _load(project_root)
    for s in pipe.stages():
        assert f"{P}.train" not in s.params, f"{s.name} tracks the whole train section"
        recipes = {k for k in s.params if k.startswith(f"{P}.train.models.")}
        if s.rule == "finetune":
            model = dict(s.wildcards)["model"]
            assert recipes == {f"{P}.train.models.{model}"}, s.name
            assert {f"{P}.variants.{model}.{dict(s.wildcards)['task']}", f"{P}.pretrained.{model}"} <= set(s.params)
            assert f"{P}.train.steps" in s.params and f"{P}.train.compile" not in s.params  # operational
        else:
            assert not recipes, s.name
    values = pipe.values(pipe.stage("finetune", task="denoise", model="nafnet", cell="full"))
    assert values["profiles.demo.train.models.nafnet"]["lr"] == pipe.cfg.train.recipe("nafnet").lr


ALL_DCPT = "pretrain_models.dcpt=[swin_upernet, swin_mask2former, vit_adapter, nafnet, restormer]"  # the paper's


def test_each_stage_depends_on_the_source_files_it_runs(project_root):
    pipe = _load(project_root, ALL_DCPT)
    src = "src/restorebench/"
    nafnet = set(pipe.stage("finetune", task="denoise", model="nafnet", cell="full").code)
    assert {f"{src}cli.py", f"{src}train/finetune.py", f"{src}train/loop.py", f"{src}models/nafnet.py",
            f"{src}models/__init__.py", f"{src}data/datasets.py", f"{src}data/store.py"} <= nafnet  # fmt: skip
    assert f"{src}models/restormer.py" not in nafnet and f"{src}aggregate.py" not in nafnet
    vit = set(pipe.stage("finetune", task="denoise", model="vit_adapter", cell="full").code)
    assert f"{src}models/swin_mask2former.py" in vit  # imported by vit_adapter.py: on its path
    ev = set(pipe.stage("evaluate", task="deblur", model="restormer", cell="dcpt-full").code)
    assert {f"{src}{f}" for f in ("evaluate.py", "infer.py", "metrics.py", "cli.py", "models/restormer.py")} <= ev
    assert f"{src}models/nafnet.py" not in ev
    assert all(Path(project_root, f).is_file() for s in pipe.stages() for f in s.code)


def test_no_dcpt_stage_runs_ipt_code_and_fingerprints_follow_the_sources(project_root, tmp_path):
    """Editing models/ipt.py or pretrain/ipt.py changes no DCPT job's sources: pretraining imports its own
    method's module only, and the fingerprint DVC hashes for a job lists exactly that job's files."""
    from restorebench import dvcyaml

    pipe = _load(project_root)
    src = "src/restorebench/"
    for s in pipe.stages():
        if s.rule == "pretrain_dcpt" or (s.rule in ("finetune", "evaluate") and dict(s.wildcards)["model"] != "ipt"):
            assert f"{src}models/ipt.py" not in s.code and f"{src}pretrain/ipt.py" not in s.code, s.name
    assert f"{src}pretrain/ipt.py" in pipe.stage("pretrain_ipt").code
    dcpt = pipe.stage("pretrain_dcpt", task="denoise", model="nafnet")
    text = dvcyaml.fingerprint("pretrain_dcpt", "nafnet")
    listed = [line.split()[1] for line in text.splitlines() if not line.startswith("#")]
    assert listed == list(dcpt.code) and dcpt.code_id == "pretrain_dcpt-nafnet"
    digest = hashlib.sha256((project_root / f"{src}pretrain/dcpt.py").read_bytes()).hexdigest()
    assert f"{digest}  {src}pretrain/dcpt.py" in text.splitlines()
    written = dvcyaml.write_fingerprints(tmp_path / "code")
    assert written == len(list((tmp_path / "code").iterdir()))
    assert (tmp_path / "code" / "pretrain_dcpt-nafnet.txt").read_text() == text


def test_entry_modules_are_read_from_the_cli(project_root):
    """Each stage's entry modules are the imports inside its command in cli.py (and the helpers it calls),
    a pretraining stage's less the other methods' modules; the model's params keys come from its module."""
    from restorebench.models import params_keys

    assert pipeline.entry_modules("fetch") == ("data.fetch",)
    assert "pretrain.ipt" in pipeline.entry_modules("pretrain_ipt")
    assert "pretrain.dcpt" not in pipeline.entry_modules("pretrain_ipt")
    assert "pretrain.ipt" not in pipeline.entry_modules("pretrain_dcpt")
    assert "train.distributed" in pipeline.entry_modules("finetune")  # through cli.py's _launch helper
    assert params_keys("ipt") == ("pretrain.ipt.heads",) and params_keys("nafnet") == ()
    ft = _load(project_root).stage("finetune", task="denoise", model="ipt", cell="ipt-full")
    assert f"{P}.pretrain.ipt.heads" in ft.params


def test_dvc_yaml_is_one_block_per_family(project_root):
    """dvc.yaml stays short: a matrix stage per family and task (over the params lists), expanded only where
    the jobs differ in more than their matrix values."""
    import yaml

    from restorebench.dvcyaml import dvc_names

    text = (project_root / "dvc.yaml").read_text()
    assert len(text.splitlines()) <= 1500
    stages = yaml.safe_load(text)["stages"]
    assert stages["finetune_denoise"]["matrix"] == {"model": "${models}", "strategy": "${strategies}"}
    assert stages["finetune_deblur_dcpt"]["matrix"] == {"model": "${pretrain_models.dcpt}",
                                                        "strategy": "${pretrain_strategies}"}  # fmt: skip
    names = dvc_names(_load(project_root))
    assert names["finetune.denoise.nafnet.full"] == "finetune_denoise@nafnet-full"
    assert names["finetune.denoise.ipt.ipt-full"] == "finetune.denoise.ipt.ipt-full"  # IPT's own params key


def test_outputs_outside_dvc_cache_are_the_ones_git_keeps(project_root):
    """An output DVC does not cache must be one git keeps, or `git clone` + `dvc pull` cannot bring it back
    (a run's config.json, which `restore` needs; the crops git ignores in an evaluation folder)."""
    pipe = _load(project_root)
    kept, cached = set(), set()
    for stage in pipe.stages():
        for _, out in stage.outs:
            (cached if out.cache else kept).add(out.path.rstrip("/"))
    probe = sorted(kept | cached)
    check = subprocess.run(["git", "check-ignore", "--no-index", "--stdin"], cwd=project_root, input="\n".join(probe),
                           capture_output=True, text=True)  # fmt: skip
    assert check.returncode in (0, 1), check.stderr  # 0: some paths ignored, 1: none; else git failed
    ignored = check.stdout.split()
    assert "runs/finetune/denoise/nafnet/full/model.safetensors" in ignored  # the check sees .gitignore
    assert sorted(p for p in kept if p in ignored) == []
    assert "runs/finetune/denoise/nafnet/full/config.json" in cached


def test_segmentation_cells_load_the_demos_checkpoint_and_scratch_cells_do_not(project_root):
    """The demo's seg models finetune (and DCPT-pretrain) from the checkpoint a segpretrain job writes; their
    scratch controls load nothing; dvc.yaml's templates depend on the checkpoints' folder."""
    import yaml

    pipe = _load(project_root, ALL_DCPT)
    assert pipe.segmentation_runs() == ["swin_upernet", "swin_mask2former", "vit_adapter"]
    seg = pipe.stage("segpretrain", model="vit_adapter")
    assert seg.args == "segpretrain --model vit_adapter" and dict(seg.outs)["checkpoint"].path == "runs/segmentation/vit_adapter"
    assert "profiles.demo.pretrain.segmentation" in seg.params  # the demo profile's only
    ft = pipe.stage("finetune", task="denoise", model="vit_adapter", cell="full")
    assert "runs/segmentation/vit_adapter" in ft.deps
    assert "runs/segmentation/vit_adapter" in pipe.stage("pretrain_dcpt", task="deblur", model="vit_adapter").deps
    scratch = pipe.stage("finetune", task="denoise", model="vit_adapter", cell="scratch-full")
    assert scratch.args.endswith("--pretrain scratch") and not [d for d in scratch.deps if "segmentation" in d]
    assert not [d for d in pipe.stage("finetune", task="denoise", model="nafnet", cell="full").deps if "segm" in d]
    stages = yaml.safe_load((project_root / "dvc.yaml").read_text())["stages"]
    assert "runs/segmentation" in stages["finetune_denoise"]["deps"]
    assert "runs/segmentation" not in stages["finetune_denoise_scratch"]["deps"]
    # without the demo's checkpoints (the paper profile's hub ids) there is no segpretrain job
    assert _load(project_root, "profile=paper").segmentation_runs() == []


def test_seeds_repeat_the_training_cells(project_root):
    once = _load(project_root, "tasks=[denoise]")
    pipe = _load(project_root, "tasks=[denoise]", "seeds=[0, 1]")
    assert len(pipe.cells()) == 2 * len(once.cells())
    ft = pipe.stage("finetune", task="denoise", model="nafnet", cell="dcpt-full-seed1")
    assert ft.args.endswith("--strategy full --pretrain dcpt --seed 1") and "seed" not in ft.params
    assert ft.deps[1] == "runs/pretrain/dcpt/denoise/nafnet/model.safetensors"  # pretrained once, with `seed`
    ev = pipe.stage("evaluate", task="denoise", model="nafnet", cell="full-seed0")
    assert ev.deps[0] == "runs/finetune/denoise/nafnet/full-seed0/model.safetensors"
    assert "seeds" in pipe.stage("aggregate").params
    with pytest.raises(ConfigError, match="seeds: expected a list of distinct integers"):
        _load(project_root, "seeds=[1, 1]")


def test_data_root_moves_every_data_path(project_root):
    pipe = _load(project_root, "profiles.demo.data.root=/scratch/rb")
    data = [p for s in pipe.stages() for p in s.deps + tuple(o.path for _, o in s.outs) if "store" in p or "raw" in p]
    assert data and all(p.startswith("/scratch/rb/") for p in data)
    assert pipe.stage("fetch", dataset="sidd").outs[0][1].path == "/scratch/rb/raw/sidd"


def test_snakemake_config_entries_become_overrides():
    assert snakemake_overrides({"profile": "paper", "seed": 5, "tasks": ["denoise"]}) == [
        "profile=paper", "seed=5", "tasks=[denoise]"]  # fmt: skip
    nested = {"profiles": {"demo": {"train": {"steps": "5", "models": {"nafnet": {"betas": ["0.9", "0.99"]}}}}}}
    assert snakemake_overrides(nested) == ["profiles.demo.train.steps=5",
                                                    "profiles.demo.train.models.nafnet.betas=[0.9, 0.99]"]


def test_aggregate_reads_exactly_the_cells_of_the_grid(tmp_path):
    from restorebench.aggregate import build_table

    def write(task, model, cell):
        path = tmp_path / "metrics/finetune" / task / model / f"{cell}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"psnr": 30.0, "ssim_matlab3d": 0.9, "ssim_basicsr": 0.9}))

    write("denoise", "identity", "none")
    write("denoise", "nafnet", "full")
    write("denoise", "nafnet", "frozen")  # left from an earlier, larger grid
    cells = [pipeline.Cell("denoise", "identity", "none"), pipeline.Cell("denoise", "nafnet", "full")]
    key = [(c.task, c.model, c.name) for c in cells]
    table, _ = build_table(tmp_path / "metrics", ["denoise"], evals_dir=tmp_path / "eval", cells=key)
    assert sorted(table[table["source"] == "measured"]["strategy"]) == ["full", "none"]
    with pytest.raises(ValueError, match="llrd.json: missing"):
        build_table(tmp_path / "metrics", ["denoise"], evals_dir=tmp_path / "eval",
                    cells=[*key, ("denoise", "nafnet", "llrd")])


OFFICIAL_GRID = {"datasets": ["sidd"], "tasks": ["denoise"], "models": ["nafnet"], "strategies": [],
                 "pretrain_models": {"ipt": [], "dcpt": []},
                 "profiles.demo.official": {"nafnet": {"denoise": "checkpoints/NAFNet-SIDD-demo.pth"}}}  # fmt: skip


def test_official_cells_are_planned_without_training(project_root):
    pipe = _load(project_root, *(f"{k}={json.dumps(v)}" for k, v in OFFICIAL_GRID.items()))
    assert pipe.cells() == [pipeline.Cell("denoise", "nafnet", "official")]
    ev = pipe.stage("evaluate_official", task="denoise", model="nafnet")  # no run folder: no model card
    assert ev.args == "evaluate --task denoise --model nafnet --strategy official --pretrain none"
    assert ev.deps[0] == "checkpoints/NAFNet-SIDD-demo.pth" and "profiles.demo.official.nafnet.denoise" in ev.params
    assert {s.rule for s in pipe.stages()} == {"fetch", "validate", "evaluate_identity", "evaluate_official",
                                               "aggregate", "report"}  # no finetune, no store  # fmt: skip


def _save_official_nafnet(path: Path) -> dict:
    """A demo NAFNet saved as the official release files are: its state dict under `params` (a .pth)."""
    import torch

    from restorebench.models import build_model

    torch.manual_seed(0)
    net = build_model("nafnet", variant="demo")
    for p in net.parameters():  # a random, non-identity restorer
        p.data.normal_(0, 0.02)
    path.parent.mkdir(parents=True)
    torch.save({"params": net.state_dict()}, path)
    return net.state_dict()


@pytest.mark.slow
def test_official_checkpoint_is_scored_through_the_evaluate_stage(project_root, tmp_path):
    """A checkpoint in the official layout named in `official` is scored by both orchestrators' evaluate
    stage (the same command) and lands in the table as the cell `official`."""
    from tests.helpers.project import git_init, run, tool_env

    env = tool_env(OMP_NUM_THREADS="1")  # DVC's commands get torch's default threads, Snakemake's --threads 1
    repo = copy_project(project_root, tmp_path / "repo")
    set_params(repo / "params.yaml", **OFFICIAL_GRID)
    _save_official_nafnet(repo / "checkpoints/NAFNet-SIDD-demo.pth")
    generate_dvc(repo)
    twin = shutil.copytree(repo, tmp_path / "twin")
    run([str(BIN / "snakemake"), "--cores", "1", "results/table.csv"], repo, env)
    table = pd.read_csv(repo / "results/table.csv")
    row = table.query("model == 'nafnet' and source == 'measured'")
    assert list(row["strategy"]) == ["official"] and list(row["pretrain"]) == ["none"]
    metrics = json.loads((repo / "metrics/finetune/denoise/nafnet/official.json").read_text())
    provenance = json.loads((repo / "results/eval/denoise/nafnet/official/provenance.json").read_text())
    assert provenance["init"] == "official:checkpoints/NAFNet-SIDD-demo.pth" and provenance["checkpoint_sha256"]
    floor = table.query("model == 'identity'")["psnr"].item()
    assert metrics["psnr"] != pytest.approx(floor)  # the model ran
    git_init(twin)
    out = run([str(BIN / "dvc"), "repro"], twin, env)
    assert "Running stage 'evaluate_official.denoise.nafnet'" in out and "Running stage 'finetune" not in out
    theirs = json.loads((twin / "metrics/finetune/denoise/nafnet/official.json").read_text())
    assert theirs["psnr"] == metrics["psnr"]


# ---------------------------------------------------------------------------------------------- end to end

COPY = ["Snakefile", "dvc.yaml", "params.yaml", "workflow", "src", ".dvc/config", ".dvcignore", ".gitignore"]


def _run(cmd: list[str], cwd: Path) -> str:
    # one torch thread in every job of both orchestrators (Snakemake passes --threads 1 itself): torch's CPU
    # kernels sum in an order that depends on the thread count (measured: DCPT weights differ by ~3e-4
    # between 1 and 2 threads; the same count twice is bit-identical), and the two tables must be equal
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1",
           "OMP_NUM_THREADS": "1"}
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert out.returncode == 0, f"{' '.join(cmd)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout


def _copy_cut_project(project_root: Path, repo: Path) -> None:
    """The project, its grid cut to nafnet/full plus DCPT for nafnet (IPT off), 20 training steps."""
    copy_project(project_root, repo, tuple(COPY))
    set_params(repo / "params.yaml", models=["nafnet"], strategies=["full"],
               pretrain_models={"ipt": [], "dcpt": ["nafnet"]}, **{"profiles.demo.train.steps": 20})
    generate_dvc(repo)  # the grid changed: dvc.yaml follows


TABLES: dict[str, pd.DataFrame] = {}  # the DVC run's table, for the Snakemake test to compare with


@pytest.mark.slow
def test_dvc_pipeline_on_two_branches(project_root, tmp_path):
    repo = tmp_path / "repo"
    _copy_cut_project(project_root, repo)
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
    _run(["git", "init", "-q", "-b", "main"], repo)
    _run([*git, "add", "-A"], repo)
    _run([*git, "commit", "-qm", "project"], repo)  # dvclive needs a repo with a commit
    _run(["dvc", "repro"], repo)
    table = pd.read_csv(repo / "results" / "table.csv")
    TABLES["dvc"] = table
    measured = table[table["source"] == "measured"]
    cells = set(zip(measured["task"], measured["model"], measured["strategy"], measured["pretrain"], strict=True))
    assert cells == {(t, m, s, p) for t in ("denoise", "deblur")
                     for m, s, p in [("identity", "none", "none"), ("nafnet", "full", "none"), ("nafnet", "full", "dcpt")]}
    assert (repo / "metrics/pretrain/dcpt/denoise/nafnet.json").exists()  # DCPT ran through DVC too
    assert not (repo / "runs/pretrain/ipt").exists()  # IPT turned off: no stage ran it
    assert set(table["source"]) == {"measured", "published"}
    assert (repo / "results" / "report.html").stat().st_size > 10_000
    # the identity floor equals the PSNR of the sample's noisy SIDD blocks, computed directly from the .mat
    from scipy.io import loadmat

    raw = repo / "data/raw/sidd"
    noisy = loadmat(raw / "ValidationNoisyBlocksSrgb.mat")["ValidationNoisyBlocksSrgb"].astype(np.float64) / 255
    gt = loadmat(raw / "ValidationGtBlocksSrgb.mat")["ValidationGtBlocksSrgb"].astype(np.float64) / 255
    mse = ((noisy - gt) ** 2).reshape(-1, *noisy.shape[2:]).mean(axis=(1, 2, 3))
    direct = float(np.mean(10 * np.log10(1.0 / mse)))
    floor = measured.query("task == 'denoise' and model == 'identity'")["psnr"].item()
    assert floor == pytest.approx(direct, abs=1e-5)
    _run([*git, "add", "-A"], repo)
    _run([*git, "commit", "-qm", "demo"], repo)

    _run(["git", "checkout", "-q", "-b", "more-steps"], repo)
    set_params(repo / "params.yaml", **{"profiles.demo.train.steps": 30})
    _run(["dvc", "repro"], repo)
    _run([*git, "commit", "-qam", "more steps"], repo)

    params = json.loads(_run(["dvc", "params", "diff", "main", "--json"], repo))
    changed = params["params.yaml"]
    assert changed["profiles.demo.train.steps"] == {"old": 20, "new": 30, "diff": 10}
    metrics = json.loads(_run(["dvc", "metrics", "diff", "main", "--json"], repo))
    cell = metrics["metrics/finetune/denoise/nafnet/full.json"]["psnr"]
    assert isinstance(cell["diff"], float) and cell["diff"] != 0.0
    assert cell["new"] == pytest.approx(cell["old"] + cell["diff"])
    gain = metrics["metrics/finetune/denoise/nafnet/full.json"]["gain"]  # over the degraded input
    assert gain["diff"] == pytest.approx(cell["diff"], abs=2e-4)  # the floor did not move
    assert "metrics/finetune/denoise/identity/none.json" not in metrics  # unchanged cells show no delta
    # the finetuned cell describes itself and the report was built
    assert json.loads((repo / "runs/finetune/denoise/nafnet/full/config.json").read_text())["model"] == "nafnet"
    assert "PSNR" in (repo / "runs/finetune/denoise/nafnet/full/README.md").read_text()


@pytest.mark.slow
def test_snakemake_gives_the_same_table_then_has_nothing_to_do(project_root, tmp_path):
    """The same cut grid through Snakemake: the same cells and scores as DVC's run, and a second plan is
    empty (a finished cell is not trained again) until a parameter of the cells changes."""
    repo = tmp_path / "repo"
    _copy_cut_project(project_root, repo)
    snakemake = [str(BIN / "snakemake"), "--cores", "2", "results/table.csv"]
    _run(snakemake, repo)
    table = pd.read_csv(repo / "results" / "table.csv")
    if "dvc" in TABLES:  # run after the DVC test (this file's order): same cells, same numbers
        key = ["source", "task", "model", "strategy", "pretrain"]
        ours = table.set_index(key).sort_index()
        theirs = TABLES["dvc"].set_index(key).sort_index()
        assert list(ours.index) == list(theirs.index)
        for col in ("psnr", "ssim_matlab3d", "ssim_basicsr"):  # bit-identical: same seeds, same threads
            np.testing.assert_array_equal(ours[col].to_numpy(float), theirs[col].to_numpy(float), err_msg=col)
    again = _run([str(BIN / "snakemake"), "-n", "results/table.csv"], repo)
    assert "Nothing to be done" in again, again[-2000:]
    set_params(repo / "params.yaml", **{"profiles.demo.train.steps": 30})
    plan = _run([str(BIN / "snakemake"), "-n", "results/table.csv"], repo)
    assert "finetune" in plan and "fetch" not in plan.split("Job stats:")[-1], plan[-2000:]
