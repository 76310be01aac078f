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
    read_params,
    resolve,
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
    # DESIGN.md dataset facts
    assert paper.data.sidd.expected_pairs == {"train": 320, "val": 1280}
    assert paper.data.sidd.expected_groups == {"train": 160}
    assert paper.data.gopro.expected_pairs == {"train": 2103, "test": 1111}


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
    with pytest.raises(ConfigError, match=r"pretrain_models\.dcpt\[0\]: 'swin_upernet' is not in `models` \['nafnet'\]"):
        load_config(project_root / "params.yaml", ["models=[nafnet]"])
    cfg = load_config(project_root / "params.yaml", ["models=[nafnet]", "pretrain_models.dcpt=[nafnet]"])
    assert cfg.pretrain_models == {"ipt": ["ipt"], "dcpt": ["nafnet"]}


def test_each_model_trains_on_its_recipe_crop(project_root):
    demo = load_config(project_root / "params.yaml")
    paper = load_config(project_root / "params.yaml", ["profile=paper"])
    assert (demo.train.crop("ipt"), demo.train.crop("nafnet")) == (24, 48)  # IPT trains on its tile size
    assert (paper.train.crop("ipt"), paper.train.crop("nafnet")) == (48, 256)
