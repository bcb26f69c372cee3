"""Prefix caching and prefill attention benchmark: the engine with its prefix cache on and off, one
model, one run, plus the paged prefill kernel on its own.

    python -m bench.prefix_cache_bench --graph-sizes 1,8,64    # the full run on one GPU (7B and 13B)
    python -m bench.prefix_cache_bench --no-compile            # decode graphs of the eager step
    python -m bench.prefix_cache_bench --parts turns --modes on --graph-sizes 1   # the 10th turn alone
    python -m bench.prefix_cache_bench --parts big --big-ttft-lens 2048           # 13B TTFT(2048) alone
    TRITON_INTERPRET=1 python -m bench.prefix_cache_bench --dry-run      # tiny shapes on CPU

--parts picks what runs (default: all of them): kernels, fp32, ttft (fresh prompt, and with eager
prefill when caching is off), turns (chat; with the last turn's TTFT broken down), shared, batch1,
streams (distinct prompts), big, greedy (tokens on == off: of the timed workloads that ran, else of
the chat and shared workloads alone). --modes picks the caching modes of the main shape (on, off).
The main shape's model is built only when a part needs it. --dry-run runs every part it is given,
then each of them alone, and checks that a part alone measures that part and nothing else.

Per mode (a fresh runner and engine each, the same 7B weights):
- fresh prompt: the TTFT of a --ttft-len-token prompt with nothing cached (median of 5);
- chat: a conversation whose prompts grow turn by turn (prompt + reply + a new message, as the
  gateway sends them); the TTFT of the last turn, whose history is --history-len tokens and whose
  new message is --message-len tokens (median over --chats conversations); then one more chat
  whose last turn is timed step by step (bench/step_timeline.py: prefix lookup and planning, the
  host's launch of the prefill, the wait for the device, the read-back) with the tokens it
  prefilled and took from the cache, and one more whose last turn (1 token) runs under
  torch.profiler (the device kernels' busy time against the wall time);
- shared system prompt: --streams streams, each the same --system-len-token system prompt and its
  own --suffix-len-token message, submitted together after one earlier request with that system
  prompt (a service that has answered before); p50 TTFT and total tok/s;
- batch-1 decode tok/s and --streams streams of distinct prompts (nothing to reuse): what the
  cache's bookkeeping costs when it cannot help.
Everything is greedy, so the tokens of both modes are compared (bf16 kernels may round a near tie
differently: a mismatch is reported with where it happened, not hidden).

Besides the two modes:
- kernels (bench/paged_prefill_bench.py): prefill attention over the paged cache, the Triton kernel
  against the gather + masked SDPA path it replaced, correctness printed before timing;
- fp32: the chat and shared-prompt workloads greedy in float32 on --fp32-shape (few layers), cache
  on and off: whether the tokens agree there tells whether a bf16 mismatch is rounding;
- --big-shape (13B): the TTFT of --big-ttft-lens prompts with caching off (chunks after the first
  attend through the paged prefill kernel);
- the fresh-prompt TTFT with the prefill forward compiled (the engine's default on CUDA) and eager.
One markdown table is printed; the numbers go to $OUT/prefix_cache_bench.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TypeVar

import torch

from bench import paged_prefill_bench
from bench.inference_bench import (
    IdTokenizer,
    Record,
    build_shape,
    free_runner,
    random_prompts,
    run_requests,
)
from bench.step_timeline import DeviceProfile, StepClock, device_profile, first_token_breakdown
from services.inference.config import parse_token_counts
from services.inference.engine.config import EngineConfig
from services.inference.engine.engine import Engine, EngineStats
from services.inference.engine.runner import build_runner
from services.inference.kernels import paged_prefill
from services.inference.model.transformer import Transformer

T = TypeVar("T")

PARTS = ("kernels", "fp32", "ttft", "turns", "shared", "batch1", "streams", "big", "greedy")
# Parts measured on the main shape's engines (one per caching mode).
ENGINE_PARTS = {"ttft", "turns", "shared", "batch1", "streams", "greedy"}
MODES = ("on", "off")
# The metric each timed engine part leaves in its mode's results.
PART_METRIC = {
    "ttft": "fresh_ttft_ms",
    "turns": "chat_last_turn_ttft_ms",
    "shared": "shared_p50_ttft_ms",
    "batch1": "batch1_decode_tok_s",
    "streams": "distinct_p50_ttft_ms",
}


@dataclass
class ModeResult:
    metrics: dict[str, float]
    tokens: dict[str, list[list[int]]]
    # The chat's last turn under torch.profiler (turns only).
    profile: DeviceProfile | None = None


def ttft_ms(record: Record) -> float:
    assert record.first is not None
    return 1000 * (record.first - record.submitted)


def chat_history(engine: Engine, args: argparse.Namespace, vocab: int, seed: int) -> list[int]:
    """The first --turns - 1 turns of one conversation; the last turn's prompt (history + message)."""
    first_len = args.history_len - (args.turns - 1) * args.reply_len - (args.turns - 2) * args.message_len
    if first_len < 2:
        raise SystemExit("--history-len is too short for --turns turns of --reply-len + --message-len tokens")
    prompt = random_prompts(1, first_len, vocab, seed)[0]
    for turn in range(1, args.turns):
        (record,) = run_requests(engine, [prompt], args.reply_len)
        message = random_prompts(1, args.message_len + 1, vocab, seed * 100 + turn)[0][1:]
        prompt = prompt + record.tokens + message
    return prompt


