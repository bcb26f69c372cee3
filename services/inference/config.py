"""The inference service's configuration: one typed tree, built once from flags by `parse_config`."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import torch

from services.common.server import ServerConfig, add_server_arguments, server_config_from_args
from services.common.telemetry import TelemetryConfig, add_telemetry_arguments, telemetry_config_from_args
from services.inference.engine.config import KV_CACHE_DTYPES, EngineConfig
from services.inference.kernels import DECODE_ATTENTIONS, DECODE_GEMMS
from services.inference.model.fp8 import check_fp8_device

DEFAULT_METRICS_PORT = 9102
WEIGHT_DTYPES = ("auto", "fp8")
USAGE = """`torchrun --nproc_per_node MP -m services.inference --ckpt-dir DIR --tokenizer-path FILE ...`

Every rank loads its shard and builds the same runner; rank 0 serves gRPC and schedules, the
others run each broadcast step until rank 0 sends the end. Plain `python -m` is MP 1.
"""


@dataclass(frozen=True)
class InferenceConfig:
    ckpt_dir: Path
    tokenizer_path: Path
    model_name: str
    engine: EngineConfig
    # "auto": the projections in the engine's dtype; "fp8": e4m3 with per-channel scales (model/fp8.py).
    weights_dtype: str
    server: ServerConfig
    # Rank 0 only: followers parse the same flags but neither export nor bind a metrics port.
    telemetry: TelemetryConfig


def check_fp8_gpus(device: str, flag: str = "--weights-dtype") -> None:
    """Refuse FP8 (weights, or the KV cache: `flag`) on CUDA when a visible GPU lacks FP8 support
    (ranks use any of them). With no GPU visible, --device cuda fails at startup anyway, with its
    own message."""
    if device != "cuda":
        return
    for index in range(torch.cuda.device_count()):
        check_fp8_device(torch.device("cuda", index), flag)


def parse_token_counts(text: str) -> tuple[int, ...]:
    """'16,32,64' -> (16, 32, 64); 'none' (or nothing) -> ()."""
    if text.strip().lower() in ("", "none"):
        return ()
    try:
        return tuple(sorted({int(n) for n in text.split(",")}))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated token counts or 'none', got {text!r}"
        ) from None


def parse_config(argv: list[str] | None = None) -> InferenceConfig:
    p = argparse.ArgumentParser(prog="python -m services.inference", description=USAGE)
    p.add_argument("--ckpt-dir", type=Path, required=True)
    p.add_argument("--tokenizer-path", type=Path, required=True)
    p.add_argument("--model-name", default="")
    p.add_argument("--max-seq-len", type=int, default=4096)
    p.add_argument("--max-batch-size", type=int, default=64)
    p.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    p.add_argument("--kv-block-size", type=int, default=16)
    p.add_argument("--num-kv-blocks", type=int)
    p.add_argument("--max-queue", type=int, default=256)
    p.add_argument("--prefill-chunk", type=int, default=512)
    p.add_argument(
        "--step-timeout-s",
        type=float,
        default=120.0,
        help="a step running longer fails every stream UNAVAILABLE and stops the service (a hung rank)",
    )
    p.add_argument("--dtype", default="auto", choices=["auto", "bfloat16", "float16", "float32"])
    p.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"])
    p.add_argument(
        "--weights-dtype",
        default="auto",
        choices=WEIGHT_DTYPES,
        help="auto: every weight in --dtype; fp8: the layers' projections in FP8 (e4m3, one scale per "
        "output channel, quantized at load; GPUs of compute capability 8.9+, or CPU as a slow reference), "
        "embeddings, norms and the output head in --dtype",
    )
    p.add_argument(
        "--kv-cache-dtype",
        default="auto",
        choices=KV_CACHE_DTYPES,
        help="auto: keys and values cached in --dtype; fp8: in float8 e4m3 without scales (3 mantissa "
        "bits, values beyond +-448 saturate): twice the cached tokens of bf16 in the same memory and "
        "half the bytes decode attention reads (GPUs of compute capability 8.9+, or CPU)",
    )
    p.add_argument(
        "--no-compile", action="store_true", help="CUDA graphs of the eager decode step; eager prefill"
    )
    p.add_argument(
        "--no-compile-prefill",
        action="store_true",
        help="prefill steps eager (decode still compiled): a faster start, a slower first token",
    )
    p.add_argument(
        "--decode-gemm",
        default="auto",
        choices=DECODE_GEMMS,
        help="decode projections of <= 16 rows on CUDA: cuBLAS, the Triton skinny GEMM, or the faster per shape",
    )
    p.add_argument(
        "--decode-attention",
        default=EngineConfig.decode_attention,
        choices=DECODE_ATTENTIONS,
        help="decode attention's products on CUDA: tensor-core dots (each group of query heads padded to 16 "
        "rows) or fp32 multiply-adds on CUDA cores (for models with at most 2 query heads per kv head)",
    )
    p.add_argument(
        "--no-fused-decode-block",
        action="store_true",
        help="decode steps run the norms, SwiGLU and residual adds as kernels of their own, not inside "
        "the projections' Triton kernels (the fused block is the default on CUDA, unless --decode-gemm cublas)",
    )
    p.add_argument(
        "--no-fused-kv-write",
        action="store_true",
        help="rotary and the KV-cache write as separate kernels (the fused Triton kernel is the default on CUDA)",
    )
    p.add_argument(
        "--chunk-graph-tokens",
        type=parse_token_counts,
        default=EngineConfig.chunk_graph_tokens,
        help="CUDA: one-row prefill steps (a chat's new message over its cached history) of at most "
        "these many tokens replay a CUDA graph padded to the next length; comma-separated, "
        "'none' launches every prefill step eagerly",
    )
    p.add_argument(
        "--prefix-caching",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="reuse the KV cache of prompt prefixes seen before (a chat's history, a shared system prompt)",
    )
    add_server_arguments(p, default_port=50052)
    add_telemetry_arguments(p, DEFAULT_METRICS_PORT)
    a = p.parse_args(argv)
    device = a.device if a.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = a.dtype if a.dtype != "auto" else ("bfloat16" if device == "cuda" else "float32")
    engine = EngineConfig(
        max_seq_len=a.max_seq_len,
        max_batch_size=a.max_batch_size,
        kv_block_size=a.kv_block_size,
        kv_cache_dtype=a.kv_cache_dtype,
        num_kv_blocks=a.num_kv_blocks,
        gpu_memory_utilization=a.gpu_memory_utilization,
        max_queue=a.max_queue,
        prefill_chunk=a.prefill_chunk,
        device=device,
        dtype=dtype,
        compile=not a.no_compile,
        compile_prefill=not (a.no_compile or a.no_compile_prefill),
        decode_gemm=a.decode_gemm,
        decode_attention=a.decode_attention,
        fused_kv_write=not a.no_fused_kv_write,
        fused_decode_block=not a.no_fused_decode_block,
        step_timeout_s=a.step_timeout_s,
        prefix_caching=a.prefix_caching,
        chunk_graph_tokens=a.chunk_graph_tokens,
    )
    try:
        engine.validate()
        if a.weights_dtype == "fp8":
            check_fp8_gpus(device)
        if a.kv_cache_dtype == "fp8":
            check_fp8_gpus(device, "--kv-cache-dtype")
    except ValueError as error:
        p.error(str(error))
    return InferenceConfig(
        a.ckpt_dir,
        a.tokenizer_path,
        a.model_name or a.ckpt_dir.name,
        engine,
        a.weights_dtype,
        server_config_from_args(a),
        telemetry_config_from_args(a, "llamagate-inference"),
    )
