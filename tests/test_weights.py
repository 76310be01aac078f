"""restorebench.models.weights: reading checkpoints safely, resolving references, loading loudly."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from safetensors.torch import save_file

from restorebench.models.weights import (
    WeightsError,
    adapt_keys,
    load_checked,
    read_pretrained,
    read_state_dict,
    resolve_pretrained,
)


@dataclass
class NotATensor:  # module level so it pickles; weights_only loading must refuse it
    value: int = 1


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
        self.head = nn.Linear(4, 2)


def test_pth_containers_and_prefixes(tmp_path: Path) -> None:
    path = tmp_path / "net.pth"
    torch.save({"params": {"module.w": torch.ones(2)}, "params_ema": {"module.w": torch.zeros(2)}, "iter": 7}, path)
    assert torch.equal(read_state_dict(path)["w"], torch.zeros(2))  # params_ema preferred
    assert torch.equal(read_state_dict(path, key="params")["w"], torch.ones(2))
    torch.save({"state_dict": {"_orig_mod.module.a.b": torch.ones(1), "step": 3}}, path)
    assert list(read_state_dict(path)) == ["a.b"]  # wrapper prefixes stripped, non-tensors dropped
    with pytest.raises(WeightsError, match="no container key 'params'"):
        read_state_dict(path, key="params")


def test_pickled_objects_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    torch.save({"model": {"w": torch.ones(1)}, "extra": NotATensor()}, path)
    with pytest.raises(WeightsError, match="weights_only=True"):
        read_state_dict(path)


def test_safetensors_file_and_snapshot_folder(tmp_path: Path) -> None:
    save_file({"a": torch.arange(3.0)}, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text('{"model_type": "x"}')
    assert torch.equal(read_state_dict(tmp_path / "model.safetensors")["a"], torch.arange(3.0))
    snap = read_pretrained(str(tmp_path))
    assert snap.config == {"model_type": "x"} and list(snap.state_dict) == ["a"]
    assert read_pretrained(str(tmp_path / "model.safetensors")).config is None  # a bare file has no config


def test_resolve_local_and_bad_references(tmp_path: Path) -> None:
    f = tmp_path / "w.safetensors"
    save_file({"a": torch.zeros(1)}, str(f))
    assert resolve_pretrained(str(f)) == f
    assert resolve_pretrained(tmp_path) == tmp_path
    with pytest.raises(WeightsError, match="no such file"):
        resolve_pretrained(str(tmp_path / "missing.pth"))
    with pytest.raises(WeightsError, match="no such file"):
        resolve_pretrained("not a hub id")


def test_offline_hub_id_says_how_to_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants as hf_constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)  # read at import time by huggingface_hub
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(WeightsError) as err:
        resolve_pretrained("openmmlab/upernet-swin-tiny")
    msg = str(err.value)
    assert "huggingface-cli download openmmlab/upernet-swin-tiny --local-dir DIR" in msg
    assert "pretrained=DIR" in msg and "Original error" in msg


def test_offline_hub_id_through_a_model_builder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import huggingface_hub.constants as hf_constants

    from restorebench.models import swin_mask2former

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(WeightsError, match="facebook/mask2former-swin-tiny-ade-semantic --local-dir"):
        swin_mask2former.build(pretrained="facebook/mask2former-swin-tiny-ade-semantic")


def test_load_checked_reports_and_fails_loudly() -> None:
    torch.manual_seed(0)
    src, dst = Tiny(), Tiny()
    sd = {k: v.clone() for k, v in src.state_dict().items() if not k.startswith("head.")}
    sd["extra.unused"] = torch.zeros(1)
    report = load_checked(dst, sd)
    assert torch.equal(dst.backbone[0].weight, src.backbone[0].weight)
    assert set(report.missing) == {"head.weight", "head.bias"} and report.unexpected == ["extra.unused"]
    assert "backbone.0.weight" in report.loaded

    bad = dict(sd, **{"backbone.0.weight": torch.zeros(5, 4)})
    with pytest.raises(WeightsError, match=r"backbone\.0\.weight: checkpoint \(5, 4\) vs model \(4, 4\)"):
        load_checked(Tiny(), bad)

    partial = {k: v for k, v in sd.items() if k != "backbone.1.running_var"}
    with pytest.raises(WeightsError, match=r"missing .*backbone\.1\.running_var"):
        load_checked(Tiny(), partial)
    # num_batches_tracked is rebuilt, not required
    load_checked(Tiny(), {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")})

    with pytest.raises(WeightsError, match="no tensor under"):
        load_checked(nn.Module(), {"x": torch.zeros(1)})


def test_adapt_keys_renames_only_where_needed() -> None:
    own = ["backbone.swin.encoder.mlp.fc1.weight", "backbone.other"]
    rules = [(r"^backbone\.encoder\.", "backbone.swin.encoder."), (r"intermediate\.dense\.", "mlp.fc1.")]
    sd = {"backbone.encoder.intermediate.dense.weight": torch.ones(1), "backbone.other": torch.zeros(1),
          "aux.head": torch.zeros(1)}
    out = adapt_keys(sd, own, rules)
    assert set(out) == {"backbone.swin.encoder.mlp.fc1.weight", "backbone.other", "aux.head"}
