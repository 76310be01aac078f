"""params.yaml: every profile parses, and bad keys, types and names fail with the key named."""

from __future__ import annotations

import pytest
import yaml

from restorebench.config import (
    DATASETS,
    MODEL_NAMES,
    STRATEGIES,
    TASKS,
    ConfigError,
    load_config,
    profile_overrides,
    read_params,
    resolve,
    use_profile,
)


def test_every_profile_resolves(project_root):
    raw = read_params(project_root / "params.yaml")
    assert set(raw["profiles"]) >= {"demo", "paper"}
    assert raw["profile"] == "demo", "the default profile must be the embedded demo"
    for name in raw["profiles"]:
        cfg = load_config(project_root / "params.yaml", [f"profile={name}"])
        assert cfg.profile == name
        assert set(cfg.datasets) <= set(DATASETS)


def test_demo_uses_the_sample_and_paper_the_real_counts(project_root):
    demo = load_config(project_root / "params.yaml")
    paper = load_config(project_root / "params.yaml", ["profile=paper"])
    assert {demo.data.dataset(d).source for d in DATASETS} == {"sample"}
    # dataset facts (docs/ARCHITECTURE.md)
    assert paper.data.sidd.expected_pairs == {"train": 320, "val": 1280}
    assert paper.data.sidd.expected_groups == {"train": 160}
    assert paper.data.gopro.expected_pairs == {"train": 2103, "test": 1111}


def test_the_committed_grid_is_the_demo_profiles_and_each_profile_declares_one(project_root):
    """params.yaml's grid lists are what both orchestrators run: as committed, the demo's declared cut; the
    paper profile's grid is the whole study (every strategy, DCPT for every model)."""
    raw = read_params(project_root / "params.yaml")
    demo = load_config(project_root / "params.yaml")
    assert demo.grid.declared() == {key: raw[key] for key in demo.grid.declared()}
    assert set(demo.grid.declared()) == {"models", "strategies", "pretrain_models", "pretrain_strategies"}
    paper = load_config(project_root / "params.yaml", profile_overrides(raw, "paper"))
    assert paper.profile == "paper" and paper.strategies == list(STRATEGIES)
    assert paper.pretrain_models["dcpt"] == paper.models == list(MODEL_NAMES[:5])
    assert set(demo.strategies) < set(paper.strategies)  # the demo runs a cut of the study


def test_a_profiles_grid_is_checked_with_its_key(project_root, tmp_path):
    with pytest.raises(ConfigError, match=r"profiles\.paper\.grid\.strategies\[0\]: 'ful' is not allowed.*'full'"):
        load_config(project_root / "params.yaml", ["profiles.paper.grid.strategies=[ful]"])
    with pytest.raises(ConfigError, match=r"profiles\.demo\.grid\.pretrain_models\.dcpt\[0\]: 'ipt' is not in `models`"):
        load_config(project_root / "params.yaml", ["profiles.demo.grid.pretrain_models={ipt: [ipt], dcpt: [ipt]}"])
    # a scratch control needs a checkpoint: checked where the grid is applied, before anything is written
    params = tmp_path / "params.yaml"
    params.write_text((project_root / "params.yaml").read_text().replace(
        "        scratch: [swin_upernet, swin_mask2former, vit_adapter]\n      pretrain_strategies",
        "        scratch: [nafnet]\n      pretrain_strategies"))  # fmt: skip
    text = params.read_text()
    assert load_config(params).grid.pretrain_models["scratch"] == ["swin_upernet", "swin_mask2former", "vit_adapter"]
    with pytest.raises(ConfigError, match=r"profiles\.paper\.grid, set as the top-level lists, fails: "
                                          r"pretrain_models\.scratch\[0\]: 'nafnet' has no checkpoint"):
        use_profile(params, "paper")
    assert params.read_text() == text


