"""Training-step speed of every model: images/s, achieved TFLOP/s, MFU and peak memory (the models part).

    python benchmarks/run_all.py --only models                  # CPU: demo variants, fp32 and bf16 eager
    python benchmarks/run_all.py --only models --paper --batch 8   # paper variants (the default on a GPU)

A step is the training loop's own (src/restorebench/train/loop.py): a uint8 batch converted to float on the
device, the model's pixel objective (its recipe's loss, bf16 autocast on CUDA), backward, fused AdamW on
CUDA over the strategy's parameter groups ("full"), the LR schedule step; the loss stays on the device and
is read back once per `sync_every` steps, as the loop does (its default: 10; 1 reads every step). Variants
and recipes come from params.yaml (`--task`'s variant of the demo or paper profile). FLOPs come from
torch.utils.flop_counter (forward + backward of one step, counted, not estimated as 3x forward); MFU divides
the achieved rate by the device's dense peak (--peak-tflops, else `device_peak`: H100/H200 SXM bf16 989,
TF32 494, fp32 without tensor cores 67; none for a CPU).
`section` times every row run_all.py asks for and prints a line per row.
"""

from __future__ import annotations

import functools
import re
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode, conv_flop_count

from restorebench.config import MODEL_NAMES, Config, load_config
from restorebench.models import build_model
from restorebench.train import strategies
from restorebench.train.loop import pixel_objective
from restorebench.train.schedule import warmup_cosine

# Dense peaks, TFLOP/s (NVIDIA H100 SXM datasheet; H200 has the same compute). fp32 matmuls run on the
# tensor cores as TF32 only where PyTorch allows it (cudnn.allow_tf32 is on by default for convolutions).
GPU_PEAKS = {"bf16": 989.0, "tf32": 494.0, "fp32": 67.0}


def device_peak(device: str, dtype: str) -> tuple[float | None, str]:
    """(peak TFLOP/s, which peak) of the device for `dtype`; (None, reason) where it is not known."""
    if device != "cuda":
        return None, "n/a: no honest peak for a CPU"
    name = torch.cuda.get_device_name(0)
    if not ("H200" in name or ("H100" in name and "PCIe" not in name)):
        return None, f"n/a: peak of {name!r} unknown (pass --peak-tflops)"
    if dtype == "bf16":
        return GPU_PEAKS["bf16"], "bf16 dense"
    if torch.backends.cuda.matmul.allow_tf32 or torch.backends.cudnn.allow_tf32:
        return GPU_PEAKS["tf32"], "tf32 dense (cudnn/matmul TF32 on)"
    return GPU_PEAKS["fp32"], "fp32 (no tensor cores)"


@functools.cache
def profile_config(profile: str, params: str | Path) -> Config:
    """params.yaml loaded with `profile` chosen (cached: every part asks for it)."""
    return load_config(params, [f"profile={profile}"])


def profile_variants(profile: str, task: str = "denoise", params: str | Path = "params.yaml") -> dict[str, str]:
    """model -> the variant `profile` trains for `task` (params.yaml's `variants` section)."""
    cfg = profile_config(profile, params)
    return {m: cfg.variant(m, task) for m in MODEL_NAMES}


def profile_recipe(profile: str, model: str, params: str | Path = "params.yaml") -> dict:
    """The model's training recipe (loss, lr, betas, weight decay), the profile's batch and patch, and the
    recipe's own patch where it names one (`own_patch`, else None: IPT's cells train on its tiles)."""
    cfg = profile_config(profile, params)
    r = cfg.train.recipe(model)
    return {"loss": r.loss, "lr": r.lr, "betas": (float(r.betas[0]), float(r.betas[1])),
            "weight_decay": r.weight_decay, "batch": cfg.train.batch, "patch": cfg.train.patch,
            "own_patch": r.patch,
            "channels_last": cfg.train.channels_last}


def conv_backward_flops(grad_out_shape, x_shape, w_shape, _bias, _stride, _padding, _dilation, transposed,
                        _output_padding, _groups, output_mask, out_shape=None, **kwargs) -> int:
    """FLOPs of aten.convolution_backward: each gradient asked for (input, weight) costs what the forward
    does, every (weight element, output position) product once. FlopCounterMode's own formula ignores
    `groups` for the weight gradient (torch/utils/flop_counter.py says it skips them), which counts a
    depthwise conv's backward C times too high: NAFNet and Restormer are full of them."""
    forward = conv_flop_count(x_shape, w_shape, grad_out_shape, transposed)
    return forward * (int(bool(output_mask[0])) + int(bool(output_mask[1])))