def chat_turns(engine: Engine, args: argparse.Namespace, vocab: int, seed: int) -> tuple[float, list[int]]:
    """One conversation of --turns turns; the last turn's TTFT and reply."""
    (record,) = run_requests(engine, [chat_history(engine, args, vocab, seed)], args.reply_len)
    return ttft_ms(record), record.tokens


def last_turn_breakdown(
    engine: Engine, clock: StepClock, args: argparse.Namespace, vocab: int
) -> tuple[dict[str, float], DeviceProfile]:
    """Two more chats (their own seeds, so nothing of the timed ones is reused): the first one's
    last turn timed step by step, with the prompt tokens it took from the cache; the second one's
    last turn (1 token: only the work before it) under torch.profiler."""
    prompt = chat_history(engine, args, vocab, seed=10 + args.chats)
    before = idle_stats(engine)
    clock.steps.clear()
    clock.recording = True
    try:
        (record,) = run_requests(engine, [prompt], args.reply_len)
    finally:
        clock.recording = False
    after = idle_stats(engine)
    out = {f"last_turn_{k}": v for k, v in first_token_breakdown(record, clock.steps).items()}
    out["last_turn_prompt_tokens"] = len(prompt)
    out["last_turn_cached_tokens"] = after.prompt_tokens_cached - before.prompt_tokens_cached
    prompt = chat_history(engine, args, vocab, seed=11 + args.chats)
    profile = device_profile(lambda: run_requests(engine, [prompt], 1), clock.runner.device)
    out["last_turn_profiled_wall_ms"] = profile.wall_ms
    out["last_turn_device_busy_ms"] = profile.device_busy_ms
    return out, profile


def measure(engine: Engine, clock: StepClock, args: argparse.Namespace, vocab: int) -> ModeResult:
    """The main shape's timed parts of --parts on one engine."""
    parts = set(args.parts)
    result = ModeResult({}, {})
    out, tokens = result.metrics, result.tokens
    run_requests(engine, random_prompts(2, args.prompt_len, vocab, 99), 4)  # warm the prefill shapes

    if "ttft" in parts:
        out["fresh_ttft_ms"] = fresh_ttft_ms(engine, args.ttft_len, vocab)

    if "turns" in parts:
        out["chat_last_turn_ttft_ms"], tokens["chat"] = last_turn_ttfts(engine, clock, args, vocab)
        breakdown, result.profile = last_turn_breakdown(engine, clock, args, vocab)
        out |= breakdown

    if "shared" in parts:
        records = shared_prompt_requests(engine, args, vocab)
        out |= throughput(records, "shared")
        tokens["shared"] = [r.tokens for r in records]

    if "batch1" in parts:
        (one,) = run_requests(engine, random_prompts(1, args.prompt_len, vocab, 1), args.batch1_tokens)
        assert one.first is not None and one.last is not None
        out["batch1_decode_tok_s"] = (len(one.tokens) - 1) / (one.last - one.first)
        tokens["batch1"] = [one.tokens]

    if "streams" in parts:
        records = run_requests(
            engine, random_prompts(args.streams, args.prompt_len, vocab, 3), args.new_tokens
        )
        out |= throughput(records, "distinct")
        tokens["distinct"] = [r.tokens for r in records]

    if "greedy" in parts and not tokens:
        tokens |= greedy_tokens(engine, clock, args, vocab)
    stats = idle_stats(engine)
    out["prompt_tokens_looked_up"] = stats.prompt_tokens_looked_up
    out["prompt_tokens_cached"] = stats.prompt_tokens_cached
    out["evictions"] = stats.evictions
    out["free_blocks_after"] = stats.free_blocks
    out["total_blocks"] = stats.total_blocks
    return result


