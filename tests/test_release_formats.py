"""The official release files load as their code writes them, and a pickle that would run code does not.

- ViT-Adapter: mmcv 1.x `save_checkpoint` (mmcv/runner/checkpoint.py): {"meta", "state_dict", "optimizer"},
  meta with mmcv_version and time, mmseg's CheckpointHook meta (mmseg_version, config text, CLASSES,
  PALETTE; mmseg tools/train.py), IterBasedRunner's iter/epoch and EvalHook(save_best='mIoU')'s hook_msgs,
  whose best_score is mmseg's numpy float; written under numpy 1.x (the pickle names numpy.core.multiarray).
- NAFNet, Restormer: BasicSR `save_network` (basicsr/models/base_model.py): {"params": state_dict} or
  {"params": ..., "params_ema": ...}, each the module's own state_dict() (an OrderedDict with _metadata).
- IPT: `torch.save(self.model.state_dict(), path)` (huawei-noah/Pretrained-IPT model/__init__.py), under
  PyTorch 1.4 (its readme), which writes the legacy, non-zip format.
"""

from __future__ import annotations

import io
import os
import time
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

from restorebench.models import build_model, vit_adapter
from restorebench.models.weights import WeightsError, read_state_dict
from tests.helpers.vit_adapter_checkpoint import Arch, synthetic_checkpoint

ADE20K_CLASSES = ("wall", "building", "sky")  # the first of mmseg's ADE20KDataset.CLASSES (150 in the file)
ADE20K_PALETTE = [[120, 120, 120], [180, 120, 120], [6, 230, 230]]
# vit_adapter's demo sizes in the published layout (vit_adapter.VIT_ARCH / ADAPTER_ARCH / DECODER_ARCH "demo")
DEMO_ARCH = Arch(embed=32, depth=2, heads=2, img_size=64, conv_inplane=16, deform_heads=2, interactions=[[0, 0], [1, 1]],
                 feat=32, pixel_ffn=64, pixel_layers=1, pixel_heads=2, queries=8, decoder_layers=2, decoder_ffn=64,
                 num_classes=5)


def as_numpy1(path: Path) -> None:
    """Rewrite a torch.save zip in place so its pickle names numpy's scalar reconstructor as numpy 1.x did
    (`numpy.core.multiarray.scalar`; numpy 2 writes `numpy._core...`): the released files predate numpy 2."""
    src = zipfile.ZipFile(path)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename.endswith("/data.pkl"):
                data = data.replace(b"numpy._core.multiarray\nscalar", b"numpy.core.multiarray\nscalar")
                assert b"numpy.core.multiarray\nscalar" in data
            dst.writestr(info, data)
    src.close()
    path.write_bytes(out.getvalue())


def mmcv_checkpoint(state_dict: dict[str, torch.Tensor], extra_meta: dict | None = None) -> dict:
    """What mmcv 1.x IterBasedRunner.save_checkpoint wrote for ViT-Adapter's 80k run (values as a run has them)."""
    net = torch.nn.Linear(4, 2)
    opt = torch.optim.AdamW(net.parameters(), lr=2e-5, betas=(0.9, 0.999), weight_decay=0.05)
    net(torch.ones(1, 4)).sum().backward()
    opt.step()
    meta = {"mmseg_version": "0.20.2+4a6b1c2", "config": "model = dict(type='EncoderDecoderMask2Former', ...)\n",
            "CLASSES": ADE20K_CLASSES, "PALETTE": ADE20K_PALETTE, "env_info": "sys.platform: linux\n", "seed": 0,
            "exp_name": "mask2former_beitv2_adapter_large_896_80k_ade20k_ss.py",
            "hook_msgs": {"last_ckpt": "work_dirs/iter_80000.pth", "best_score": np.float64(0.5838),
                          "best_ckpt": "work_dirs/best_mIoU_iter_80000.pth"},
            "epoch": 1, "iter": 80000, "mmcv_version": "1.4.2", "time": time.asctime(), **(extra_meta or {})}
    return {"meta": meta, "state_dict": OrderedDict(state_dict), "optimizer": opt.state_dict()}


