#!/usr/bin/env bash
# The inference engine's open GPU measurements, as steps that each fit a 10-minute run: correctness
# tests of the kernels and engines first, then every timed variant.
#
#   STEPS="gpu_kernel_tests attention_64 attention_1" bash bench/gpu_engine_run.sh   # one H100/H200
#   DRY=1 bash bench/gpu_engine_run.sh      # any machine, CPU only: tiny shapes, checks the run end to end
#
# Steps (limits in seconds):
#   gpu_kernel_tests   300  the FP8 prefill op and its activation quantizer, the FP8 paths on 7B shapes,
#                           decode attention on CUDA cores against the reference (tests/unit/engine)
#   gpu_engine_tests   540  compiled FP8 prefill: bf16's four graphs, no recompile; engine tokens with
#                           decode attention on CUDA cores against the eager model
#   attention_64       240  bench.paged_attention_bench, 64 rows, 256 and 1024 keys: every kernel
#                           variant per tile (tensor cores, FP8 dots, CUDA cores)
#   attention_1        240  the same at batch 1, 256 and 2048 keys, the engine's split count and one pass
#   engine_tensor_cores, engine_cuda_cores
#                      570  bench.inference_bench, 7B, decode attention on tensor cores (the default)
#                           and on CUDA cores, one engine each: batch 1, 64 streams, kernel profiles
#   fp8_bf16, fp8_kv8  570  bench.fp8_bench, 7B with 32 layers, one engine each (bf16; FP8 weights
#                           and KV cache), 64 streams, TTFT of 512 tokens, accuracy
#   fp8_kv8_cuda_cores 570  fp8_kv8 with decode attention on CUDA cores
#   fp8_always         570  FP8 weights with FP8 tensor cores for prefill too (16-always)
#
# Without STEPS every step runs (about an hour on an H200). Needs python3 (PYTHON=... for another)
# with torch, triton and pytest importable; it installs nothing and needs no gRPC stubs. Logs, the
# benches' JSON and the summary go to $OUT when set, else to a temporary directory.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
STEP_LINES='^(\||host|copy bandwidth|[0-9]+ (passed|failed|skipped)|FAILED|ERROR)'
# shellcheck source=bench/steps.sh
source bench/steps.sh

say "# Inference engine on the GPU, $(date -u '+%Y-%m-%d %H:%M UTC')"
say "$("$PY" - <<'EOF'
import subprocess

import torch

try:
    import triton

    triton_version = triton.__version__
except ImportError:
    triton_version = "none"
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
print(f"host: {gpu}; torch {torch.__version__}, triton {triton_version}; commit {commit or 'unknown'}")
EOF
)"

KERNEL_TESTS=(tests/unit/engine/test_fp8_kernels.py tests/unit/engine/test_decode_kernels.py)
ENGINE_TESTS=(tests/unit/engine/test_compiled_prefill.py tests/unit/engine/test_decode_kernels.py)
KERNEL_SELECTION="prefill_op or quantizer or cuda_cores or asked_for or refused_together or paths_on_7b"
ENGINE_SELECTION="compiled_fp8 or (with_the_kernels and cuda-cores)"
FP8=(-m bench.fp8_bench --skip demo,kernels,70b --streams 64)
if [[ $DRY == 1 ]]; then
    # Kernels under Triton's CPU interpreter, engines and benches at tiny shapes; the GPU-only
    # tests are collected and skipped, which still checks that the selection names them.
    INTERPRET=(env TRITON_INTERPRET=1)
    ATTENTION=(-m bench.paged_attention_bench --dry-run)
    ATTENTION_1=("${ATTENTION[@]}")
    ENGINES=(-m bench.inference_bench --device cpu --shape tiny --new-tokens 8)
    FP8+=(--tiny)
else
    if [[ $("$PY" -c 'import torch; print(int(torch.cuda.is_available()))') != 1 ]]; then
        echo "torch sees no CUDA device: run on a GPU host, or DRY=1 for a CPU-only check of this script" >&2
        exit 2
    fi
    INTERPRET=()
    ATTENTION=(-m bench.paged_attention_bench --rows 64 --contexts 256,1024)
    ATTENTION_1=(-m bench.paged_attention_bench --rows 1 --contexts 256,2048 --splits engine,1)
    ENGINES=(-m bench.inference_bench --shape 7B --streams 64)
fi

step 300 gpu_kernel_tests "${INTERPRET[@]}" "$PY" -m pytest -q "${KERNEL_TESTS[@]}" -k "$KERNEL_SELECTION"
step 540 gpu_engine_tests "$PY" -m pytest -q "${ENGINE_TESTS[@]}" -k "$ENGINE_SELECTION"
step 240 attention_64 "${INTERPRET[@]}" "$PY" "${ATTENTION[@]}" --out "$LOGS/attention_64.json"
step 240 attention_1 "${INTERPRET[@]}" "$PY" "${ATTENTION_1[@]}" --out "$LOGS/attention_1.json"
# One engine a step: each compiles its decode graphs and the 32-layer prefill.
step 570 engine_tensor_cores "$PY" "${ENGINES[@]}" --variants auto --out "$LOGS/engine_tensor_cores.json"
step 570 engine_cuda_cores "$PY" "${ENGINES[@]}" --variants auto-cudacores --out "$LOGS/engine_cuda_cores.json"
step 570 fp8_bf16 "$PY" "${FP8[@]}" --engines bf16 --fp8-variants "" --out "$LOGS/fp8_bf16.json"
step 570 fp8_kv8 "$PY" "${FP8[@]}" --engines fp8-kv8 --fp8-variants "" --out "$LOGS/fp8_kv8.json"
step 570 fp8_kv8_cuda_cores "$PY" "${FP8[@]}" --engines fp8-kv8 --fp8-variants "" \
    --decode-attention cuda-cores --out "$LOGS/fp8_kv8_cuda_cores.json"
step 570 fp8_always "$PY" "${FP8[@]}" --engines "" --fp8-variants 16-always --out "$LOGS/fp8_always.json"

say ""
say "done in $((SECONDS - started)) s; full logs in $LOGS"
exit "$failed"