def shared_prompt_requests(engine: Engine, args: argparse.Namespace, vocab: int) -> list[Record]:
    """--streams requests with one system prompt, submitted together after one that saw it."""
    system = random_prompts(1, args.system_len, vocab, 7)[0]
    suffixes = random_prompts(args.streams + 1, args.suffix_len + 1, vocab, 8)
    run_requests(engine, [system + suffixes[-1][1:]], 1)  # the system prompt was seen before
    return run_requests(engine, [system + s[1:] for s in suffixes[:-1]], args.new_tokens)


def fresh_ttft_ms(engine: Engine, length: int, vocab: int) -> float:
    """Median TTFT of 5 prompts of `length` tokens that share nothing, after one to warm the shapes."""
    run_requests(engine, random_prompts(1, length, vocab, 999), 1)
    ttfts = []
    for seed in range(5):
        (record,) = run_requests(engine, random_prompts(1, length, vocab, 1000 + seed), 1)
        ttfts.append(ttft_ms(record))
    return statistics.median(ttfts)


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
    model: Transformer,
    config: EngineConfig,
    args: argparse.Namespace,
    workload: Callable[[Engine, StepClock, argparse.Namespace, int], T],
) -> T:
    runner, allocator = build_runner(model, config)
    runner.capture()
    # Triton compiles a kernel variant on its first call: not inside a measured request.
    paged_prefill.warm_up(model.args.n_heads, model.output.weight.dtype, runner.storage.k[0])
    clock = StepClock(runner)
    engine = Engine(config, clock, IdTokenizer(model.args.vocab_size), allocator)  # type: ignore[arg-type]
    engine.start()
    try:
        return workload(engine, clock, args, model.args.vocab_size)
    finally:
        engine.stop(drain=False, timeout_s=60)
        del runner, allocator, engine, clock
        free_runner()


def greedy_tokens(
    engine: Engine, clock: StepClock, args: argparse.Namespace, vocab: int
) -> dict[str, list[list[int]]]:
    """The chat and shared-prompt workloads' greedy tokens alone (no timing)."""
    chats = [chat_turns(engine, args, vocab, seed=10 + chat)[1] for chat in range(args.chats)]
    records = shared_prompt_requests(engine, args, vocab)
    return {"chat": chats, "shared": [r.tokens for r in records]}


def fp32_agreement(args: argparse.Namespace, config: EngineConfig, device: torch.device) -> dict[str, object]:
    """Greedy tokens with caching on vs off in float32: the paths differ (the cached run attends
    over its prefix in other chunks), so only rounding can part them, and fp32 rounds 2^16 times
    finer than bf16."""
    label, _, model, _ = build_shape(args, args.fp32_shape, device, torch.float32)
    fp32 = replace(config, dtype="float32", compile=False, compile_prefill=False, cuda_graphs=False)
    try:
        on = run_mode(model, replace(fp32, prefix_caching=True), args, greedy_tokens)
        off = run_mode(model, replace(fp32, prefix_caching=False), args, greedy_tokens)
    finally:
        del model
        free_runner()
    same = compare(on, off)
    result: dict[str, object] = {"shape": label, "greedy": same}
    result["equal"] = all(v["equal"] for v in same.values())  # type: ignore[index]
    print("fp32 caching on vs off:", json.dumps(result), flush=True)
    return result


