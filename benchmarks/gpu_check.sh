#!/usr/bin/env bash
# The GPU checks as one device command: about 6.5 minutes (H100/H200), 9 at most (the parts' timeouts;
# run it with timeout_s 560), most important first:
#   1. the GPU tests (pytest -m gpu): no host-device sync inside a training step, CUDA restore, metrics;
#   1b. benchmarks/memory.py: `restorebench plan`'s GPU memory estimate against torch.cuda.max_memory_allocated
#      for five paper cells at the micro-batches the plan picks (target: within 25%);
#   2. run_all.py models, eager: bf16 (the training precision: MFU target) then fp32, paper variants;
#   3. run_all.py loop, then eval: the real loader + loop (GPU utilisation, sync_every 1 vs 10); evaluation
#      at 1280x720 (tile batch, TF32 and bf16 against fp32: rates and PSNR change);
#   4. run_all.py models, compiled bf16 (compiled/eager ratios decide train.compile per model);
#   5. benchmarks/ema.py: per-tensor vs multi-tensor EMA update on the GPU.
# Each part has a deadline (no new row starts after it) inside a hard timeout, and bench.json is rewritten
# after every model row, so a part cut short keeps what it measured.
#
# Here first:   make gpu-wheels     (.whl/: what the device image lacks: omegaconf + antlr4, and this
#                                    project's timm / transformers versions)
# On the device (the `run` tool, carry [".whl"]):   bash benchmarks/gpu_check.sh
# Results: $OUT (else results/gpu/): gpu_check.log, memory.json, bench_{bf16,fp32,loop,eval,compiled}.json and
# bench_gpu.json, their merge (run_all.py --merge), whose summary ends with the speed targets judged.
# A smoke run on a CPU (paper variants, tiny steps): EXTRA_ARGS=--quick PATH=$PWD/.venv/bin:$PATH bash benchmarks/gpu_check.sh
set -u -o pipefail
out=${OUT:-results/gpu}
mkdir -p "$out"
log="$out/gpu_check.log"
: >"$log"
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .whl/*.whl >>"$log" 2>&1 || { echo "wheel install failed (see $log)"; tail -5 "$log"; exit 1; }
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
started=$(date +%s)

say() { echo "$@" | tee -a "$log"; }
part() {  # part NAME TIMEOUT_S ARGS...: one run_all.py call, its summary on stdout, all of it in the log
  local name=$1 limit=$2
  shift 2
  say "== part $name ($(($(date +%s) - started)) s in): run_all.py $*"
  # shellcheck disable=SC2086  # EXTRA_ARGS: more run_all.py flags, split on spaces
  timeout "$limit" python3 benchmarks/run_all.py --paper --out "$out/bench_$name.json" "$@" ${EXTRA_ARGS:-} 2>&1 |
    tee -a "$log" | sed -n '/^== summary/,$p'
  local rc=${PIPESTATUS[0]}
  say "   part $name: exit $rc$([ "$rc" = 124 ] && echo ' (its timeout: the json keeps the rows done)')"
}

{ nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
  python3 -c "import torch, timm, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda,
'timm', timm.__version__, 'transformers', transformers.__version__,
torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no CUDA device')"
  nproc; } 2>&1 | tee -a "$log"

say "== part tests: pytest -m gpu"
timeout 75 python3 -m pytest -q -m gpu -p no:cacheprovider -o addopts="" tests 2>&1 | tee -a "$log" | tail -4

say "== part memory: the plan's estimate vs torch.cuda.max_memory_allocated (benchmarks/memory.py)"
timeout 100 python3 benchmarks/memory.py --deadline 70 --out "$out/memory.json" 2>&1 | tee -a "$log" | grep -v Warning

part bf16 90 --only models --modes eager --dtypes bf16 --deadline 60
part fp32 65 --only models --modes eager --dtypes fp32 --deadline 40
part loop 60 --only loop --models nafnet,restormer,swin_upernet,vit_adapter --deadline 30
part eval 40 --only eval
part compiled 90 --only models --modes compiled --dtypes bf16 --deadline 60 \
  --models nafnet,restormer,swin_upernet,vit_adapter,swin_mask2former,ipt
say "== part ema: per-tensor vs multi-tensor EMA update (benchmarks/ema.py)"
timeout 30 python3 benchmarks/ema.py --repeats 20 2>&1 | tee -a "$log"
say "== all parts merged (rows pooled, targets judged across them) -> $out/bench_gpu.json"
parts=()
for name in bf16 fp32 loop eval compiled; do [ -f "$out/bench_$name.json" ] && parts+=("$out/bench_$name.json"); done
[ ${#parts[@]} -gt 0 ] && python3 benchmarks/run_all.py --merge "${parts[@]}" --out "$out/bench_gpu.json" 2>&1 | tee -a "$log"
say "== done in $(($(date +%s) - started)) s"
