"""Prefill attention over the paged KV cache, kernel level: the Triton kernel that reads the blocks in
place (services/inference/kernels/paged_prefill.py) against the path it replaced (gather the blocks
into contiguous keys/values, then SDPA with a causal mask), and for a chunk with nothing cached
against SDPA's is_causal flash path on dense tensors (what a fresh prompt's first chunk runs).

    python -m bench.paged_prefill_bench                      # 7B shapes, one GPU
    TRITON_INTERPRET=1 python -m bench.paged_prefill_bench --dry-run     # tiny shapes on CPU

Each case prints its correctness first (max abs difference of each path against the reference
computed in fp32), then the timings (CUDA events, median). bench/prefix_cache_bench.py runs this
as part of its full run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from services.inference.kernels import paged_prefill

INTERPRETING = os.environ.get("TRITON_INTERPRET") == "1"


@dataclass(frozen=True)
class Case:
    cached: int
    new: int
    heads: int = 32
    kv_heads: int = 32
    head_dim: int = 128
    block_size: int = 16

    @property
    def label(self) -> str:
        gqa = "" if self.heads == self.kv_heads else f", {self.heads}/{self.kv_heads} heads"
        return f"cached {self.cached} + q {self.new}{gqa}"


# 7B shapes: a new chat message after a long history, a fresh 512-token chunk, and the last 512-token
# chunk of a 2048-token prompt.
CASES = [Case(3000, 30), Case(0, 512), Case(1536, 512)]
TINY_CASES = [Case(40, 7, heads=4, kv_heads=2, head_dim=16), Case(0, 33, heads=4, kv_heads=1, head_dim=16)]


class Inputs:
    """One row's chunk: queries, a cache whose blocks lie shuffled, the row's table and lengths."""

    def __init__(self, case: Case, device: torch.device, dtype: torch.dtype) -> None:
        total = case.cached + case.new
        n_blocks = -(-total // case.block_size)
        num_blocks = 2 * n_blocks + 1
        generator = torch.Generator(device=device).manual_seed(total)
        shape = (num_blocks, case.block_size, case.kv_heads, case.head_dim)
        self.k_cache = torch.randn(shape, device=device, dtype=dtype, generator=generator)
        self.v_cache = torch.randn(shape, device=device, dtype=dtype, generator=generator)
        order = torch.randperm(num_blocks - 1, device=device, generator=generator)[:n_blocks] + 1
        self.block_tables = order[None].to(torch.int32)
        self.context_lens = torch.tensor([total], dtype=torch.int32, device=device)
        self.positions = torch.arange(case.cached, total, device=device)[None]
        self.q = torch.randn(1, case.new, case.heads, case.head_dim, device=device, dtype=dtype)
        # The chunk's own keys/values, dense, for the flash path (what a fresh prompt attends over).
        table = self.block_tables[0].long()
        self.k_dense = self.k_cache[table].flatten(0, 1)[None, case.cached : total]
        self.v_dense = self.v_cache[table].flatten(0, 1)[None, case.cached : total]

    def kernel(self, splits: int | None = None) -> Tensor:
        return paged_prefill.prefill_triton(
            self.q, self.k_cache, self.v_cache, self.block_tables, self.context_lens, self.positions, splits
        )

    def gather_sdpa(self) -> Tensor:
        return paged_prefill.prefill_reference(
            self.q, self.k_cache, self.v_cache, self.block_tables, self.context_lens, self.positions
        )

    def flash(self) -> Tensor:
        return F.scaled_dot_product_attention(
            self.q.transpose(1, 2),
            self.k_dense.transpose(1, 2),
            self.v_dense.transpose(1, 2),
            is_causal=True,
            enable_gqa=True,
        ).transpose(1, 2)

    def fp32_reference(self) -> Tensor:
        return paged_prefill.prefill_reference(
            self.q.float(),
            self.k_cache.float(),
            self.v_cache.float(),
            self.block_tables,
            self.context_lens,
            self.positions,
        )


def time_ms(fn: Callable[[], object], device: torch.device, repeats: int, inner: int = 10) -> float:
    """Median milliseconds of one call of `fn`. On a GPU, `inner` calls are queued back to back
    between two CUDA events, so the device time is measured, not the host's launch latency (a
    path that syncs with the host, as the gather path does, pays for it here too)."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(inner):
                fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / inner)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(1000 * (time.perf_counter() - t0))
    return statistics.median(times)


def kernel_runs(device: torch.device) -> bool:
    return paged_prefill.triton is not None and (device.type == "cuda" or INTERPRETING)