def fresh_ttfts(engine: Engine, clock: StepClock, args: argparse.Namespace, vocab: int) -> dict[str, float]:
    return {f"ttft_{n}_ms": fresh_ttft_ms(engine, n, vocab) for n in args.big_ttft_lens}


def last_turn_ttfts(
    engine: Engine, clock: StepClock, args: argparse.Namespace, vocab: int
) -> tuple[float, list[list[int]]]:
    """The timed chats of the turns part alone: their median last-turn TTFT and replies."""
    ttfts, replies = [], []
    for chat in range(args.chats):
        ttft, reply = chat_turns(engine, args, vocab, seed=10 + chat)
        ttfts.append(ttft)
        replies.append(reply)
    return statistics.median(ttfts), replies


def eager_prefill_ttft(engine: Engine, clock: StepClock, args: argparse.Namespace, vocab: int) -> float:
    return fresh_ttft_ms(engine, args.ttft_len, vocab)


def big_ttft(
    args: argparse.Namespace, config: EngineConfig, device: torch.device, dtype: torch.dtype
) -> dict[str, object]:
    """TTFT of fresh prompts of each --big-ttft-lens on --big-shape, caching off, prefill compiled
    and eager: prompts longer than --prefill-chunk prefill in chunks, every chunk after the first
    through the paged kernel."""
    label, _, model, _ = build_shape(args, args.big_shape, device, dtype)
    plain = replace(config, prefix_caching=False, compile=False, cuda_graphs=False)
    result: dict[str, object] = {"shape": label}
    try:
        result |= run_mode(model, plain, args, fresh_ttfts)
        eager = run_mode(model, replace(plain, compile_prefill=False), args, fresh_ttfts)
        result |= {f"eager_{k}": v for k, v in eager.items()}
    finally:
        del model
        free_runner()
    print(f"{label} caching off:", json.dumps(result), flush=True)
    return result


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
    ("fresh_ttft_ms", "fresh prompt: TTFT (ms)", False),
    ("chat_last_turn_ttft_ms", "chat: last turn TTFT (ms)", False),
    ("shared_p50_ttft_ms", "shared system prompt: p50 TTFT (ms)", False),
    ("shared_total_tok_s", "shared system prompt: total tok/s", True),
    ("batch1_decode_tok_s", "batch 1: decode tok/s", True),
    ("distinct_p50_ttft_ms", "distinct prompts: p50 TTFT (ms)", False),
    ("distinct_total_tok_s", "distinct prompts: total tok/s", True),
]

# The timed last turn of one more chat (step_timeline.first_token_breakdown), then its profiled one.
LAST_TURN_ROWS = [
    ("last_turn_ttft_ms", "last turn, timed by step: TTFT (ms)"),
    ("last_turn_submit_to_launch_ms", "- submit to launch: wake-up, prefix lookup, plan (ms)"),
    ("last_turn_prefill_launch_ms", "- prefill launch on the host (ms)"),
    ("last_turn_next_step_launch_ms", "- next step's launch before the read-back (ms)"),
    ("last_turn_wait_for_device_ms", "- wait for the device (ms)"),
    ("last_turn_read_back_to_sink_ms", "- read-back to the stream (ms)"),
    ("last_turn_rest_ms", "- the engine loop's other work (ms)"),
    ("last_turn_device_busy_ms", "profiled last turn (1 token): device kernels (ms)"),
    ("last_turn_profiled_wall_ms", "profiled last turn (1 token): wall time (ms)"),
]

# Shapes and lengths of a run on the CPU in seconds; flags given explicitly still win.
DRY_RUN = {
    "device": "cpu",
    "dtype": "float32",
    "shape": "tiny",
    "max_seq_len": 512,
    "max_batch_size": 8,
    "prefill_chunk": 64,
    "chunk_graph_tokens": (16, 64),
    "history_len": 200,
    "reply_len": 8,
    "message_len": 10,
    "chats": 1,
    "system_len": 100,
    "suffix_len": 8,
    "streams": 8,
    "new_tokens": 8,
    "prompt_len": 32,
    "batch1_tokens": 16,
    "ttft_len": 64,
    "big_shape": "tiny",
    "big_ttft_lens": [64, 256],
    "fp32_shape": "tiny",
}