def test_switching_profile_rewrites_only_the_grid_lines(project_root, tmp_path):
    """`restorebench profile paper` sets `profile` and the grid lists to the paper's, every other byte kept;
    switching back restores the file exactly."""
    params = tmp_path / "params.yaml"
    committed = (project_root / "params.yaml").read_text()
    params.write_text(committed)
    assert use_profile(params, "paper") == ["profile", "strategies", "pretrain_models"]
    paper = load_config(params)
    assert paper.profile == "paper" and paper.grid.declared() == {k: getattr(paper, k) for k in paper.grid.declared()}
    changed = [(a, b) for a, b in zip(committed.splitlines(), params.read_text().splitlines(), strict=True) if a != b]
    assert [b for _, b in changed] == [
        "profile: paper", "strategies: [frozen, full_lowlr, full, llrd]",
        "  dcpt: [swin_upernet, swin_mask2former, vit_adapter, nafnet, restormer]"]  # fmt: skip
    assert use_profile(params, "paper") == []
    assert use_profile(params, "demo") == ["profile", "strategies", "pretrain_models"]
    assert params.read_text() == committed
    with pytest.raises(ConfigError, match=r"profile: 'papr' is not allowed.*did you mean 'paper'"):
        use_profile(params, "papr")


def test_a_grid_the_file_cannot_run_leaves_it_untouched(project_root, tmp_path):
    params = tmp_path / "params.yaml"
    text = (project_root / "params.yaml").read_text().replace("      strategies: [frozen, full_lowlr, full, llrd]",
                                                              "      strategies: [frozen, fulll]")
    params.write_text(text)
    with pytest.raises(ConfigError, match=r"profiles\.paper\.grid\.strategies\[1\]: 'fulll'"):
        use_profile(params, "paper")
    assert params.read_text() == text and not list(tmp_path.glob(".params.yaml.*"))


def test_grid_lists_hold_known_names(project_root):
    cfg = load_config(project_root / "params.yaml")
    assert set(cfg.tasks) <= set(TASKS)
    assert set(cfg.models) <= set(MODEL_NAMES)
    assert set(cfg.strategies) <= set(STRATEGIES)


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        (
            "profiles.demo.data.sidd.sorce=url",
            r"profiles\.demo\.data\.sidd\.sorce: unknown key.*did you mean 'source'",
        ),
        (
            "profiles.paper.data.minfree_gb=3",
            r"profiles\.paper\.data\.minfree_gb: unknown key.*did you mean 'min_free_gb'",
        ),
        (
            "profile=papr",
            r"profile: 'papr' is not allowed; choose from \['demo', 'paper'\]; did you mean 'paper'",
        ),
        ("datasets=[sidd,gopr]", r"datasets\[1\]: 'gopr' is not allowed.*did you mean 'gopro'"),
        ("models=[nafnet,resformer]", r"models\[1\]: 'resformer'.*did you mean 'restormer'"),
        ("strategies=[frozn]", r"strategies\[0\]: 'frozn'.*did you mean 'frozen'"),
        ("seed=abc", r"seed: expected int, got 'abc'"),
        ("profiles.demo.data.min_free_gb=lots", r"profiles\.demo\.data\.min_free_gb: .*'lots'"),
        ("profiles.demo.data.sidd.expected_pairs.train=many", r"expected_pairs\.train: .*'many'"),
        ("tsaks=[denoise]", r"tsaks: unknown top-level key.*did you mean 'tasks'"),
        ("pretrain_models.ipt=[nafnet]", r"pretrain_models\.ipt\[0\]: 'nafnet' is not allowed; choose from \['ipt'\]"),
        ("pretrain_models.dcpt=[nafnt]", r"pretrain_models\.dcpt\[0\]: 'nafnt'.*did you mean 'nafnet'"),
        ("pretrain_models.dcpt=[ipt]", r"pretrain_models\.dcpt\[0\]: 'ipt' is not in `models`"),
        ("pretrain_models.ipt=ipt", r"pretrain_models\.ipt: expected a list of models"),
        ("pretrain_models.dcp=[nafnet]", r"pretrain_models\.dcp: 'dcp'.*did you mean 'dcpt'"),
        ("profiles.paper.train.compile_mode=reduce_overhead",
         r"profiles\.paper\.train\.compile_mode: 'reduce_overhead'.*did you mean 'reduce-overhead'"),
        ("profiles.demo.train.sync_every=0", r"profiles\.demo\.train\.sync_every: must be >= 1, got 0"),
        ("profiles.demo.pretrained={nafnet: null}",
         r"profiles\.demo\.pretrained: no entry for \['swin_upernet', 'swin_mask2former', 'vit_adapter', 'restormer', "
         r"'ipt'\]; give each model a checkpoint or null"),
        ("profiles.paper.evaluate.autocast=fp16x",
         r"profiles\.paper\.evaluate\.autocast: 'fp16x' is not allowed; choose from \['bf16'\]"),
        ("profiles.demo.evaluate.autocast=bf61", r"profiles\.demo\.evaluate\.autocast: 'bf61'.*did you mean 'bf16'"),
        ("profiles.paper.evaluate.tf32=maybe", r"profiles\.paper\.evaluate\.tf32: .*'maybe'"),
        ("profiles.paper.evaluate.batch=0", r"profiles\.paper\.evaluate\.batch: must be >= 1, got 0"),
    ],
)
def test_bad_params_name_the_key(project_root, override, expected):
    with pytest.raises(ConfigError, match=expected):
        load_config(project_root / "params.yaml", [override])