def step_flops(model: torch.nn.Module, x: torch.Tensor) -> float:
    """FLOPs of forward + backward on `x` (float), counted by FlopCounterMode (conv backward: see above)."""
    counter = FlopCounterMode(display=False, custom_mapping={torch.ops.aten.convolution_backward: conv_backward_flops})
    with counter:
        model(x).float().mean().backward()
    model.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def training_step(
    model: torch.nn.Module,
    *,
    device: torch.device,
    amp: bool,
    compiled: bool,
    channels_last: bool,
    loss: str = "l1",
    lr: float = 1e-4,
    betas: tuple[float, float] = (0.9, 0.999),
    weight_decay: float = 0.0,
    total_steps: int = 1000,
    fused: bool = True,
) -> Callable[[tuple[torch.Tensor, torch.Tensor]], torch.Tensor]:
    """One step of train/loop.py's `train` (strategy "full", accumulate 1) as a function of a (lq, gt) batch;
    returns the detached loss, still on the device (reading it is the caller's sync point).

    bf16 (amp) is CUDA autocast inside the loop's objective; on a CPU the loop runs fp32 only, and amp here
    wraps the step in CPU autocast so that a bf16/fp32 ratio can still be measured. fused=False: torch's
    default AdamW (multi-tensor on CUDA), the plain loop's.
    """
    cuda = device.type == "cuda"
    model.to(device)
    if channels_last and cuda:
        model.to(memory_format=torch.channels_last)
    objective = pixel_objective(loss, channels_last=channels_last, amp=amp)
    groups = strategies.optimizer_groups(model, "full", lr=lr, weight_decay=weight_decay)
    optimizer = torch.optim.AdamW(groups, lr=lr, betas=betas, fused=(cuda and fused) or None)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_cosine(s, total=total_steps, base_lr=lr, min_lr=lr * 1e-3)
    )
    forward = torch.compile(model) if compiled else model

    def step(batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        strategies.train_mode(model, "full")
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp and not cuda):
            value, _ = objective(forward, batch, device)
        value.backward()
        optimizer.step()
        schedule.step()
        return value.detach()

    return step


def host_syncs(step: Callable, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[int, str | None]:
    """How often one training step makes the host wait for the GPU (.item(), nonzero, a blocking copy ...),
    counted by CUDA's sync debug mode; the caller's loss read is not part of it. Returns (count, first
    warning's text). A step with syncs cannot run ahead of the GPU, whatever the loop does."""
    import warnings

    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            step(batch)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    found = [str(w.message) for w in caught if "synchroniz" in str(w.message)]
    return len(found), (found[0].splitlines()[0][:200] if found else None)


# CUDA kernel name -> kind, first match wins (cuBLAS/CUTLASS GEMMs, cuDNN convolutions, SDPA kernels ...)
KERNEL_KINDS = (
    ("attention", re.compile(r"flash|fmha|attention|efficient_attention|sdpa", re.I)),
    ("conv", re.compile(r"conv|implicit_gemm|implicit_convolve|winograd|dgrad|wgrad|fprop|cudnn", re.I)),
    ("matmul", re.compile(r"gemm|cutlass|xmma|cublas|sm\d+_|matmul|gemv", re.I)),
    ("norm/reduce", re.compile(r"norm|reduce|softmax|welford|sum_|mean", re.I)),
    ("optimizer", re.compile(r"adam|foreach|multi_tensor", re.I)),
    ("copy", re.compile(r"copy|memcpy|memset|cat_|index|gather|scatter|transpose|permute", re.I)),
    ("elementwise", re.compile(r"elementwise|vectorized|unrolled|pointwise|triton_poi|triton_", re.I)),
)


def kernel_kind(name: str) -> str:
    return next((kind for kind, pattern in KERNEL_KINDS if pattern.search(name)), "other")


def kernel_breakdown(step: Callable, batch: tuple[torch.Tensor, torch.Tensor], top: int = 5) -> dict:
    """One profiled step on CUDA: the share of its wall time some kernel was running (below 1: the GPU
    waits for the host: launch overhead, syncs, Python), and where the kernel time goes, by kind and by
    kernel. Profiling slows the host, so the busy share is a lower bound."""
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        start = time.perf_counter()
        float(step(batch))
        wall_us = (time.perf_counter() - start) * 1e6
    kernels: dict[str, float] = {}
    for event in prof.events():
        for k in getattr(event, "kernels", []):
            kernels[k.name] = kernels.get(k.name, 0.0) + float(k.duration)
    busy = sum(kernels.values())
    kinds: dict[str, float] = {}
    for name, us in kernels.items():
        kinds[kernel_kind(name)] = kinds.get(kernel_kind(name), 0.0) + us
    ranked = sorted(kernels.items(), key=lambda kv: -kv[1])[:top]
    return {"gpu_busy_share": busy / wall_us if wall_us else None, "kernel_ms": busy / 1e3,
            "profiled_step_ms": wall_us / 1e3, "kernels": len(kernels),
            "by_kind": {k: v / busy for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])} if busy else {},
            "top": [[n[:80], us / 1e3] for n, us in ranked]}