def cell(metrics: dict[str, float] | None, key: str, digits: int = 1) -> str:
    if metrics is None or key not in metrics:
        return "-"
    return f"{metrics[key]:.{digits}f}"


def table(
    args: argparse.Namespace, label: str, results: dict[str, object], profiles: dict[str, DeviceProfile]
) -> str:
    on = results["on"]
    off = results["off"]
    assert on is None or isinstance(on, dict)
    assert off is None or isinstance(off, dict)
    lines = [
        f"{label}, caching {'/'.join(args.modes)}, parts {','.join(args.parts)}; fresh prompt {args.ttft_len} "
        f"tokens, history {args.history_len} + message {args.message_len} tokens ({args.turns} turns), "
        f"{args.streams} streams x (system {args.system_len} + {args.suffix_len}) tokens, prefill chunks of "
        f"{args.prefill_chunk}",
        "",
        "| metric | caching on | caching off | on / off |",
        "|---|---:|---:|---:|",
    ]
    for key, name, _ in ROWS:
        if (on is None or key not in on) and (off is None or key not in off):
            continue
        ratio = "-"
        if on is not None and off is not None and key in on and off.get(key):
            ratio = f"{on[key] / off[key]:.2f}"
        lines.append(f"| {name} | {cell(on, key)} | {cell(off, key)} | {ratio} |")
    if any(m is not None and "last_turn_ttft_ms" in m for m in (on, off)):
        for key, name in LAST_TURN_ROWS:
            lines.append(f"| {name} | {cell(on, key, 2)} | {cell(off, key, 2)} | |")
        tokens = [
            "-"
            if m is None or "last_turn_prompt_tokens" not in m
            else f"{m['last_turn_prompt_tokens']:.0f} / {m['last_turn_cached_tokens']:.0f} / "
            f"{m['last_turn_prefill_tokens']:.0f} ({m['last_turn_prefill_steps']:.0f})"
            for m in (on, off)
        ]
        lines.append(
            f"| last turn: prompt / from the cache / prefilled tokens (steps) | {' | '.join(tokens)} | |"
        )
    if on is not None and on.get("prompt_tokens_looked_up"):
        hit = on["prompt_tokens_cached"] / on["prompt_tokens_looked_up"]
        lines.append(f"| prompt tokens from the cache | {hit:.1%} | - | |")
    same = results["greedy"]
    if isinstance(same, dict):
        agree = ", ".join(f"{k}: {v['equal']}" for k, v in same.items())
        lines.append(f"| greedy tokens on == off | {agree} | | |")
    if on is not None and "chat_last_turn_ttft_eager_chunks_ms" in on:
        same_chat = results.get("chunk_graphs_greedy")
        assert isinstance(same_chat, dict)
        lines.append(
            f"| chat: last turn TTFT, prefill chunks launched eagerly, not replayed (ms) | "
            f"{on['chat_last_turn_ttft_eager_chunks_ms']:.1f} | - | |"
        )
        chat = same_chat["chat"]
        agree = "yes" if chat["equal"] else f"no, first difference (chat, token) {chat['first_mismatch']}"
        lines.append(f"| greedy chat tokens, chunk graphs == eager chunks | {agree} | | |")
    if off is not None and "eager_prefill_fresh_ttft_ms" in off:
        lines.append(
            f"| fresh prompt: TTFT with eager prefill (ms) | - | {off['eager_prefill_fresh_ttft_ms']:.1f} | |"
        )
    big = results["big"]
    if isinstance(big, dict):
        for length in args.big_ttft_lens:
            lines.append(
                f"| {big['shape']} fresh prompt {length}: TTFT (ms), compiled / eager prefill | - | "
                f"{big[f'ttft_{length}_ms']:.1f} / {big[f'eager_ttft_{length}_ms']:.1f} | |"
            )
    fp32 = results["fp32"]
    if isinstance(fp32, dict):
        greedy = fp32["greedy"]
        assert isinstance(greedy, dict)
        agree = ", ".join(f"{k}: {v['equal']}" for k, v in greedy.items())
        lines.append(f"| fp32 ({fp32['shape']}) greedy tokens on == off | {agree} | | |")
    for mode, profile in profiles.items():
        lines += [
            "",
            f"The profiled last turn, caching {mode}: largest device kernels and host ops (self ms x calls)",
        ]
        if not profile.engine_thread_profiled:
            lines.append("- (this torch profiles the calling thread only: the engine's host ops are missing)")
        lines += [f"- kernel {name}: {ms:.3f} ms x {count}" for name, ms, count in profile.top_kernels]
        lines += [f"- host {name}: {ms:.3f} ms x {count}" for name, ms, count in profile.top_host_ops]
    return "\n".join(lines)