def test_unknown_dataset_lookup_names_it(project_root):
    cfg = load_config(project_root / "params.yaml")
    with pytest.raises(ConfigError, match=r"dataset: 'sid' is not allowed.*did you mean 'sidd'"):
        cfg.data.dataset("sid")


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="params file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "params.yaml"
    bad.write_text("profile: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_override_values_are_typed_and_digest_changes(project_root):
    raw = read_params(project_root / "params.yaml")
    a = resolve(raw)
    b = load_config(project_root / "params.yaml", ["seed=7"])
    assert b.seed == 7 and isinstance(b.seed, int)
    assert a.digest() != b.digest()
    assert a.digest() == resolve(yaml.safe_load((project_root / "params.yaml").read_text())).digest()


def test_cutting_models_names_the_dcpt_cells_it_leaves(project_root):
    with pytest.raises(ConfigError, match=r"pretrain_models\.dcpt\[0\]: 'nafnet' is not in `models` \['restormer'\]"):
        load_config(project_root / "params.yaml", ["models=[restormer]"])
    with pytest.raises(ConfigError, match=r"pretrain_models\.scratch\[0\]: 'swin_upernet' is not in `models`"):
        load_config(project_root / "params.yaml", ["models=[restormer]", "pretrain_models.dcpt=[restormer]"])
    cfg = load_config(project_root / "params.yaml", ["models=[restormer]", "pretrain_models.dcpt=[restormer]",
                                                     "pretrain_models.scratch=[]"])  # fmt: skip
    assert cfg.pretrain_models == {"ipt": ["ipt"], "dcpt": ["restormer"], "scratch": []}


def test_each_model_trains_on_its_recipe_crop(project_root):
    demo = load_config(project_root / "params.yaml")
    paper = load_config(project_root / "params.yaml", ["profile=paper"])
    assert (demo.train.crop("ipt"), demo.train.crop("nafnet")) == (24, 48)  # IPT trains on its tile size
    assert (paper.train.crop("ipt"), paper.train.crop("nafnet")) == (48, 256)


# Every value is checked at load with its full key path and the allowed range or choices.
@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("profiles.demo.train.steps=0", r"profiles\.demo\.train\.steps: must be >= 1, got 0"),
        ("profiles.demo.train.steps=-5", r"profiles\.demo\.train\.steps: must be >= 1, got -5"),
        ("profiles.paper.train.batch=0", r"profiles\.paper\.train\.batch: must be >= 1, got 0"),
        ("profiles.demo.train.accumulate=3", r"profiles\.demo\.train\.batch: must be a multiple of train\.accumulate \(3\)"),
        ("profiles.demo.train.models.nafnet.lr=-0.001", r"train\.models\.nafnet\.lr: must be > 0, got -0\.001"),
        ("profiles.demo.train.models.nafnet.lr=.nan", r"train\.models\.nafnet\.lr: must be > 0, got nan"),
        ("profiles.demo.train.models.nafnet.min_lr=1", r"train\.models\.nafnet\.min_lr: must be <= its lr"),
        ("profiles.demo.train.models.nafnet.betas=[0.9]",
         r"train\.models\.nafnet\.betas: must hold 2 values, got \[0\.9\]"),
        ("profiles.demo.train.models.restormer.betas=[0.9,1.0]",
         r"train\.models\.restormer\.betas\[1\]: must be in \[0, 1\), got 1\.0"),
        ("profiles.demo.train.models.nafnet.lrr=1",
         r"train\.models\.nafnet\.lrr: unknown key; allowed keys are \[.*'lr'.*\]; did you mean 'lr'"),
        ("profiles.demo.train.models.nafnt={lr: 1}", r"train\.models\.nafnt: 'nafnt'.*did you mean 'nafnet'"),
        ("profiles.demo.train.models.nafnet.loss=l2", r"train\.models\.nafnet\.loss: 'l2' is not allowed"),
        ("profiles.demo.train.holdout=1", r"profiles\.demo\.train\.holdout: must be in \[0, 1\), got 1"),
        ("profiles.demo.train.holdout=-0.1", r"train\.holdout: must be in \[0, 1\), got -0\.1"),
        ("profiles.demo.pretrain.holdout=1.5", r"pretrain\.holdout: must be in \[0, 1\)"),
        ("profiles.demo.train.workers=-1", r"train\.workers: must be >= 0, got -1"),
        ("profiles.demo.data.workers=-2", r"data\.workers: must be >= 0, got -2"),
        ("profiles.demo.data.min_free_gb=-1", r"data\.min_free_gb: must be >= 0, got -1"),
        ("profiles.demo.train.ema_decay=1", r"train\.ema_decay: must be in \[0, 1\)"),
        ("profiles.demo.train.checkpoint_every=0", r"train\.checkpoint_every: must be >= 1, got 0"),
        ("profiles.demo.evaluate.crop_size=0", r"evaluate\.crop_size: must be >= 8, got 0"),
        ("profiles.demo.evaluate.crops=-1", r"evaluate\.crops: must be >= 0, got -1"),
        ("profiles.demo.evaluate.tile=4", r"evaluate\.tile: must be >= 8, got 4"),
        ("profiles.demo.evaluate.tile=32", r"evaluate\.overlap: must be < evaluate\.tile \(32\), got 32"),
        ("profiles.demo.evaluate.overlap=-1", r"evaluate\.overlap: must be >= 0, got -1"),
        ("profiles.demo.prepare.sidd.size=0", r"prepare\.sidd\.size: must be >= 8, got 0"),
        ("profiles.demo.prepare.gopro.step=200", r"prepare\.gopro\.step: must be <= prepare\.gopro\.size"),
        ("profiles.demo.prepare.gopro_input=blurr", r"prepare\.gopro_input: 'blurr'.*did you mean 'blur'"),
        ("profiles.demo.degrade.patch=0", r"degrade\.patch: must be >= 8, got 0"),
        ("profiles.demo.data.sample.sidd_instances=0", r"data\.sample\.sidd_instances: must be >= 1, got 0"),
        ("profiles.demo.data.sidd.expected_pairs.train=-3", r"data\.sidd\.expected_pairs\.train: must be >= 0"),
        ("profiles.demo.data.sidd.expected_pairs.trian=3", r"expected_pairs\.trian: 'trian'.*did you mean 'train'"),
        ("profiles.demo.pretrain.ipt.steps=0", r"pretrain\.ipt\.steps: must be >= 1, got 0"),
        ("profiles.demo.pretrain.ipt.betas=[0.9]", r"pretrain\.ipt\.betas: must hold 2 values"),
        ("profiles.demo.pretrain.dcpt.lr=0", r"pretrain\.dcpt\.lr: must be > 0, got 0"),
        ("profiles.demo.pretrain.dcpt.batch=0", r"pretrain\.dcpt\.batch: must be >= 1, got 0"),
        ("profiles.demo.pretrain.ipt.temperature=0", r"pretrain\.ipt\.temperature: must be > 0"),
        ("profiles.demo.pretrain.dcpt.degradations=[noise_30,hazee]",
         r"pretrain\.dcpt\.degradations\[1\]: 'hazee'.*did you mean 'haze'"),
        ("profiles.demo.pretrain.ipt.tasks.rain=rian", r"pretrain\.ipt\.tasks\.rain: 'rian'.*did you mean 'rain'"),
        ("profiles.demo.pretrain.ipt.heads.denoise=noise3", r"ipt\.heads\.denoise: 'noise3'.*did you mean"),
        ("profiles.demo.degrade.tasks.haze=[{name: hazy}]",
         r"degrade\.tasks\.haze\[0\]\.name: 'hazy' is not allowed.*did you mean 'haze'"),
        ("profiles.demo.degrade.tasks.noise_30=[{name: gaussian_noise, sigam: 30}]",
         r"degrade\.tasks\.noise_30\[0\]\.sigam: 'sigam'.*did you mean 'sigma'"),
        ("profiles.demo.train.compile_mode=fast", r"train\.compile_mode: 'fast' is not allowed"),
    ],
)
def test_every_value_is_checked_at_load(project_root, override, expected):
    with pytest.raises(ConfigError, match=expected):
        load_config(project_root / "params.yaml", [override])