def bench(name: str, variant: str, *, batch: int, size: int, dtype: str, compiled: bool, steps: int,
          device: str, peak: float | None, warmup: int = 2, recipe: dict | None = None,
          channels_last: bool | None = None, budget_s: float | None = None, sync_every: int = 1,
          fused: bool = True) -> dict:
    """Time `steps` training steps (after `warmup`, which includes compilation) of one model variant, in
    windows of `sync_every` steps that each end by reading the loss (the loop's host-device sync); the rate
    is the batch over the median step time (window time / its steps). `budget_s` stops timing after that
    many seconds (at least two windows), which bounds a slow row on a CPU."""
    torch.manual_seed(0)
    dev = torch.device(device)
    recipe = dict(recipe or {})
    channels_last = recipe.pop("channels_last", True) if channels_last is None else channels_last
    recipe = {k: recipe[k] for k in ("loss", "lr", "betas", "weight_decay") if k in recipe}
    model = build_model(name, variant=variant).to(dev)
    g = torch.Generator().manual_seed(0)
    # uint8 batches on the host, as the loader yields them; pinned so the copy can overlap on CUDA
    lq = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, generator=g)
    gt = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, generator=g)
    if dev.type == "cuda":
        lq, gt = lq.pin_memory(), gt.pin_memory()
    flops = step_flops(model, lq.to(dev).float().div_(255))
    step = training_step(model, device=dev, amp=dtype == "bf16", compiled=compiled,
                         channels_last=channels_last, total_steps=warmup + steps, fused=fused, **recipe)
    t_compile = time.perf_counter()
    for _ in range(warmup):  # warm-up (and compilation)
        float(step((lq, gt)))
    warmup_s = time.perf_counter() - t_compile
    syncs = None
    if dev.type == "cuda":
        try:
            syncs = host_syncs(step, (lq, gt))
        except Exception as err:  # noqa: BLE001 - like the profile below: extra, so it must not lose the row
            syncs = (None, f"count failed: {type(err).__name__}: {str(err)[:160]}")
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times, timed = [], 0  # per-step seconds of each window; steps timed
    t0, cpu0 = time.perf_counter(), time.process_time()
    while timed < steps:
        if budget_s is not None and len(times) >= 2 and time.perf_counter() - t0 > budget_s:
            break
        n = min(sync_every, steps - timed)
        start = time.perf_counter()
        losses = [step((lq, gt)) for _ in range(n)]
        torch.stack(losses).tolist()  # the window ends when the device is done (the loop reads here too)
        times.append((time.perf_counter() - start) / n)
        timed += n
    if dev.type == "cuda":
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    kernels = None
    if dev.type == "cuda":
        try:
            kernels = kernel_breakdown(step, (lq, gt))
        except Exception as err:  # noqa: BLE001 - the profile is extra; its failure must not lose the row
            kernels = {"error": f"{type(err).__name__}: {str(err)[:200]}"}
    seconds = statistics.median(times)  # the median resists other jobs' bursts on a shared machine
    tflops = flops / seconds / 1e12
    return {
        "model": name,
        "variant": variant,
        "transformer": bool(getattr(model, "is_transformer", False)),  # the MFU target applies
        "dtype": dtype,
        "compiled": compiled,
        "batch": batch,
        "size": size,
        "channels_last": bool(channels_last and dev.type == "cuda"),
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "gflops_per_step": flops / 1e9,
        "warmup_s": warmup_s,
        "step_s": seconds,
        "timed_steps": timed,
        "sync_every": sync_every,
        "fused_adamw": bool(fused and dev.type == "cuda"),
        "host_syncs_per_step": None if syncs is None else syncs[0],  # the step's own, besides the loss read
        "host_sync_first": None if syncs is None else syncs[1],
        "step_s_mean": wall / timed,
        "kernels": kernels,  # CUDA: busy share of a profiled step and kernel time by kind (kernel_breakdown)
        "cpu_per_wall": cpu / wall,  # host CPU seconds per second: below the thread count = shared cores
        "images_per_s": batch / seconds,
        "tflops": tflops,
        "mfu": tflops / peak if peak else None,
        "peak_mem_gb": torch.cuda.max_memory_allocated() / 2**30 if dev.type == "cuda" else None,
    }