def csv_of(choices: tuple[str, ...]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        names = [name for name in text.split(",") if name]
        unknown = [name for name in names if name not in choices]
        if unknown or not names:
            raise argparse.ArgumentTypeError(f"{text!r}: pick from {','.join(choices)}")
        return names

    return parse


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--parts",
        type=csv_of(PARTS),
        default=list(PARTS),
        help=f"what to run (default all): {','.join(PARTS)}",
    )
    parser.add_argument(
        "--modes", type=csv_of(MODES), default=list(MODES), help="caching modes of the main shape's parts"
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
    parser.add_argument(
        "--graph-sizes",
        type=lambda text: tuple(int(n) for n in text.split(",")),
        default=(),
        help="decode batch sizes to capture (e.g. 1,8,64: a faster start; batches pad up to the next)",
    )
    parser.add_argument(
        "--chunk-graph-tokens",
        type=parse_token_counts,
        default=EngineConfig.chunk_graph_tokens,
        help="one-row prefill chunks of up to these many tokens replay CUDA graphs; 'none': eager",
    )
    parser.add_argument("--ttft-len", type=int, default=512, help="the fresh prompt's tokens")
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
    parser.add_argument("--big-shape", default="13B", help="the TTFT-only shape, caching off; none to skip")
    parser.add_argument(
        "--big-ttft-lens", type=lambda text: [int(n) for n in text.split(",")], default=[512, 2048]
    )
    parser.add_argument(
        "--fp32-shape", default="7B:2", help="the shape of the fp32 on/off token check; none to skip"
    )
    parser.add_argument(
        "--skip-kernels", action="store_true", help="no kernel-level benchmark (--parts without kernels)"
    )
    parser.add_argument("--dry-run", action="store_true", help="tiny shapes on the CPU (see DRY_RUN)")
    parser.add_argument(
        "--out", type=Path, default=Path(os.environ.get("OUT", ".")) / "prefix_cache_bench.json"
    )
    args = parser.parse_args(argv)
    if args.dry_run:
        parser.set_defaults(**DRY_RUN)
        args = parser.parse_args(argv)
    # The older ways to leave a part out.
    dropped = {"kernels"} if args.skip_kernels else set()
    dropped |= {"fp32"} if args.fp32_shape == "none" else set()
    dropped |= {"big"} if args.big_shape == "none" else set()
    args.parts = [part for part in args.parts if part not in dropped]
    return args


def run(args: argparse.Namespace) -> tuple[str, dict[str, object], dict[str, DeviceProfile]]:
    """The parts in args.parts: the main shape's label, every result (None where not run) and
    the profiled last chat turn per caching mode."""
    parts = set(args.parts)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
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
        graph_sizes=args.graph_sizes,
        chunk_graph_tokens=args.chunk_graph_tokens,
    )
    header: dict[str, object] = {"torch": torch.__version__, "device": str(device), "shape": args.shape}
    if device.type == "cuda":
        header["gpu"] = torch.cuda.get_device_name(device)
    print(json.dumps(header), flush=True)
    results: dict[str, object] = {
        "header": header,
        "args": vars(args) | {"out": str(args.out)},
        "on": None,
        "off": None,
        "greedy": None,
        "chunk_graphs_greedy": None,
        "big": None,
        "fp32": None,
        "kernels": None,
        "profiles": {},
    }
    profiles: dict[str, DeviceProfile] = {}
    if "kernels" in parts:
        # Triton's interpreter multiplies bf16 dots wrongly; fp16 stands in for it there.
        interpreted = device.type == "cpu" and paged_prefill_bench.INTERPRETING
        results["kernels"] = paged_prefill_bench.run(
            device, torch.float16 if interpreted else dtype, args.dry_run
        )
    if "fp32" in parts:
        results["fp32"] = fp32_agreement(args, config, device)
    label = args.shape
    if parts & ENGINE_PARTS:
        label, _, model, _ = build_shape(args, args.shape, device, dtype)
        modes: dict[str, ModeResult] = {}
        for mode in args.modes:
            modes[mode] = run_mode(model, replace(config, prefix_caching=mode == "on"), args, measure)
            results[mode] = modes[mode].metrics
            profile = modes[mode].profile
            if profile is not None:
                profiles[mode] = profile
            print(f"caching {mode}:", json.dumps(modes[mode].metrics), flush=True)
        if "ttft" in parts and "off" in modes:
            # Only the prefill is timed here: no decode graphs to capture.
            eager = replace(
                config, prefix_caching=False, compile=False, compile_prefill=False, cuda_graphs=False
            )
            modes["off"].metrics["eager_prefill_fresh_ttft_ms"] = run_mode(
                model, eager, args, eager_prefill_ttft
            )
            print(
                "caching off, eager prefill:", modes["off"].metrics["eager_prefill_fresh_ttft_ms"], flush=True
            )
        if "turns" in parts and "on" in modes and config.chunk_graph_tokens:
            # The same chats with every prefill step launched eagerly: what the chunk graphs buy.
            eager_chunks = replace(config, prefix_caching=True, chunk_graph_tokens=())
            ttft, replies = run_mode(model, eager_chunks, args, last_turn_ttfts)
            modes["on"].metrics["chat_last_turn_ttft_eager_chunks_ms"] = ttft
            results["chunk_graphs_greedy"] = compare({"chat": modes["on"].tokens["chat"]}, {"chat": replies})
            print(
                "caching on, prefill chunks eager:",
                ttft,
                json.dumps(results["chunk_graphs_greedy"]),
                flush=True,
            )
        if "greedy" in parts:
            if len(modes) == 2:
                results["greedy"] = compare(modes["on"].tokens, modes["off"].tokens)
            else:
                print("greedy tokens on == off: needs both --modes, not compared", flush=True)
        del model
        free_runner()
    if "big" in parts:
        results["big"] = big_ttft(args, config, device, dtype)
    results["profiles"] = {mode: asdict(profile) for mode, profile in profiles.items()}
    return label, results, profiles


