"""How the engine batches, caches and runs: built once by the service edge (config.py) from flags."""

from __future__ import annotations

from dataclasses import dataclass

from services.inference.kernels import DECODE_ATTENTIONS, DECODE_GEMMS

# "auto": keys and values in the model's dtype; "fp8": float8 e4m3, unscaled (kv_cache.py).
KV_CACHE_DTYPES = ("auto", "fp8")


@dataclass(frozen=True)
class EngineConfig:
    """How the engine batches, caches and runs; the same on every rank."""

    max_seq_len: int = 4096
    # Most sequences decoded in one step (also the largest CUDA graph captured).
    max_batch_size: int = 64
    # Tokens per KV block; every sequence owns whole blocks.
    kv_block_size: int = 16
    # One of KV_CACHE_DTYPES: fp8 halves a bf16 cache's bytes, so twice the blocks fit and decode
    # attention reads half as much per token.
    kv_cache_dtype: str = "auto"
    # Explicit KV block count; None sizes the cache from free GPU memory (or kv_cache_bytes on CPU).
    num_kv_blocks: int | None = None
    # Share of total GPU memory the process may use (weights + activations + KV cache).
    gpu_memory_utilization: float = 0.9
    # KV budget when no GPU sizes it (CPU runs) and num_kv_blocks is unset.
    kv_cache_bytes: int = 256 * 1024 * 1024
    # Requests waiting for admission before new ones get RESOURCE_EXHAUSTED.
    max_queue: int = 256
    # Most prompt tokens prefilled in one engine step, so running decodes stall at most one chunk.
    prefill_chunk: int = 512
    # "cuda" or "cpu"; dtype "bfloat16" / "float16" / "float32".
    device: str = "cpu"
    dtype: str = "float32"
    # GPU only: capture the decode step in CUDA graphs, optionally after torch.compile.
    cuda_graphs: bool = True
    compile: bool = True
    # GPU only: prefill steps through torch.compile (dynamic shapes), compiled at start-up.
    compile_prefill: bool = True
    # Decode batch sizes to capture graphs for (max_batch_size is always added); empty: 1, 2, 4, 8,
    # then every multiple of 8. Fewer sizes capture faster but pad more rows.
    graph_sizes: tuple[int, ...] = ()
    # GPU only: one-row prefill steps of at most this many tokens replay a CUDA graph captured for
    # the next of these lengths (padded up): a chat's new message over its cached history is a
    # few dozen tokens, and launching such a step kernel by kernel costs the host several times
    # what the device spends on it. Lengths past max_seq_len are left out. Empty: every prefill
    # step is launched eagerly.
    chunk_graph_tokens: tuple[int, ...] = (16, 32, 64, 128)
    # GPU only: one Triton kernel per layer rotates q/k and writes k/v into the cache (kv_write.py).
    fused_kv_write: bool = True
    # One of DECODE_GEMMS.
    decode_gemm: str = "auto"
    # One of DECODE_ATTENTIONS.
    decode_attention: str = "tensor-cores"
    # GPU only: decode steps of <= 16 rows run each block as four projection kernels with the
    # norms, SwiGLU and residual adds folded in (kernels/decode_block.py); not with decode_gemm
    # "cublas", which asks for no Triton projections.
    fused_decode_block: bool = True
    # Launch step N+1 before reading back step N's tokens, so the host's per-step work overlaps
    # the device's (off: one step at a time, for measuring what the overlap buys). Only where a
    # launch is asynchronous (CUDA): on the CPU steps always run one at a time.
    overlap_steps: bool = True
    # Reuse the KV blocks of cached prompt prefixes across requests (blocks.py, scheduler.py).
    prefix_caching: bool = True
    # A step (one collective round over all ranks) taking longer than this means a rank is gone.
    step_timeout_s: float = 120.0

    def validate(self) -> None:
        checks = [
            (self.max_seq_len > 1, "--max-seq-len must be > 1"),
            (self.max_batch_size >= 1, "--max-batch-size must be >= 1"),
            (self.kv_block_size >= 1, "--kv-block-size must be >= 1"),
            (
                self.kv_cache_dtype in KV_CACHE_DTYPES,
                f"--kv-cache-dtype must be one of {', '.join(KV_CACHE_DTYPES)}, got {self.kv_cache_dtype!r}",
            ),
            (self.num_kv_blocks is None or self.num_kv_blocks >= 2, "--num-kv-blocks must be >= 2"),
            (0.0 < self.gpu_memory_utilization <= 1.0, "--gpu-memory-utilization must be in (0, 1]"),
            (self.max_queue >= 1, "--max-queue must be >= 1"),
            (self.prefill_chunk >= 1, "--prefill-chunk must be >= 1"),
            (all(s >= 1 for s in self.graph_sizes), "graph batch sizes must be >= 1"),
            (all(s >= 1 for s in self.chunk_graph_tokens), "--chunk-graph-tokens must be >= 1"),
            (self.decode_gemm in DECODE_GEMMS, f"--decode-gemm must be one of {', '.join(DECODE_GEMMS)}"),
            (
                self.decode_attention in DECODE_ATTENTIONS,
                f"--decode-attention must be one of {', '.join(DECODE_ATTENTIONS)}, got {self.decode_attention!r}",
            ),
            (self.step_timeout_s > 0, "--step-timeout-s must be > 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
