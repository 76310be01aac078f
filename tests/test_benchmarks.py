"""benchmarks/run_all.py: a quick run of one tiny model and the loader writes bench.json with real numbers."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def test_run_all_quick_writes_bench_json(project_root, tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(project_root / "benchmarks" / "run_all.py"),
            "--quick",
            "--only",
            "models,loader,loop",
            "--models",
            "nafnet",
            "--dtypes",
            "fp32",
            "--no-compile",
            "--out",
            str(out),
        ],
        cwd=tmp_path,  # run_all finds params.yaml and its sibling modules from its own location
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "== summary" in proc.stdout and "nafnet" in proc.stdout
    bench = json.loads(out.read_text())
    assert set(bench) == {"meta", "models", "loader", "loop", "targets"}
    assert bench["meta"]["sections"] == ["models", "loader", "loop"] and bench["meta"]["quick"] is True
    assert not list(tmp_path.glob(".bench.json.*"))  # the atomic write left no temporary file

    rows = bench["models"]["rows"]
    assert [(r["model"], r["dtype"], r["compiled"], r["status"], r.get("plain", False)) for r in rows] == [
        ("nafnet", "fp32", False, "ok", True),  # the plain fp32 eager loop: NCHW, default AdamW, read every step
        ("nafnet", "fp32", False, "ok", False),
        ("nafnet", "fp32", True, "skipped", False),
    ]
    assert rows[0]["channels_last"] is False and rows[0]["fused_adamw"] is False and rows[0]["sync_every"] == 1
    plain, rows = rows[0], rows[1:]
    assert [t["target"] for t in bench["targets"]] == ["nafnet >= 2x a plain fp32 eager loop",
                                                       "nafnet GPU utilisation while finetuning > 90%"]
    ok = rows[0]
    assert plain["gflops_per_step"] == ok["gflops_per_step"]  # the same architecture and batch
    assert ok["variant"] == ("demo" if bench["meta"]["device"] == "cpu" else "sidd-width32")
    for key in ("images_per_s", "step_s", "tflops", "gflops_per_step", "params_m"):
        assert ok[key] > 0, key
    assert ok["images_per_s"] == pytest.approx(ok["batch"] / ok["step_s"])
    if bench["meta"]["device"] == "cpu":
        assert ok["mfu"] is None and ok["peak_mem_gb"] is None  # no honest peak on a CPU
    assert rows[1]["reason"] == "--no-compile"

    loader = bench["loader"]
    assert set(loader["per_core_pairs_per_s"]) == {"store", "store_u8", "png"}
    assert all(v > 0 for v in loader["per_core_pairs_per_s"].values())
    assert loader["ceiling_pairs_per_s_per_core"] == loader["per_core_pairs_per_s"]["store_u8"]

    # the real loop: loader + loop.train, the loss read every step and every train.sync_every (demo: 10) steps
    loop = bench["loop"]
    assert [(r["model"], r["sync_every"]) for r in loop["rows"]] == [("nafnet", 1), ("nafnet", 10)]
    for r in loop["rows"]:
        assert r["images_per_s"] > 0 and 0.0 <= r["data_wait"] < 1.0
        assert r["steps"] == 4 and r["batch"] == 4 and r["patch"] == 48  # the demo profile's cell
        if bench["meta"]["device"] == "cpu":
            assert r["gpu_util_pct"] is None and r["gpu_util_note"] == "n/a: no GPU"
    assert loop["rows"][0]["over_sync_every_1"] == 1.0
    assert "loop (demo profile" in proc.stdout


def test_models_section_times_each_model_at_its_cells_crop(project_root, tmp_path):
    """IPT's cells train on its tiles (its recipe's patch), not on train.patch: its row, its MFU and its
    loop/step ratio are measured there, while the other models keep the profile's patch."""
    from benchmarks.models import profile_recipe

    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(project_root / "benchmarks" / "run_all.py"), "--quick", "--only", "models",
         "--models", "nafnet,ipt", "--dtypes", "fp32", "--no-compile", "--out", str(out)],
        cwd=tmp_path, capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = {r["model"]: r for r in json.loads(out.read_text())["models"]["rows"] if r["status"] == "ok"}
    ipt_crop = profile_recipe("demo", "ipt", project_root / "params.yaml")["own_patch"]
    assert ipt_crop == 24  # params.yaml's demo IPT recipe: 24x24 tiles
    assert rows["nafnet"]["size"] == 32 and rows["ipt"]["size"] == ipt_crop  # --quick's 32 for the rest
    assert "(ipt: 24x24, its cells' crop)" in proc.stdout and "ipt" in proc.stdout.split("== summary")[1]