def graph_ms(fn: Callable[[], object], repeats: int, inner: int = 10) -> float:
    """Median device milliseconds of one call of `fn` replayed from a CUDA graph: no host time at
    all (only paths that never sync with the host can be captured)."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(inner):
            fn()
    return time_ms(graph.replay, torch.device("cuda"), repeats, inner=1) / inner


def warm_up_gpu(device: torch.device, seconds: float = 1.0) -> None:
    """Matrix products until the clocks have left idle, so the first case is not timed slow."""
    if device.type != "cuda":
        return
    a = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        a @ a
        torch.cuda.synchronize()


def bench_case(case: Case, device: torch.device, dtype: torch.dtype, repeats: int) -> dict[str, object]:
    inputs = Inputs(case, device, dtype)
    expected = inputs.fp32_reference()
    out: dict[str, object] = {"case": case.label}
    paths: dict[str, Callable[[], Tensor]] = {"gather_sdpa": inputs.gather_sdpa}
    if kernel_runs(device):
        paths["kernel"] = inputs.kernel
        tiles = -(-case.new // paged_prefill.tile_queries(case.new, case.heads // case.kv_heads)[0])
        splits = paged_prefill.num_splits(1, tiles, case.kv_heads)
        out["kernel_splits"] = splits
        if splits > 1:
            paths["kernel_no_split"] = lambda: inputs.kernel(1)
    if case.cached == 0:
        paths["flash_dense"] = inputs.flash
    for name, fn in paths.items():
        out[f"{name}_max_abs_diff"] = float((fn().float() - expected).abs().max())
    print(json.dumps(out), flush=True)  # correctness before any timing
    for name, fn in paths.items():
        out[f"{name}_ms"] = time_ms(fn, device, repeats)
        if device.type == "cuda" and name != "gather_sdpa":  # the gather path syncs: not capturable
            out[f"{name}_graph_ms"] = graph_ms(fn, repeats)
    # Bytes of keys + values the chunk attends over, read once: the kernel's floor at copy bandwidth.
    keys = case.cached + case.new
    out["kv_mib"] = 2 * keys * case.kv_heads * case.head_dim * inputs.k_cache.element_size() / 2**20
    out["tflop"] = 4 * case.new * (case.cached + (case.new + 1) / 2) * case.heads * case.head_dim / 1e12
    print(json.dumps(out), flush=True)
    return out


def run(device: torch.device, dtype: torch.dtype, tiny: bool) -> list[dict[str, object]]:
    if not kernel_runs(device):
        print("paged prefill kernel not run: needs CUDA, or TRITON_INTERPRET=1 on the CPU", flush=True)
    warm_up_gpu(device)
    cases = TINY_CASES if tiny else CASES
    return [bench_case(case, device, dtype, repeats=3 if tiny else 20) for case in cases]


def table(results: list[dict[str, object]]) -> str:
    """Eager: calls queued back to back (the gather path includes its host sync); graph: device
    time alone, from a CUDA graph replay."""
    lines = [
        "| case | kernel ms (eager / graph) | gather + masked SDPA ms | flash, dense is_causal ms "
        "(eager / graph) | kernel max abs diff | gather max abs diff |",
        "|---|---:|---:|---:|---:|---:|",
    ]

    def ms(result: dict[str, object], name: str) -> str:
        eager, graph = result.get(f"{name}_ms"), result.get(f"{name}_graph_ms")
        if eager is None:
            return "-"
        text = f"{float(eager):.3f}"  # type: ignore[arg-type]
        return text if graph is None else f"{text} / {float(graph):.3f}"  # type: ignore[arg-type]

    def diff(result: dict[str, object], name: str) -> str:
        value = result.get(f"{name}_max_abs_diff")
        return "-" if value is None else f"{float(value):.2e}"  # type: ignore[arg-type]

    for result in results:
        lines.append(
            f"| {result['case']} | {ms(result, 'kernel')} | {ms(result, 'gather_sdpa')} | "
            f"{ms(result, 'flash_dense')} | {diff(result, 'kernel')} | {diff(result, 'gather_sdpa')} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--dry-run", action="store_true", help="tiny shapes on the CPU")
    args = parser.parse_args()
    device = torch.device("cpu" if args.dry_run else args.device)
    dtype = torch.float16 if args.dry_run and INTERPRETING else getattr(torch, args.dtype)
    results = run(device, dtype, args.dry_run)
    print(table(results))


if __name__ == "__main__":
    main()