def section(*, paper: bool, task: str, device: str, models: list[str], dtypes: list[str], modes: list[str],
            plain: list[str], compiled: bool | None, params: Path, quick: bool = False, batch: int | None = None,
            size: int | None = None, steps: int | None = None, row_budget: float | None = None,
            peak_tflops: float | None = None, stop: Callable[[], str | None] = lambda: None,
            on_row: Callable[[list[dict]], None] = lambda rows: None) -> dict:
    """The models part: a row per model x dtype x (eager, compiled), plus the `plain` models' plain fp32 eager
    row, at the profile's batch (paper on CUDA or with `paper`, else demo) and each model's training crop.
    compiled: time torch.compile too (None: on CUDA only). A row is skipped, with why, when its mode is not
    in `modes` or once `stop()` says why no new row starts; `on_row(rows)` follows every row."""
    paper = paper or device == "cuda"
    profile = "paper" if paper else "demo"
    variants = profile_variants(profile, task, params)
    train = profile_recipe(profile, "nafnet", params)  # batch and patch are the profile's
    if quick:
        batch_, size_, warmup, steps_ = 2, 32, 1, 1
    elif device == "cuda":  # two windows of the loop's sync_every (10) steps
        batch_, size_, warmup, steps_ = train["batch"], train["patch"], 3, 20
    else:  # the demo profile's batch and patch; a paper-size batch takes minutes per step on a CPU
        demo = profile_recipe("demo", "nafnet", params)
        batch_, size_, warmup, steps_ = demo["batch"], demo["patch"], 1, 5
    asked = size  # --size: every model at this crop
    batch, size, steps = batch or batch_, size or size_, steps or steps_
    compile_on = compiled if compiled is not None else device == "cuda"
    # the loss is read every sync_every steps, as the loop does; on a CPU a step is synchronous anyway, and
    # windows of one step keep the median's resistance to other jobs' bursts
    sync_every = profile_config(profile, params).train.sync_every if device == "cuda" else 1
    # a CPU row stops timing after `budget` s (>= 2 steps): bf16 is emulated on most CPUs and very slow
    budget = row_budget if row_budget is not None else (None if device == "cuda" else 20.0)

    def crop(recipe: dict) -> int:  # what the model's cells train on: its recipe's own patch (IPT's tiles)
        return asked or recipe["own_patch"] or size

    def peak_of(dtype: str) -> tuple[float | None, str]:
        return (peak_tflops, "--peak-tflops") if peak_tflops else device_peak(device, dtype)

    own = {m: crop(profile_recipe(profile, m, params)) for m in models}
    own = {m: p for m, p in own.items() if p != size}
    note = (f"{profile} variants ({task}) on {device}"
            + ("" if paper else "; CPU: demo variants by default, --paper forces the paper ones")
            + f"; batch {batch} x {size}x{size}"
            + "".join(f" ({m}: {p}x{p}, its cells' crop)" for m, p in own.items())
            + f", {warmup} warm-up + {steps} timed steps"
            + (f" (at most {budget:.0f} s of them, >= 2 steps)" if budget else ""))
    print(f"\n== models: {note}", flush=True)
    rows: list[dict] = []
    timing = dict(batch=batch, steps=steps, device=device, budget=budget)
    # first (cheap, and a target's baseline): the NAFNet speed target is against "a plain fp32 eager loop
    # of the same architecture": fp32, eager, contiguous (NCHW) memory, torch's default AdamW, the loss read
    # every step
    for name in [m for m in plain if m in models] if "fp32" in dtypes and "eager" in modes else []:
        base = {"model": name, "variant": variants[name], "dtype": "fp32", "compiled": False, "plain": True}
        recipe = profile_recipe(profile, name, params)
        kwargs = dict(compiled=False, warmup=warmup, recipe=recipe, sync_every=1, channels_last=False, fused=False)
        rows.append(_row(base, stop(), kwargs, size=crop(recipe), dtype="fp32", peak=peak_of("fp32"), **timing))
        on_row(rows)
    for name in models:
        recipe = profile_recipe(profile, name, params)
        for dtype in dtypes:
            for compile_row in (False, True):
                base = {"model": name, "variant": variants[name], "dtype": dtype, "compiled": compile_row}
                why = None
                if compile_row and not compile_on:
                    why = "--no-compile" if compiled is False else \
                        "off by default on a CPU to keep the run short; pass --compile"
                elif ("compiled" if compile_row else "eager") not in modes:
                    why = f"not in --modes {','.join(modes)}"
                else:
                    why = stop()
                kwargs = dict(compiled=compile_row, warmup=max(warmup, 2) if compile_row else warmup,  # + recompile
                              recipe=recipe, sync_every=sync_every)
                rows.append(_row(base, why, kwargs, size=crop(recipe), dtype=dtype, peak=peak_of(dtype), **timing))
                on_row(rows)
    rates = ratios(rows)
    for r in rates:
        print("  ratios " + f"{r['model']:>17}: " + ", ".join(f"{k} {v:.2f}x" for k, v in r.items()
                                                           if k != "model" and v is not None), flush=True)
    return {"profile": profile, "task": task, "device": device, "batch": batch, "size": size,
            "warmup_steps": warmup, "timed_steps": steps, "row_budget_s": budget, "compile": compile_on, "note": note,
            "bf16_on_cpu": "CPU autocast; the training loop itself runs fp32 on a CPU" if device == "cpu" else None,
            "rows": rows, "ratios": rates}


