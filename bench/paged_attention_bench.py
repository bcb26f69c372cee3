"""Decode attention over the paged cache, bf16 against fp8 keys and values, per tile configuration.

    python -m bench.paged_attention_bench                    # one CUDA GPU, about two minutes
    python -m bench.paged_attention_bench --rows 1 --contexts 256,2048 --splits engine,1   # batch 1
    TRITON_INTERPRET=1 python -m bench.paged_attention_bench --dry-run   # CPU, tiny shapes, one tile

One layer of a 7B decode step (32 query and kv heads of 128, blocks of 16 tokens) for `--rows` rows
with every row at the same context length, through kernels/paged_attention.py's kernel with the
engine's split count (none for many rows; few rows split their keys; `--splits` adds other counts,
e.g. one pass without the merge kernel), for each key tile (BLOCK_N),
warp count and pipeline depth, with the engine's cache layout (a block's tokens, then kv heads: runs
of head_dim values per key) and head-major blocks (a block's keys of one kv head contiguous), with
e4m3 operands on FP8 tensor cores (q.k, or q.k and p.v) instead of values widened for bf16 dots, and
with both products as fp32 multiply-adds on CUDA cores (no group padded to 16 rows, no tiles staged
in shared memory). For each: the time of one call (triton.testing.do_bench, L2 cleared), the cache
bytes it read per second, and its largest difference from the bf16 cache's output (the fp8 rounding
of the keys and values).
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import os
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from services.inference.kernels import paged_attention


def launch(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    table: Tensor,
    lens: Tensor,
    tiles: tuple[int, int, int],
    fp8_dots: int = 0,
    cuda_cores: bool = False,
    splits: int | None = None,
) -> Tensor:
    """The decode kernel with `tiles` = (BLOCK_N, warps, stages), its keys in `splits` chunks per row
    (None: the engine's count)."""
    if splits is None:
        splits = paged_attention.num_splits(q.shape[0], k.shape[2])
    return paged_attention.launch_decode(q, k, v, table, lens, splits, tiles, fp8_dots, cuda_cores)


def split_counts(text: str) -> list[int | None]:
    """ "engine,1" -> [None, 1]: the engine's split count, then one pass."""
    return [None if part == "engine" else int(part) for part in text.split(",")]


def head_major(cache: Tensor) -> Tensor:
    """[blocks, block, kv heads, d] values stored as [blocks, kv heads, block, d] (a strided view)."""
    return cache.transpose(1, 2).contiguous().transpose(1, 2)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--contexts", type=lambda t: [int(x) for x in t.split(",")], default=[256, 1024])
    parser.add_argument(
        "--splits",
        type=split_counts,
        default=[None],
        help="chunks of each row's keys, comma-separated: 'engine' (its count for --rows) or a number",
    )
    parser.add_argument(
        "--out", type=Path, default=Path(os.environ.get("OUT", ".")) / "paged_attention_bench.json"
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="CPU under Triton's interpreter: tiny shapes, one tile choice, fp16 in place of bf16",
    )
    args = parser.parse_args()
    import triton.testing

    torch.manual_seed(0)
    device = "cpu" if args.dry_run else "cuda"
    # The interpreter computes bf16 dots wrongly (numpy has no bf16): fp16 there.
    dtype = torch.float16 if args.dry_run else torch.bfloat16
    heads, head_dim, block = (2, 32, 16) if args.dry_run else (32, 128, 16)
    tile_choices = (
        [(64, 4, 1)] if args.dry_run else list(itertools.product((64, 128, 256), (4, 8), (1, 2, 3)))
    )
    # Without dots a tile lives in registers (fp32 keys and values): smaller ones too.
    core_tile_choices = (
        tile_choices if args.dry_run else list(itertools.product((16, 32, 64, 128), (4, 8), (1, 2, 3)))
    )
    if args.dry_run:
        args.rows, args.contexts = 2, [32, 80]  # two, so that every context gets every variant
        args.splits = [None, 1]
    results: list[dict[str, Any]] = []
    for context in args.contexts:
        blocks = args.rows * context // block
        table = torch.randperm(blocks, device=device).to(torch.int32).view(args.rows, context // block)
        lens = torch.full((args.rows,), context, device=device, dtype=torch.int32)
        k16 = torch.randn(blocks, block, heads, head_dim, device=device, dtype=dtype)
        v16 = torch.randn_like(k16)
        q = torch.randn(args.rows, heads, head_dim, device=device, dtype=dtype)
        k8, v8 = k16.to(torch.float8_e4m3fn), v16.to(torch.float8_e4m3fn)
        caches = {
            "bf16": (k16, v16, 0, False),
            "fp8": (k8, v8, 0, False),
            # The same values with each block's keys of one head contiguous ([blocks, kv heads,
            # block, d] in memory): runs of block * d elements instead of d.
            "bf16 head-major": (head_major(k16), head_major(v16), 0, False),
            "fp8 head-major": (head_major(k8), head_major(v8), 0, False),
            # e4m3 operands on FP8 tensor cores: q.k, then q.k and p.v (launch_decode's fp8_dots).
            "fp8, fp8 q.k": (k8, v8, 1, False),
            "fp8, fp8 q.k and p.v": (k8, v8, 2, False),
            # fp32 multiply-adds on CUDA cores (launch_decode's cuda_cores).
            "bf16, CUDA cores": (k16, v16, 0, True),
            "fp8, CUDA cores": (k8, v8, 0, True),
        }
        expected = launch(q, k16, v16, table, lens, (64, 4, 3)).float()
        engine_splits = paged_attention.num_splits(args.rows, heads)
        variants = [
            (cache, operands, tiles, engine_splits if splits is None else splits)
            for splits in args.splits
            for cache, operands in caches.items()
            for tiles in (core_tile_choices if operands[3] else tile_choices)
        ]
        for cache, (k, v, fp8_dots, cuda_cores), tiles, splits in variants:
            row: dict[str, Any] = {
                "rows": args.rows, "context": context, "splits": splits, "cache": cache, "block_n": tiles[0],
                "warps": tiles[1], "stages": tiles[2],
            }  # fmt: skip
            try:
                call = functools.partial(launch, q, k, v, table, lens, tiles, fp8_dots, cuda_cores, splits)
                started = time.perf_counter()
                out = call()
                if args.dry_run:
                    ms = 1000 * (time.perf_counter() - started)
                else:
                    ms = triton.testing.do_bench(call, warmup=5, rep=30)
            except Exception as error:  # a tile choice the compiler or the GPU refuses costs only its row
                row["error"] = f"{type(error).__name__}: {error}"[:300]
            else:
                difference = (out.float() - expected).abs()
                row |= {
                    "us": 1000 * ms, "cache_gb_s": 2 * k.numel() * k.element_size() / ms / 1e6,
                    "max_diff_vs_bf16": float(difference.max()), "mean_diff_vs_bf16": float(difference.mean()),
                }  # fmt: skip
            results.append(row)
            print(json.dumps(row), flush=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(
        "| rows | context | splits | cache | best tiles (BLOCK_N, warps, stages) | µs | GB/s | mean diff vs bf16 |"
        " engine's tiles µs |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for (rows, context, splits, cache), group in itertools.groupby(
        results, lambda r: (r["rows"], r["context"], r["splits"], r["cache"])
    ):
        timed = [r for r in group if "us" in r]
        if not timed:
            print(f"| {rows} | {context} | {splits} | {cache} | every tile choice failed | | | |")
            continue
        best = min(timed, key=lambda r: r["us"])
        block_n, stages = paged_attention.decode_tiles(str(cache).startswith("fp8"), splits)
        used = (block_n, 4, stages)
        engine = next((r for r in timed if (r["block_n"], r["warps"], r["stages"]) == used), None)
        print(
            f"| {rows} | {context} | {splits} | {cache} | {best['block_n']}, {best['warps']}, {best['stages']} | "
            f"{best['us']:.1f} | {best['cache_gb_s']:.0f} | {best['mean_diff_vs_bf16']:.4f} | "
            + (f"{engine['us']:.1f} |" if engine else "not timed |")
        )


if __name__ == "__main__":
    main()
