"""What one training step of a model costs, measured by running it on the meta device (no memory, no math).

The model is built under `torch.device("meta")` at its real size and runs forward + backward on a meta
batch at the real crop. Two things are counted while it runs:

- the tensors autograd saves for the backward pass (`torch.autograd.graph.saved_tensors_hooks`), each
  storage once, parameters left out (they are counted apart): the activation memory of the step;
- the FLOPs of forward and backward (torch.utils.flop_counter's formulas: matmuls, convolutions,
  attention), activation recomputation included when activation checkpointing is on (accounted per
  block: `_saved_and_flops`).

The saved tensors split into a fixed part (the bf16 copies of the weights that mixed precision saves) and
a part per image. Mixed precision (the loop's bf16 autocast on CUDA, restorebench.train.loop.pixel_objective)
cannot run on meta tensors, and torch's attention takes its math path there, so `StepMode` applies CUDA
autocast's casting rules and a fused attention kernel's saved tensors at the torch-function level, above
autograd: the saved tensors are then those of a CUDA step.

The GPU memory of a step is then (`StepCost.gpu_bytes`): fp32 weights, fp32 gradients and AdamW's two
fp32 moments of the trainable parameters, the saved tensors of the micro-batch, and a transient of twice
the largest saved tensor (a gradient being formed beside its input; with activation checkpointing, one
block's recomputed activations too). benchmarks/gpu_check.sh holds these
figures against torch.cuda.max_memory_allocated on a lent GPU.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

GIB = 2**30

# CUDA autocast's lists (aten/src/ATen/autocast_mode.cpp, torch 2.x): ops that run in the lower precision,
# and ops that run in fp32; every other op runs in the dtype of its inputs (promoted when they differ).
LOWER_PRECISION = frozenset({
    "linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d",
    "matmul", "__matmul__", "__rmatmul__", "mm", "bmm", "baddbmm", "addmm", "addbmm", "addmv", "addr", "mv",
    "einsum", "prelu", "scaled_dot_product_attention", "chain_matmul", "multi_dot",
})  # fmt: skip
FULL_PRECISION = frozenset({
    "layer_norm", "group_norm", "softmax", "log_softmax", "softmin", "exp", "expm1", "log", "log10", "log2",
    "log1p", "pow", "rsqrt", "reciprocal", "norm", "cosine_similarity", "mse_loss", "l1_loss",
    "smooth_l1_loss", "cumsum", "cumprod", "logsumexp", "cdist", "dist", "erfinv", "softplus",
})  # fmt: skip


class _FusedAttention(torch.autograd.Function):
    """Shapes and saved tensors of a fused attention kernel (CUDA's flash / memory-efficient SDPA: q, k, v,
    the output and an fp32 log-sum-exp per query are kept, never the (N, M) attention matrix), for meta
    tensors; on meta, torch's SDPA takes the math path, which would save that matrix."""

    @staticmethod
    def forward(ctx, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        out = q.new_empty((*q.shape[:-1], v.shape[-1]))
        lse = q.new_empty(q.shape[:-1], dtype=torch.float32)
        ctx.save_for_backward(q, k, v, out, lse)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        q, k, v, _, _ = ctx.saved_tensors
        return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def attention_flops(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[int, int]:
    """(forward, backward) FLOPs of attention of q (..., N, D) over k, v (..., M, D / Dv), as torch's
    flop_counter counts SDPA: two matmuls forward, four backward (2 FLOPs per multiply-add)."""
    batch = q.numel() // (q.shape[-2] * q.shape[-1])
    n, d, m, dv = q.shape[-2], q.shape[-1], k.shape[-2], v.shape[-1]
    forward = 2 * batch * n * m * (d + dv)
    return forward, 2 * forward


class StepMode(TorchFunctionMode):
    """What a CUDA training step does that meta tensors would not do by themselves:

    - with `amp`, CUDA autocast's bf16 casting rules: the inputs of a LOWER_PRECISION function are cast to
      bf16, those of a FULL_PRECISION function to fp32 (a weight's cast cached for the region, as autocast
      caches the casts of leaf tensors); autocast sits above autograd, as a torch-function mode does, so the
      saved tensors have the dtypes a CUDA step saves;
    - scaled_dot_product_attention as a fused kernel (_FusedAttention); its FLOPs go to `attention`;
    - a meta tensor's truth value (a guard on the data, e.g. `if not torch.isfinite(h).all()`) is True.
    """

    def __init__(self, amp: bool) -> None:
        super().__init__()
        self.amp = amp
        self._cache: dict[int, torch.Tensor] = {}
        self.attention = 0

    def _cast(self, x, dtype: torch.dtype):
        if not (isinstance(x, torch.Tensor) and x.is_floating_point() and x.dtype != dtype):
            return x
        if isinstance(x, nn.Parameter):  # autocast's weight cache: one cast per leaf per region
            if id(x) not in self._cache:
                self._cache[id(x)] = x.to(dtype)
            return self._cache[id(x)]
        return x.to(dtype)

    def casts(self) -> list[torch.Tensor]:
        """The cast copies of the weights made so far."""
        return list(self._cache.values())

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name == "__bool__" and args[0].is_meta:  # a data check (transformers' isfinite guard): as if it passed
            return True
        dtype = None
        if self.amp:
            dtype = torch.bfloat16 if name in LOWER_PRECISION else torch.float32 if name in FULL_PRECISION else None
        if dtype is not None:
            args = tuple(self._cast(a, dtype) for a in args)
            if name == "einsum" and args and isinstance(args[-1], list | tuple):  # einsum(eq, [a, b])
                args = (*args[:-1], [self._cast(a, dtype) for a in args[-1]])
            kwargs = {k: self._cast(v, dtype) for k, v in kwargs.items()}
        if name == "scaled_dot_product_attention":
            q, k, v = (list(args) + [kwargs.get(n) for n in ("query", "key", "value")][len(args):])[:3]
            forward, backward = attention_flops(q, k, v)
            self.attention += forward + (backward if torch.is_grad_enabled() and q.requires_grad | k.requires_grad
                                         | v.requires_grad else 0)  # fmt: skip
            return _FusedAttention.apply(q, k, v)
        return func(*args, **kwargs)


@dataclass(frozen=True)
class StepCost:
    """One model's training step at one crop, as measured (bytes, FLOPs); `gpu_bytes(m)` for m images."""

    params: int  # every parameter
    trainable: int  # the parameters the strategy trains
    fixed_bytes: int  # saved tensors that do not grow with the batch (bf16 weight copies)
    per_image_bytes: int  # saved tensors per image
    transient_bytes: int  # per image: twice the largest saved tensor (+ a checkpointed block's recompute)
    flops_per_image: float  # forward + backward
    amp: bool
    checkpointing: bool
    batch_statistics: bool = False  # the model has BatchNorm layers (micro-batches change their statistics)

    def gpu_bytes(self, micro_batch: int) -> int:
        """Peak GPU memory (bytes) of a step of `micro_batch` images per micro-batch: fp32 weights (4 B
        per parameter), fp32 gradients and AdamW's two moments (12 B per trainable parameter), the saved
        tensors and the transient."""
        states = 4 * self.params + 12 * self.trainable
        return states + self.fixed_bytes + micro_batch * (self.per_image_bytes + self.transient_bytes)

    def to_dict(self) -> dict:
        return asdict(self)


def set_activation_checkpointing(model: nn.Module, on: bool) -> bool:
    """Recompute the activations of `model.checkpoint_blocks()` in the backward pass instead of keeping
    them (torch.utils.checkpoint, non-reentrant: the RNG state is replayed, so dropout / drop path draw the
    same masks). Returns whether the model has blocks to checkpoint (False: nothing changed)."""
    if not hasattr(model, "set_activation_checkpointing"):
        return False
    return bool(model.set_activation_checkpointing(on))


class _FlopCount(TorchDispatchMode):
    """The FLOPs of every aten op torch's FlopCounterMode knows (its `flop_registry`: matmuls, convolutions,
    attention, forward and backward), without FlopCounterMode's per-module bookkeeping (a tenth the time)."""

    def __init__(self) -> None:
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        count = flop_registry.get(func._overloadpacket)
        if count is not None:
            self.total += count(*args, **kwargs, out_val=out)
        return out


def _saved_and_flops(model: nn.Module, x: torch.Tensor, amp: bool,
                     blocks: list[nn.Module] = ()) -> tuple[int, int, int, float]:  # fmt: skip
    """(saved bytes, of which weight casts, transient bytes, FLOPs) of one forward + backward of `model` on
    `x`. The transient is twice the largest saved tensor, plus, with activation checkpointing of `blocks`,
    the largest block's own saved tensors (they exist again while it recomputes).

    Activation checkpointing is accounted, not run (its recomputation runs in the backward pass, outside
    the torch-function mode): what a block saves is left out and its input counted instead, as
    torch.utils.checkpoint keeps it, and the block's forward FLOPs count twice."""
    own = {p.untyped_storage()._cdata for p in model.parameters()}
    saved: dict[int, int] = {}
    mode = StepMode(amp)
    flops = _FlopCount()
    inside = {"depth": 0, "bytes": 0, "flops": 0, "largest_block": 0, "recompute": 0}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage._cdata in own:
            return t
        if inside["depth"]:
            inside["bytes"] += storage.nbytes()
        else:
            saved[storage._cdata] = storage.nbytes()
        return t

    def enter(module, args):
        if inside["depth"] == 0:
            inside["bytes"], inside["flops"] = 0, flops.total + mode.attention
            for a in args:  # the block's input, which checkpointing keeps
                if isinstance(a, torch.Tensor):
                    saved[a.untyped_storage()._cdata] = a.untyped_storage().nbytes()
        inside["depth"] += 1

    def leave(module, args, out):
        inside["depth"] -= 1
        if inside["depth"] == 0:
            inside["largest_block"] = max(inside["largest_block"], inside["bytes"])
            inside["recompute"] += flops.total + mode.attention - inside["flops"]

    hooks = [h for b in blocks for h in (b.register_forward_pre_hook(enter), b.register_forward_hook(leave))]
    try:
        with torch.device(x.device), mode, flops:
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                out = model(x)
                # the loop's losses are elementwise and read the output in fp32 (loop.pixel_objective)
                loss = (out.float() - x.float()).abs().mean()
            if loss.requires_grad:
                loss.backward()
    finally:
        for h in hooks:
            h.remove()
    casts = {c.untyped_storage()._cdata for c in mode.casts()}
    fixed = sum(n for k, n in saved.items() if k in casts)
    largest = max((n for k, n in saved.items() if k not in casts), default=0)
    transient = 2 * largest + inside["largest_block"]
    return sum(saved.values()), fixed, transient, float(flops.total + mode.attention + inside["recompute"])


def measure_step(build: Callable[[], nn.Module], patch: int, *, trainable: Callable[[nn.Module], None] | None = None,
                 amp: bool = True, checkpointing: bool = False, batch: int = 2,
                 device: str | torch.device = "meta") -> StepCost:
    """Measure a training step of the model `build()` makes, on a (batch, 3, patch, patch) batch.

    `trainable(model)` sets requires_grad and train mode for the strategy (restorebench.train.strategies);
    default: everything trains. `checkpointing`: with activation checkpointing of the model's
    `checkpoint_blocks()` (a model without them is measured as it is, checkpointing False). The model is
    built and run on `device` (meta: no memory, no arithmetic; a test runs a tiny model on the CPU too and
    compares). `batch` >= 2 so batch-norm layers train as they do; the saved tensors split into the
    weight casts (fixed) and the rest (per image: every one of them grows with the batch, which a test
    checks against a second batch size)."""
    device = torch.device(device)
    with torch.device(device):
        model = build()
    model.to(device)  # what a legacy constructor (torch.Tensor(n)) made on the CPU regardless
    model.train()
    if trainable is not None:
        trainable(model)
    blocks = model.checkpoint_blocks() if checkpointing and hasattr(model, "checkpoint_blocks") else []
    x = torch.rand(batch, 3, patch, patch, device=device)
    total, fixed, transient, flops = _saved_and_flops(model, x, amp, blocks)
    return StepCost(
        params=sum(p.numel() for p in model.parameters()),
        trainable=sum(p.numel() for p in model.parameters() if p.requires_grad),
        fixed_bytes=fixed,
        per_image_bytes=(total - fixed) // batch,
        transient_bytes=transient // batch,
        flops_per_image=flops / batch,
        amp=amp,
        checkpointing=bool(blocks),
        batch_statistics=any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()),
    )


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


@dataclass(frozen=True)
class MemoryPlan:
    """How each step of a run (global batch `batch`, the largest stage's) runs on one device: `accumulate`
    micro-batches of `micro_batch` images (micro_batch * accumulate == batch), with or without activation
    checkpointing; one accumulation for every stage of a progressive recipe."""

    batch: int
    micro_batch: int
    accumulate: int
    checkpointing: bool
    gpu_bytes: int  # the estimate at this micro-batch (the stage that needs the most)
    fits: bool  # False: not even the finest split fits the budget
    source: str = "estimate"  # estimate | probe (a CUDA probe backed off from the estimate)

    def to_dict(self) -> dict:
        return {**asdict(self), "gpu_memory_gib": round(self.gpu_bytes / GIB, 2)}


def choose_micro_batch(stages: list[tuple[int, StepCost, StepCost | None]], budget_bytes: float, *,
                       batch_statistics: bool, per_device: int = 1) -> MemoryPlan:  # fmt: skip
    """The accumulation a run's steps use: `stages` are (global batch, cost, cost with activation
    checkpointing or None) of each stage; the batch is split over `per_device` data-parallel devices.

    The fewest micro-batches (a common divisor of every stage's per-device batch) whose estimates all fit
    `budget_bytes`: accumulation gives the same update at no extra compute. Activation checkpointing (about
    one more forward per step) is the better trade only (1) when no split fits without it, or (2) for a
    model with batch statistics (BatchNorm), when it needs fewer micro-batches: batch-norm statistics over
    fewer images change the result, recomputation does not."""
    local = [max(1, b // per_device) for b, _, _ in stages]
    common = [k for k in divisors(min(local)) if all(n % k == 0 for n in local)]

    def first(ckpt: bool) -> int | None:
        for k in common:
            costs = [c_ck if ckpt else c for _, c, c_ck in stages]
            if all(c is not None and c.gpu_bytes(n // k) <= budget_bytes for c, n in zip(costs, local, strict=True)):
                return k
        return None

    plain = first(False)
    ckpt = first(True) if any(c is not None for _, _, c in stages) else None
    use_ckpt = ckpt is not None and (plain is None or (batch_statistics and ckpt < plain))
    k = (ckpt if use_ckpt else plain) or common[-1]
    costs = [(c_ck if use_ckpt else c, n) for (_, c, c_ck), n in zip(stages, local, strict=True)]
    worst = max(range(len(stages)), key=lambda i: costs[i][0].gpu_bytes(costs[i][1] // k))
    cost, n = costs[worst]
    return MemoryPlan(batch=stages[worst][0], micro_batch=n // k * per_device, accumulate=k, checkpointing=use_ckpt,
                      gpu_bytes=cost.gpu_bytes(n // k), fits=(ckpt if use_ckpt else plain) is not None)  # fmt: skip