def _row(base: dict, why: str | None, kwargs: dict, *, batch: int, size: int, dtype: str, steps: int, device: str,
         peak: tuple[float | None, str], budget: float | None) -> dict:
    """One timed row (or a skipped one when `why`); an OOM or a compile failure is a result, not a crash."""
    if why is not None:
        row = {**base, "status": "skipped", "reason": why}
    else:
        try:
            r = bench(base["model"], base["variant"], batch=batch, size=size, dtype=dtype, steps=steps,
                      device=device, peak=peak[0], budget_s=budget, **kwargs)
            row = {**base, **r, "status": "ok", "peak_name": peak[1]}
        except torch.OutOfMemoryError as err:
            row = {**base, "status": "oom", "reason": str(err).splitlines()[0]}
        except Exception as err:  # noqa: BLE001
            row = {**base, "status": "failed",
                   "reason": f"{type(err).__name__}: {(str(err).splitlines() or [''])[0][:200]}"}
        finally:
            if device == "cuda":
                torch.cuda.empty_cache()
    print("  " + line(row), flush=True)
    return row


def ratios(rows: list[dict]) -> list[dict]:
    """Per model: bf16/fp32 (eager, compiled) and compiled/eager (fp32, bf16) rates, None where a row is missing."""
    ok = {(r["model"], r["dtype"], r["compiled"]): r["images_per_s"] for r in rows
          if r["status"] == "ok" and not r.get("plain")}
    out = []
    for name in dict.fromkeys(r["model"] for r in rows):
        def ratio(a, b):
            return ok[a] / ok[b] if a in ok and b in ok else None
        out.append({"model": name,
                    "bf16/fp32 eager": ratio((name, "bf16", False), (name, "fp32", False)),
                    "bf16/fp32 compiled": ratio((name, "bf16", True), (name, "fp32", True)),
                    "compiled/eager fp32": ratio((name, "fp32", True), (name, "fp32", False)),
                    "compiled/eager bf16": ratio((name, "bf16", True), (name, "bf16", False))})
    return out


def line(r: dict) -> str:
    """One row as the section prints it."""
    mode = "plain" if r.get("plain") else "compiled" if r["compiled"] else "eager"
    head = f"{r['model']:>17} {r['variant']:>13} {r['dtype']:>5} {mode:>8}"
    if r["status"] != "ok":
        return f"{head}  {r['status']}: {r['reason']}"
    syncs = "" if r.get("host_syncs_per_step") is None else f", host syncs/step {r['host_syncs_per_step']}"
    k = r.get("kernels") or {}
    if k.get("gpu_busy_share") is not None:  # CUDA: one profiled step (kernel_breakdown)
        kinds = ", ".join(f"{kind} {100 * v:.0f}%" for kind, v in list(k["by_kind"].items())[:3])
        syncs += f"; GPU busy {100 * k['gpu_busy_share']:.0f}% of a profiled step: {kinds}"
    elif "error" in k:
        syncs += f"; kernel profile failed: {k['error'][:80]}"
    mfu = f"{100 * r['mfu']:.1f}%" if r.get("mfu") is not None else "n/a"
    mem = f"{r['peak_mem_gb']:.2f} GiB" if r.get("peak_mem_gb") is not None else "n/a"
    return (f"{head} {r['params_m']:7.2f}M {r['images_per_s']:9.2f} img/s {r['tflops']:8.4f} TFLOP/s "
            f"MFU {mfu:>6}  peak mem {mem}  ({r['batch']} x {r['size']}^2, {r['timed_steps']} steps, "
            f"host cpu/wall {r['cpu_per_wall']:.2f}{syncs})")