def test_mmcv_save_checkpoint_file_loads(tmp_path: Path) -> None:
    sd = synthetic_checkpoint(DEMO_ARCH, seed=4)
    path = tmp_path / "mask2former_beitv2_adapter_demo.pth"
    torch.save(mmcv_checkpoint(sd), path)
    as_numpy1(path)
    with pytest.raises(Exception, match="numpy.core.multiarray.scalar"):  # what a bare weights-only load says
        torch.load(path, weights_only=True)
    assert read_state_dict(path).keys() == sd.keys()
    model = vit_adapter.build(variant="demo", pretrained=str(path))
    own = model.state_dict()
    assert torch.equal(own["adapter.norms.3.running_var"], sd["backbone.norm4.running_var"])
    assert torch.equal(own["backbone.blocks.1.attn.proj.weight"], sd["backbone.blocks.1.attn.proj.weight"])
    with pytest.raises(Exception, match="numpy.core.multiarray.scalar"):  # the allowance ended with the load
        torch.load(path, weights_only=True)


def test_numpy2_float32_best_score_loads_too(tmp_path: Path) -> None:
    """A file written under numpy 2, with a float32 score (mmseg computes IoU from float32 areas)."""
    path = tmp_path / "ckpt.pth"
    torch.save(mmcv_checkpoint({"w": torch.ones(2)}, {"hook_msgs": {"best_score": np.float32(0.5)}}), path)
    assert torch.equal(read_state_dict(path)["w"], torch.ones(2))


class RunsCode:
    """Unpickling calls os.system: what a weights-only load exists to refuse."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("payload", ["os.system", "numpy array", "numpy int64"])
def test_anything_else_in_the_pickle_is_refused(tmp_path: Path, payload: str) -> None:
    marker = tmp_path / "ran"
    value = {"os.system": RunsCode(marker), "numpy array": np.zeros(3), "numpy int64": np.int64(3)}[payload]
    path = tmp_path / "evil.pth"
    torch.save(mmcv_checkpoint({"w": torch.ones(2)}, {"extra": value}), path)
    with pytest.raises(WeightsError, match=r"weights_only=True.*refused on purpose") as err:
        read_state_dict(path)
    assert {"os.system": "posix.system", "numpy array": "_reconstruct", "numpy int64": "'i8' refused"}[payload] in str(err.value)
    assert not marker.exists()


def basicsr_save_network(nets: list[torch.nn.Module], keys: list[str]) -> dict:
    """BasicSR BaseModel.save_network: each bare model's state_dict(), 'module.' stripped, tensors on the CPU."""
    save = {}
    for net, key in zip(nets, keys, strict=True):
        state = net.state_dict()
        for k, v in list(state.items()):
            if k.startswith("module."):
                k = k[7:]
            state[k] = v.cpu()
        save[key] = state
    return save


@pytest.mark.parametrize("name", ["nafnet", "restormer"])
def test_basicsr_release_files_load(tmp_path: Path, name: str) -> None:
    torch.manual_seed(0)
    net = build_model(name, variant="demo").eval()
    torch.manual_seed(1)
    ema = build_model(name, variant="demo").eval()
    x = torch.rand(1, 3, 24, 20)
    for keys, nets, want in ([["params"], [net], net], [["params", "params_ema"], [net, ema], ema]):
        path = tmp_path / f"{name}-{len(keys)}.pth"
        torch.save(basicsr_save_network(nets, keys), path)
        loaded = build_model(name, variant="demo", pretrained=str(path)).eval()
        with torch.no_grad():
            assert torch.equal(loaded(x), want(x)), keys  # with both, the EMA weights (the evaluated ones)


def test_ipt_release_file_loads(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = build_model("ipt", variant="demo").eval()
    path = tmp_path / "IPT_demo.pt"
    torch.save(net.state_dict(), path, _use_new_zipfile_serialization=False)
    assert not zipfile.is_zipfile(path)  # PyTorch 1.4's format
    loaded = build_model("ipt", variant="demo", pretrained=str(path)).eval()
    x = torch.rand(1, 3, 24, 24)
    with torch.no_grad():
        assert torch.equal(loaded(x), net(x))
