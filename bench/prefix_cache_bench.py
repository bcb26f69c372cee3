"""Prefix caching benchmark: the engine with its prefix cache on and off, one model, one run.

    python -m bench.prefix_cache_bench                   # 7B, random weights, one GPU
    python -m bench.prefix_cache_bench --device cpu --dtype float32 --shape tiny \\
        --history-len 200 --reply-len 8 --message-len 10 --system-len 100 --streams 8 \\
        --new-tokens 8 --batch1-tokens 16 --max-seq-len 512        # dry run on CPU

Per mode (a fresh runner and engine each, the same weights):
- chat: a conversation whose prompts grow turn by turn (prompt + reply + a new message, as the
  gateway sends them); the TTFT of the last turn, whose history is --history-len tokens and whose
  new message is --message-len tokens (median over --chats conversations);
- shared system prompt: --streams streams, each the same --system-len-token system prompt and its
  own --suffix-len-token message, submitted together after one earlier request with that system
  prompt (a service that has answered before); p50 TTFT and total tok/s;
- batch-1 decode tok/s and --streams streams of distinct prompts (nothing to reuse): what the
  cache's bookkeeping costs when it cannot help.
Everything is greedy, so the tokens of both modes are compared (bf16 kernels may round a near tie
differently: a mismatch is reported with where it happened, not hidden). One markdown table is
printed; the numbers go to $OUT/prefix_cache_bench.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch

from bench.inference_bench import (
    IdTokenizer,
    Record,
    build_shape,
    free_runner,
    random_prompts,
    run_requests,
)
from services.inference.engine.config import EngineConfig
from services.inference.engine.engine import Engine, EngineStats
from services.inference.engine.runner import build_runner
from services.inference.model.transformer import Transformer


def ttft_ms(record: Record) -> float:
    assert record.first is not None
    return 1000 * (record.first - record.submitted)


def chat_turns(engine: Engine, args: argparse.Namespace, vocab: int, seed: int) -> tuple[float, list[int]]:
    """One conversation of --turns turns; the last turn's TTFT and reply."""
    first_len = args.history_len - (args.turns - 1) * args.reply_len - (args.turns - 2) * args.message_len
    if first_len < 2:
        raise SystemExit("--history-len is too short for --turns turns of --reply-len + --message-len tokens")
    prompt = random_prompts(1, first_len, vocab, seed)[0]
    for turn in range(1, args.turns + 1):
        (record,) = run_requests(engine, [prompt], args.reply_len)
        if turn == args.turns:
            return ttft_ms(record), record.tokens
        message = random_prompts(1, args.message_len + 1, vocab, seed * 100 + turn)[0][1:]
        prompt = prompt + record.tokens + message
    raise AssertionError("unreachable")


def measure(
    engine: Engine, args: argparse.Namespace, vocab: int
) -> tuple[dict[str, float], dict[str, list[list[int]]]]:
    out: dict[str, float] = {}
    tokens: dict[str, list[list[int]]] = {}
    run_requests(engine, random_prompts(2, args.prompt_len, vocab, 99), 4)  # warm the prefill shapes

    ttfts, replies = [], []
    for chat in range(args.chats):
        ttft, reply = chat_turns(engine, args, vocab, seed=10 + chat)
        ttfts.append(ttft)
        replies.append(reply)
    out["chat_last_turn_ttft_ms"] = statistics.median(ttfts)
    tokens["chat"] = replies

    system = random_prompts(1, args.system_len, vocab, 7)[0]
    suffixes = random_prompts(args.streams + 1, args.suffix_len + 1, vocab, 8)
    run_requests(engine, [system + suffixes[-1][1:]], 1)  # the system prompt was seen before
    records = run_requests(engine, [system + s[1:] for s in suffixes[:-1]], args.new_tokens)
    out |= throughput(records, "shared")
    tokens["shared"] = [r.tokens for r in records]

    (one,) = run_requests(engine, random_prompts(1, args.prompt_len, vocab, 1), args.batch1_tokens)
    assert one.first is not None and one.last is not None
    out["batch1_decode_tok_s"] = (len(one.tokens) - 1) / (one.last - one.first)
    tokens["batch1"] = [one.tokens]

    records = run_requests(engine, random_prompts(args.streams, args.prompt_len, vocab, 3), args.new_tokens)
    out |= throughput(records, "distinct")
    tokens["distinct"] = [r.tokens for r in records]
    stats = idle_stats(engine)
    out["prompt_tokens_looked_up"] = stats.prompt_tokens_looked_up
    out["prompt_tokens_cached"] = stats.prompt_tokens_cached
    out["evictions"] = stats.evictions
    out["free_blocks_after"] = stats.free_blocks
    out["total_blocks"] = stats.total_blocks
    return out, tokens


def idle_stats(engine: Engine) -> EngineStats:
    """The engine's stats once it has published its idle state (a request's Done event comes
    before the loop publishes the step that ended it)."""
    deadline = time.monotonic() + 5
    while True:
        stats = engine.stats()
        if stats.prefilling + stats.decoding + stats.waiting == 0 or time.monotonic() > deadline:
            return stats
        time.sleep(0.01)


def throughput(records: list[Record], name: str) -> dict[str, float]:
    start = min(r.submitted for r in records)
    end = max(r.last or 0.0 for r in records)
    return {
        f"{name}_p50_ttft_ms": statistics.median(ttft_ms(r) for r in records),
        f"{name}_total_tok_s": sum(len(r.tokens) for r in records) / (end - start),
    }