def test_run_all_rejects_unknown_section(project_root, tmp_path):
    proc = subprocess.run(
        [sys.executable, str(project_root / "benchmarks" / "run_all.py"), "--only", "modles"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "modles" in proc.stderr and "models, loader, eval, loop, orchestration" in proc.stderr


def test_bench_times_whole_sync_windows():
    """A row times `steps` steps in windows of sync_every (each ending with the loss read), not one more."""
    from benchmarks import models as bench_models

    row = bench_models.bench("nafnet", "demo", batch=2, size=32, dtype="fp32", compiled=False, steps=5,
                             device="cpu", peak=None, warmup=1, sync_every=2)
    assert row["timed_steps"] == 5 and row["sync_every"] == 2
    assert row["images_per_s"] == pytest.approx(2 / row["step_s"])


def test_run_all_stops_starting_rows_past_its_deadline(project_root, tmp_path):
    """--deadline 0: no model or loop row starts, each is recorded as skipped, and bench.json is written."""
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(project_root / "benchmarks" / "run_all.py"), "--quick", "--only", "models,loop",
         "--models", "nafnet", "--dtypes", "fp32", "--modes", "eager", "--deadline", "0", "--out", str(out)],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    bench = json.loads(out.read_text())
    assert [(r["compiled"], r["status"], r["reason"]) for r in bench["models"]["rows"]] == [
        (False, "skipped", "past --deadline 0 s"),  # the plain fp32 eager baseline
        (False, "skipped", "past --deadline 0 s"),
        (True, "skipped", "off by default on a CPU to keep the run short; pass --compile"),
    ]
    assert bench["loop"]["rows"] == [] and bench["loop"]["skipped"] == [
        {"model": "nafnet", "sync_every": 1}, {"model": "nafnet", "sync_every": 10}]


@pytest.mark.parametrize("name, kind", [
    ("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64_warpgroupsize1x1x1_execute_segment_k_off", "matmul"),
    ("void cutlass::Kernel2<cutlass_80_tensorop_bf16_s16816gemm_relu_bf16_64x64_32x6_tn_align8>", "matmul"),
    ("sm90_xmma_fprop_implicit_gemm_bf16bf16_bf16f32_f32_nhwckrsc_nhwc_tilesize128x128x64", "conv"),
    ("void cudnn::cnn::wgrad2d_grouped_direct_kernel<float, float>", "conv"),
    ("fmha_cutlassF_bf16_aligned_64x64_rf_sm80(PyTorchMemEffAttention::AttentionKernel)", "attention"),
    ("void pytorch_flash::flash_fwd_kernel<Flash_fwd_kernel_traits<64, 128, 128, 4>>", "attention"),
    ("void at::native::(anonymous namespace)::vectorized_layer_norm_kernel<float, float>", "norm/reduce"),
    ("triton_red_fused_native_layer_norm_0", "norm/reduce"),
    ("void at::native::multi_tensor_apply_kernel<at::native::FusedAdamMathFunctor<float, 4>>", "optimizer"),
    ("Memcpy HtoD (Pinned -> Device)", "copy"),
    ("void at::native::vectorized_elementwise_kernel<4, at::native::GeluCUDAKernelImpl>", "elementwise"),
    ("triton_poi_fused_add_mul_0", "elementwise"),
    ("some_custom_kernel", "other"),
])
def test_kernel_names_fall_in_their_kind(name, kind):
    from benchmarks.models import kernel_kind

    assert kernel_kind(name) == kind


@pytest.mark.parametrize("groups", [1, 8, 64])
def test_step_flops_count_a_conv_backward_as_two_forwards(groups):
    """forward + backward of a conv (input and weight gradients) = 3x its forward multiply-adds, grouped or
    not; torch's own formula counts a depthwise conv's weight gradient `groups` times too high."""
    import torch

    from benchmarks.models import step_flops

    conv = torch.nn.Conv2d(64, 64, 3, padding=1, groups=groups, bias=False)
    x = torch.rand(2, 64, 16, 16, requires_grad=True)
    forward = 2 * 2 * 64 * (64 // groups) * 9 * 16 * 16  # 2 FLOPs per multiply-add, per output element
    assert step_flops(conv, x) == 3 * forward
    assert step_flops(conv, x.detach()) == 2 * forward  # no input gradient asked: the first layer's case


def test_speed_targets_judge_gpu_rows_and_say_why_not_elsewhere():
    from benchmarks.summary import speed_targets

    def row(model, dtype, rate, mfu=None, compiled=False, plain=False):
        # bench() records the model's is_transformer: the MFU target is for the transformers only
        return {"model": model, "transformer": model != "nafnet", "dtype": dtype, "compiled": compiled,
                "plain": plain, "status": "ok", "images_per_s": rate, "mfu": mfu}

    gpu = {"meta": {"device": "cuda"},
           "models": {"rows": [row("vit_adapter", "bf16", 300, 0.45), row("vit_adapter", "bf16", 330, 0.52, True),
                               row("restormer", "bf16", 200, 0.31), row("nafnet", "fp32", 100, plain=True),
                               row("nafnet", "bf16", 260, compiled=True), row("nafnet", "bf16", 150),
                               {"model": "ipt", "dtype": "bf16", "compiled": False, "status": "oom"}]},
           "loop": {"rows": [{"model": "nafnet", "sync_every": 1, "gpu_util_pct": 80.0},
                             {"model": "nafnet", "sync_every": 10, "gpu_util_pct": 93.5}]}}  # fmt: skip
    got = {t["target"]: (t["value"], t["pass"]) for t in speed_targets(gpu)}
    assert got == {"vit_adapter bf16 MFU >= 40%": (0.52, True), "restormer bf16 MFU >= 40%": (0.31, False),
                   "nafnet >= 2x a plain fp32 eager loop": (2.6, True),
                   "nafnet GPU utilisation while finetuning > 90%": (93.5, True)}
    cpu = {"meta": {"device": "cpu"}, "models": {"rows": [row("nafnet", "fp32", 130, plain=True),
                                                          row("nafnet", "fp32", 128)]}}
    (target,) = speed_targets(cpu)
    assert target["pass"] is None and "not the target's GPU" in target["why"]


def test_merge_pools_the_parts_rows_and_judges_targets_across_them(project_root, tmp_path):
    """gpu_check.sh writes one bench.json per part; --merge pools them (a measured row beats a skipped one)
    and judges NAFNet's best row, from another part, against the plain row."""

    def row(dtype, compiled, status, rate=None, plain=False):
        r = {"model": "nafnet", "variant": "sidd-width32", "dtype": dtype, "compiled": compiled, "status": status}
        if plain:
            r["plain"] = True
        if status == "ok":
            r.update(images_per_s=rate, mfu=None, peak_mem_gb=1.0)
        else:
            r["reason"] = "not in --modes"
        return r

    meta = {"device": "cuda"}
    models = {"profile": "paper", "device": "cuda", "batch": 32, "size": 256}
    eager = {"meta": meta, "models": {**models, "rows": [row("fp32", False, "ok", 100.0, plain=True),
                                                         row("fp32", False, "ok", 140.0),
                                                         row("bf16", True, "skipped")]}}
    compiled = {"meta": meta, "models": {**models, "rows": [row("fp32", False, "skipped"),
                                                            row("bf16", True, "ok", 250.0)]}}
    paths = []
    for name, part in (("eager", eager), ("compiled", compiled)):
        paths.append(tmp_path / f"bench_{name}.json")
        paths[-1].write_text(json.dumps(part))
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, str(project_root / "benchmarks" / "run_all.py"), "--merge", *map(str, paths),
                           "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    merged = json.loads(out.read_text())
    assert sorted((r["dtype"], r["compiled"], r["status"], bool(r.get("plain"))) for r in merged["models"]["rows"]) == [
        ("bf16", True, "ok", False), ("fp32", False, "ok", False), ("fp32", False, "ok", True)]
    (target,) = merged["targets"]
    assert target["value"] == pytest.approx(2.5) and target["pass"] is True and "bf16 compiled" in target["why"]
    assert "nafnet >= 2x a plain fp32 eager loop: 2.50x PASS" in proc.stdout