def test_a_variant_is_checked_with_its_key(project_root):
    cfg = load_config(project_root / "params.yaml", ["profiles.demo.variants.nafnet.denoise=dem"])
    with pytest.raises(ConfigError, match=r"profiles\.demo\.variants\.nafnet\.denoise: 'dem'.*did you mean 'demo'"):
        cfg.variant("nafnet", "denoise")


def test_a_field_declares_its_range_once():
    """The mechanism is generic: any dataclass field with `bounded(...)` is checked by the one walker."""
    from dataclasses import dataclass

    from restorebench.config import bounded, check_bounds

    @dataclass
    class Recipe:
        stages: list[int] = bounded(factory=lambda: [1, 2], ge=1)
        power: float = bounded(1.0, gt=0, le=2)

    check_bounds(Recipe(), "x")
    with pytest.raises(ConfigError, match=r"x\.stages\[1\]: must be >= 1, got 0"):
        check_bounds(Recipe(stages=[1, 0]), "x")
    with pytest.raises(ConfigError, match=r"x\.power: must be in \(0, 2\], got 3"):
        check_bounds(Recipe(power=3), "x")


def test_a_resolved_config_is_kept_and_never_stale(project_root, tmp_path, monkeypatch):
    """load_config keeps each resolved Config beside the params file, named by the file's bytes, the
    overrides and the resolving code: a second load skips validation, any edit or override resolves anew,
    a damaged entry is resolved again, and a file that fails validation leaves nothing kept."""
    import restorebench.config as config_mod

    params = tmp_path / "params.yaml"
    params.write_text((project_root / "params.yaml").read_text())
    first = load_config(params)
    (kept,) = (tmp_path / ".restorebench/config").iterdir()

    def no_resolve(raw):
        raise AssertionError("resolved again")

    monkeypatch.setattr(config_mod, "resolve", no_resolve)
    assert load_config(params) == first
    monkeypatch.undo()
    params.write_text(params.read_text().replace("\nseed: 0\n", "\nseed: 7\n"))
    assert load_config(params).seed == 7 and load_config(params, ["seed=3"]).seed == 3
    assert len(list(kept.parent.iterdir())) == 3
    kept.write_bytes(b"not a pickle")
    params.write_text((project_root / "params.yaml").read_text())
    assert load_config(params) == first
    params.write_text(params.read_text().replace("\nseed: 0\n", "\nseed: zero\n"))
    with pytest.raises(ConfigError, match="seed: expected int"):
        load_config(params)
    assert len(list(kept.parent.iterdir())) == 3