def run_mode(
    model: Transformer, config: EngineConfig, args: argparse.Namespace
) -> tuple[dict[str, float], dict[str, list[list[int]]]]:
    runner, allocator = build_runner(model, config)
    runner.capture()
    engine = Engine(config, runner, IdTokenizer(model.args.vocab_size), allocator)  # type: ignore[arg-type]
    engine.start()
    try:
        return measure(engine, args, model.args.vocab_size)
    finally:
        engine.stop(drain=False, timeout_s=60)
        del runner, allocator, engine
        free_runner()


def compare(on: dict[str, list[list[int]]], off: dict[str, list[list[int]]]) -> dict[str, object]:
    """Per workload: whether every stream's greedy tokens agree, else the first (stream, token)."""
    result: dict[str, object] = {}
    for name in on:
        mismatch = next(
            (
                (stream, next(i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y))
                for stream, (a, b) in enumerate(zip(on[name], off[name], strict=True))
                if a != b
            ),
            None,
        )
        result[name] = {"equal": mismatch is None, "first_mismatch": mismatch}
    return result


ROWS = [
    ("chat_last_turn_ttft_ms", "chat: last turn TTFT (ms)", False),
    ("shared_p50_ttft_ms", "shared system prompt: p50 TTFT (ms)", False),
    ("shared_total_tok_s", "shared system prompt: total tok/s", True),
    ("batch1_decode_tok_s", "batch 1: decode tok/s", True),
    ("distinct_p50_ttft_ms", "distinct prompts: p50 TTFT (ms)", False),
    ("distinct_total_tok_s", "distinct prompts: total tok/s", True),
]


def table(
    args: argparse.Namespace, on: dict[str, float], off: dict[str, float], same: dict[str, object]
) -> str:
    lines = [
        f"{args.shape}, history {args.history_len} + message {args.message_len} tokens ({args.turns} turns), "
        f"{args.streams} streams x (system {args.system_len} + {args.suffix_len}) tokens",
        "",
        "| metric | caching on | caching off | on / off |",
        "|---|---:|---:|---:|",
    ]
    for key, label, _ in ROWS:
        ratio = on[key] / off[key] if off[key] else float("nan")
        lines.append(f"| {label} | {on[key]:.1f} | {off[key]:.1f} | {ratio:.2f} |")
    hit = on["prompt_tokens_cached"] / max(on["prompt_tokens_looked_up"], 1)
    lines.append(f"| prompt tokens from the cache | {hit:.1%} | - | |")
    lines.append(f"| greedy tokens on == off | {', '.join(f'{k}: {v}' for k, v in same.items())} | | |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shape", default="7B", help="7B, 13B, 70B or tiny; NAME:LAYERS for fewer layers")
    parser.add_argument("--layers", type=int)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--max-seq-len", type=int, default=4096)
    parser.add_argument("--max-batch-size", type=int, default=64)
    parser.add_argument("--prefill-chunk", type=int, default=512)
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    parser.add_argument("--num-kv-blocks", type=int)
    parser.add_argument("--no-compile", dest="compile", action="store_false")
    parser.add_argument("--turns", type=int, default=10)
    parser.add_argument("--history-len", type=int, default=3000, help="tokens before the last turn's message")
    parser.add_argument("--message-len", type=int, default=30)
    parser.add_argument("--reply-len", type=int, default=32, help="tokens of each earlier turn's reply")
    parser.add_argument("--chats", type=int, default=3, help="conversations; the median last-turn TTFT")
    parser.add_argument("--system-len", type=int, default=1000)
    parser.add_argument("--suffix-len", type=int, default=32)
    parser.add_argument("--streams", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument(
        "--prompt-len", type=int, default=128, help="prompts of the batch-1 and distinct runs"
    )
    parser.add_argument("--batch1-tokens", type=int, default=256)
    parser.add_argument(
        "--out", type=Path, default=Path(os.environ.get("OUT", ".")) / "prefix_cache_bench.json"
    )
    args = parser.parse_args()
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    label, _, model, _ = build_shape(args, args.shape, device, dtype)
    config = EngineConfig(
        max_seq_len=args.max_seq_len,
        max_batch_size=args.max_batch_size,
        device=device.type,
        dtype=args.dtype,
        gpu_memory_utilization=args.gpu_memory_utilization,
        num_kv_blocks=args.num_kv_blocks,
        prefill_chunk=args.prefill_chunk,
        compile=args.compile and device.type == "cuda",
        cuda_graphs=device.type == "cuda",
    )
    header: dict[str, object] = {"torch": torch.__version__, "device": str(device), "shape": label}
    if device.type == "cuda":
        header["gpu"] = torch.cuda.get_device_name(device)
    print(json.dumps(header), flush=True)
    on, on_tokens = run_mode(model, replace(config, prefix_caching=True), args)
    print("caching on:", json.dumps(on), flush=True)
    off, off_tokens = run_mode(model, replace(config, prefix_caching=False), args)
    print("caching off:", json.dumps(off), flush=True)
    same = compare(on_tokens, off_tokens)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "header": header,
                "args": vars(args) | {"out": str(args.out)},
                "on": on,
                "off": off,
                "greedy": same,
            },
            indent=2,
        )
    )
    print(table(args, on, off, {k: v["equal"] for k, v in same.items()}))  # type: ignore[index]


if __name__ == "__main__":
    main()