def measured_parts(results: dict[str, object]) -> set[str]:
    """The parts whose results `results` holds."""
    found = {part for part in ("kernels", "fp32", "big", "greedy") if results[part]}
    for mode in MODES:
        metrics = results[mode]
        if isinstance(metrics, dict):
            found |= {part for part, key in PART_METRIC.items() if key in metrics}
    return found


def check_parts_alone(args: argparse.Namespace, everything: dict[str, object]) -> None:
    """The dry run's check of --parts: each part run alone measures itself and nothing else, as it
    did among all the others."""
    expected = set(args.parts) - ({"greedy"} if len(args.modes) < 2 else set())
    assert measured_parts(everything) == expected, (measured_parts(everything), expected)
    for part in args.parts:
        _, alone, _ = run(argparse.Namespace(**(vars(args) | {"parts": [part]})))
        got = measured_parts(alone)
        assert got == expected & {part}, f"--parts {part} measured {sorted(got)}"
        print(f"dry run: --parts {part} alone measured {sorted(got)}", flush=True)


def main() -> None:
    args = parse_args()
    t0 = time.perf_counter()
    label, results, profiles = run(args)
    results["wall_s"] = time.perf_counter() - t0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(table(args, label, results, profiles))
    kernels = results["kernels"]
    if isinstance(kernels, list) and kernels:
        print()
        print(paged_prefill_bench.table(kernels))
    print(f"\nwall time {time.perf_counter() - t0:.0f} s", flush=True)
    if args.dry_run and len(args.parts) > 1:
        check_parts_alone(args, results)


if __name__ == "__main__":
    main()
