"""Inference engine benchmark: a Llama-2-shaped model with random weights, our engine vs the
plain eager model and Hugging Face transformers, on one GPU, in one run.

    python -m bench.inference_bench                       # 7B: correctness, batch 1/8/32/64, TTFT, HF
    python -m bench.inference_bench --shape 13B --quick   # batch 1 and 32 streams, TTFT
    python -m bench.inference_bench --shape 70B --layers 8 --quick
    python -m bench.inference_bench --device cpu --shape tiny --new-tokens 8   # dry run on CPU
    python -m bench.inference_bench --variants cublas-unfused,cublas,triton,auto   # decode kernels side by side
    python -m bench.inference_bench --variants auto,auto-cudacores   # decode attention's two kinds of core

--variants builds the model once and, per variant, only a new runner (KV cache, compile, graphs for
batch 1, 4 and the stream counts): correctness vs the eager model, batch-1 decode, the stream
counts, a kernel profile, then one table. A variant is a decode GEMM (cublas, triton, auto) with
the fused rotary + KV-write kernel, with options after it: -unfused without that kernel,
-cudacores with decode attention on CUDA cores (see services/inference/config.py).

The engine is driven in-process (no gRPC, so no generated stubs are needed on the GPU machine);
timestamps are taken on the engine thread as each token is emitted. See bench/README.md.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import statistics
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from services.common.sampling import SamplingParams
from services.inference.config import DECODE_GEMMS, EngineConfig
from services.inference.engine.blocks import PAD_SLOT
from services.inference.engine.engine import Engine
from services.inference.engine.kv_cache import KVStorage, blocks_for
from services.inference.engine.request import Delta, Done, Event, Failed, GenerationRequest, Started
from services.inference.engine.runner import ModelRunner, build_runner
from services.inference.engine.step_plan import StepPlan, StepRow
from services.inference.kernels import decode_gemm
from services.inference.model.transformer import CONFIGS, ModelArgs, Transformer

SHAPES = {**CONFIGS, "tiny": ModelArgs(dim=128, n_layers=2, n_heads=4, n_kv_heads=2, multiple_of=64)}


class IdTokenizer:
    """Stands in for sentencepiece: random weights emit any of 32000 ids, and EOS must never end a run."""

    bos_id = 1
    eos_id = -1

    def __init__(self, n_words: int) -> None:
        self.n_words = n_words

    def decode(self, ids: list[int]) -> str:
        return "".join(chr(0x4E00 + i % 20000) for i in ids)


@dataclass
class Record:
    submitted: float
    first: float | None = None
    last: float | None = None
    tokens: list[int] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)
    error: str | None = None


def run_requests(
    engine: Engine, prompts: list[list[int]], new_tokens: int, temperature: float = 0.0
) -> list[Record]:
    records = []
    for i, prompt in enumerate(prompts):
        record = Record(time.perf_counter())

        def sink(event: Event, r: Record = record) -> None:
            now = time.perf_counter()
            if isinstance(event, Delta) and event.token_ids and not event.echo:
                r.first = r.first or now
                r.last = now
                r.tokens.extend(event.token_ids)
            elif isinstance(event, Failed):
                r.error = event.error.message
                r.done.set()
            elif isinstance(event, Done):
                r.done.set()
            elif not isinstance(event, Started | Delta):
                raise AssertionError(event)

        params = SamplingParams(temperature=temperature, top_p=0.9, max_gen_len=new_tokens)
        engine.submit(GenerationRequest(f"bench-{i}", tuple(prompt), params, seed=i), sink)
        records.append(record)
    for record in records:
        if not record.done.wait(600):
            raise TimeoutError("a benchmark request did not finish in 600 s")
        if record.error:
            raise RuntimeError(record.error)
    return records


def random_prompts(n: int, length: int, vocab: int, seed: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [[1, *torch.randint(3, vocab, (length - 1,), generator=g).tolist()] for _ in range(n)]


def build_model(args: ModelArgs, device: torch.device, dtype: torch.dtype, seed: int) -> Transformer:
    """Random weights made on the device (a 70B-wide layer takes minutes to fill on the host)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device("meta"):
            model = Transformer(args)
    finally:
        torch.set_default_dtype(previous)
    model.to_empty(device=device)
    generator = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.fill_(1.0)
            else:
                fan_in = param.shape[-1] if name != "tok_embeddings.weight" else 1
                param.normal_(0.0, 1.0 / math.sqrt(fan_in), generator=generator)
    model.build_rope(device)
    return model.eval().requires_grad_(False)


def copy_bandwidth(device: torch.device) -> float:
    """Device-to-device copy bandwidth in bytes/s, counting bytes read plus bytes written."""
    if device.type != "cuda":
        return float("nan")
    src = torch.empty(2**30, dtype=torch.uint8, device=device).random_(0, 255)
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    times = []
    for _ in range(20):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        dst.copy_(src)
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1000)
    del src, dst
    return 2 * 2**30 / statistics.median(times)


def eager_greedy(model: Transformer, prompt: list[int], n: int) -> tuple[list[int], list[float]]:
    """The plain eager model, no cache: recompute the whole sequence for every token.

    Returns the tokens and, per token, the gap between the two best logits (small gap = near tie).
    """
    tokens, gaps = list(prompt), []
    device = next(model.parameters()).device
    with torch.inference_mode():
        for _ in range(n):
            logits = model(torch.tensor([tokens], device=device))[0, -1]
            top = logits.topk(2).values
            gaps.append(float(top[0] - top[1]))
            tokens.append(int(logits.argmax()))
    return tokens[len(prompt) :], gaps


def correctness_prompts(vocab: int) -> list[list[int]]:
    return [random_prompts(1, length, vocab, seed)[0] for seed, length in enumerate([7, 33, 130, 300])]


def check_correctness(
    engine: Engine,
    model: Transformer,
    vocab: int,
    n_tokens: int,
    expected: list[tuple[list[int], list[float]]] | None = None,
) -> dict[str, object]:
    """Greedy tokens of four prompts decoded together, then of the first alone (batch-1 graph),
    against the eager model (`expected`: its results, computed once for several engines)."""
    prompts = correctness_prompts(vocab)
    if expected is None:
        expected = [eager_greedy(model, prompt, n_tokens) for prompt in prompts]
    records = run_requests(engine, prompts, n_tokens)
    records += run_requests(engine, prompts[:1], n_tokens)
    prompts += prompts[:1]
    expected = [*expected, expected[0]]
    results = []
    for prompt, record, (expected_tokens, gaps) in zip(prompts, records, expected, strict=True):
        match = next(
            (i for i, (a, b) in enumerate(zip(record.tokens, expected_tokens, strict=True)) if a != b), None
        )
        # bf16 kernels differ in rounding: a divergence is acceptable only at a near tie.
        ok = match is None or gaps[match] < 0.05 * max(1.0, abs(gaps[0]))
        results.append(
            {
                "prompt_len": len(prompt),
                "first_mismatch": match,
                "gap_there": None if match is None else gaps[match],
                "ok": ok,
            }
        )
    return {"ok": all(r["ok"] for r in results), "prompts": results}


def full_batch_plan(rows: int, context: int, storage: KVStorage, vocab: int) -> StepPlan | None:
    """A sampling decode step of `rows` rows, each at position `context` - 1 of its own blocks (from
    block 1 up; None if the cache has too few): launched on an idle engine's runner, it leaves a
    full step in the decode graph's inputs for replay_ms and kernel_profile. What the blocks hold
    does not matter for timing (attention reads `context` keys per row either way); the new keys
    and values go to the reserved pad slot, so no block a later request may find cached changes."""
    per_row = -(-context // storage.block_size)
    if 1 + rows * per_row > storage.num_blocks:
        return None
    position = context - 1
    plan_rows = []
    for row in range(rows):
        table = list(range(1 + row * per_row, 1 + (row + 1) * per_row))
        plan_rows.append(
            StepRow(
                tokens=[row % vocab],
                positions=[position],
                slots=[PAD_SLOT],
                block_table=table,
                context_len=context,
                sample_index=0,
                temperature=0.8,
                top_p=0.9,
                seed=row,
                step=0,
                batch_slot=row,
                samples=True,
            )
        )
    return StepPlan(decode=True, fresh=False, rows=plan_rows)


def replay_ms(runner: ModelRunner, size: int, greedy: bool = False) -> float | None:
    """Device time of one captured decode step of `size` rows (CUDA events, median of 30 replays),
    on the inputs the last step of that size left in the graph's buffers (for the stream counts,
    a full batch: full_batch_plan)."""
    graphs = getattr(runner, "_greedy_graphs" if greedy else "_graphs", {})
    if size not in graphs:
        return None
    graph, _ = graphs[size]
    for _ in range(3):
        graph.replay()
    times = []
    for _ in range(30):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def _device_us(event: object) -> float:
    value = getattr(event, "device_time_total", None) or getattr(event, "cuda_time_total", 0.0)
    return float(value or 0.0)


def kernel_profile(
    runner: ModelRunner, size: int, label: str, greedy: bool = False
) -> dict[str, float] | None:
    """Where one captured decode step's device time goes: kernel time per step by kind (µs).

    The full per-kernel table goes to $OUT/kernels_<label>_b<size>.txt.
    """
    graphs = getattr(runner, "_greedy_graphs" if greedy else "_graphs", {})
    if size not in graphs:
        return None
    from torch.profiler import ProfilerActivity, profile

    graph, _ = graphs[size]
    replays = 5
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(replays):
            graph.replay()
        torch.cuda.synchronize()
    events = [e for e in prof.key_averages() if _device_us(e) > 0]
    if not events:
        # Kernels inside graph replays were not traced: profile the same step run without the graph.
        ints, floats = runner._ints, runner._floats
        assert ints is not None and floats is not None
        with torch.inference_mode(), profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(replays):
                runner._decode_step(ints[:size], floats[:size], greedy=greedy)
            torch.cuda.synchronize()
        events = [e for e in prof.key_averages() if _device_us(e) > 0]
        label += "_nograph"
    return kernel_table(events, replays, f"{label}_b{size}")


def kernel_kind(name: str) -> str:
    """A profiled GPU kernel's kind, by its name."""
    lowered = name.lower()
    # Inductor names its fused kernels after the ops they fuse ("triton_poi_fused__scaled_dot_product_
    # cudnn_attention_..." prepares attention's inputs), so they never count as attention themselves;
    # cuDNN's attention kernels carry "sm90_" as cuBLAS's do, so attention is told apart first.
    fused = lowered.startswith("triton_")
    if "decode_kernel" in lowered or "merge_kernel" in lowered:
        return "paged_attention"
    if not fused and any(k in lowered for k in ("prefill_kernel", "flash", "sdpa", "attention")):
        return "prefill_attention"
    matmuls = ("gemv", "gemm", "cutlass", "nvjet", "sm90_", "cublas", "splitk", "skinny", "w8a8")
    if any(k in lowered for k in matmuls):
        return "matmul"
    if "dequantize" in lowered:
        return "fp8_dequantize"
    if "quantize_rows" in lowered:
        return "fp8_quantize"
    if "rotary_write" in lowered or "index_copy" in lowered or "indexcopy" in lowered:
        return "kv_write"
    if lowered.startswith("triton_"):
        return "fused_elementwise"
    if any(k in lowered for k in ("sort", "radix", "scan", "cumsum")):
        return "sampler_sort_scan"
    if "memcpy" in lowered or "memset" in lowered:
        return "copies"
    return "other_eager"


def kernel_table(events: list[Any], repeats: int, label: str) -> dict[str, float]:
    """GPU time per repeat by kernel kind (µs); the per-kernel table goes to
    $OUT/kernels_<label>.txt and its top 12 lines to stdout."""
    kinds: dict[str, float] = {}
    rows = []
    for event in events:
        total = _device_us(event)
        kind = kernel_kind(event.key)
        kinds[kind] = kinds.get(kind, 0.0) + total / repeats
        rows.append((total / repeats, event.count // repeats, kind, event.key))
    rows.sort(reverse=True)
    out_dir = Path(os.environ.get("OUT", "."))
    lines = [f"{us:10.1f} us/step  x{count:<4d} {kind:18s} {name[:150]}" for us, count, kind, name in rows]
    (out_dir / f"kernels_{label}.txt").write_text("\n".join(lines) + "\n")
    print(f"kernel profile {label} (top 12 of {len(rows)}):\n" + "\n".join(lines[:12]), flush=True)
    kinds["kernels_total"] = sum(v for k, v in kinds.items())
    return {k: round(v, 1) for k, v in kinds.items()}


def prefill_profile(engine: Engine, prompt: list[int], label: str) -> dict[str, float]:
    """Where one prompt's time to first token goes on the device: kernel time by kind (µs). The
    engine's prefix cache must not hold the prompt."""
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        run_requests(engine, [prompt], 1)
        torch.cuda.synchronize()
    events = [e for e in prof.key_averages() if _device_us(e) > 0]
    return kernel_table(events, 1, f"{label}_prefill{len(prompt)}")


def guarded(fn: Callable[..., object], *args: object) -> object:
    """A diagnostic that must not cost the run its other numbers."""
    try:
        return fn(*args)
    except Exception as error:
        print(f"{getattr(fn, '__name__', fn)} failed: {type(error).__name__}: {error}", flush=True)
        return None


def measure_engine(
    engine: Engine,
    vocab: int,
    args: argparse.Namespace,
    streams: list[int],
    *,
    runner: ModelRunner | None = None,
    label: str = "",
    ttft_lens: tuple[int, ...] | list[int] = (512,),
    profile_kernels: bool = True,
) -> dict[str, object]:
    """Batch-1 decode, each stream count, TTFT per prompt length; with `runner` on CUDA also the
    device time of the decode graphs and a kernel breakdown (bench/multi_gpu_bench.py calls this
    without a runner)."""
    out: dict[str, object] = {}
    n = args.new_tokens
    run_requests(engine, random_prompts(2, args.prompt_len, vocab, 99), 8)  # warm the prefill shapes
    (one,) = run_requests(engine, random_prompts(1, args.prompt_len, vocab, 1), n)
    assert one.first is not None and one.last is not None
    out["batch1_decode_tok_s"] = (len(one.tokens) - 1) / (one.last - one.first)
    out["batch1_step_ms"] = 1000 * (one.last - one.first) / (len(one.tokens) - 1)
    if runner is not None and runner.device.type == "cuda":
        # Batch 1 is greedy, so the engine replays the greedy graph; the sampling one for comparison.
        out["batch1_gpu_step_ms"] = replay_ms(runner, 1, greedy=True)
        out["batch1_gpu_step_sampling_ms"] = replay_ms(runner, 1)
        if profile_kernels:
            out["batch1_kernels_us"] = guarded(kernel_profile, runner, 1, label, True)
    for count in streams:
        records = run_requests(
            engine, random_prompts(count, args.prompt_len, vocab, count), n, temperature=0.8
        )
        start = min(r.submitted for r in records)
        end = max(r.last or 0.0 for r in records)
        total = sum(len(r.tokens) for r in records)
        out[f"streams{count}_total_tok_s"] = total / (end - start)
        out[f"streams{count}_p50_ttft_ms"] = 1000 * statistics.median(
            (r.first or 0) - r.submitted for r in records
        )
        # Step time once every stream decodes: the last stream to start, from its first token.
        last_started = max(records, key=lambda r: r.first or 0.0)
        if last_started.first is not None and last_started.last is not None and len(last_started.tokens) > 1:
            span = last_started.last - last_started.first
            out[f"streams{count}_decode_step_ms"] = 1000 * span / (len(last_started.tokens) - 1)
        if runner is not None and runner.device.type == "cuda":
            size = next((s for s in sorted(getattr(runner, "_graphs", {})) if s >= count), None)
            # Every stream live at the run's mean context: the run's last step of this graph size
            # (its tail, as streams finish) would leave few rows in the graph's inputs.
            plan = full_batch_plan(count, args.prompt_len + n // 2, runner.storage, vocab)
            if size is not None and plan is not None:
                runner.launch(plan).result()
                out[f"streams{count}_gpu_step_context"] = args.prompt_len + n // 2
                out[f"streams{count}_gpu_step_ms"] = replay_ms(runner, size)
                if profile_kernels and count == max(streams):
                    out[f"streams{count}_kernels_us"] = guarded(kernel_profile, runner, size, label)
    for length in ttft_lens:
        ttfts = []
        for seed in range(5):
            (record,) = run_requests(engine, random_prompts(1, length, vocab, 1000 + seed), 1)
            ttfts.append((record.first or 0) - record.submitted)
        out[f"ttft_{length}_ms"] = 1000 * statistics.median(ttfts)
        if runner is not None and runner.device.type == "cuda" and profile_kernels:
            # A prompt not seen before: a cached one would prefill only its last partial block.
            prompt = random_prompts(1, length, vocab, 2000)[0]
            out[f"ttft_{length}_kernels_us"] = guarded(prefill_profile, engine, prompt, label)
    if runner is not None and ttft_lens:
        # A prefill forward the compiler failed on runs eagerly (runner.capture logs why).
        out["prefill_compiled"] = runner.prefill_compiled
    return out


def hf_model(model: Transformer, dtype: torch.dtype, device: torch.device):  # type: ignore[no-untyped-def]
    """transformers' Llama with our weights (q/k rows permuted to HF's rotate-half layout)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    a = model.args
    config = LlamaConfig(  # type: ignore[call-arg]  # rope_theta: accepted at run time (transformers 5.17)
        hidden_size=a.dim,
        intermediate_size=a.hidden_dim,
        num_hidden_layers=a.n_layers,
        num_attention_heads=a.n_heads,
        num_key_value_heads=a.kv_heads,
        vocab_size=a.vocab_size,
        max_position_embeddings=a.max_seq_len,
        rms_norm_eps=a.norm_eps,
        rope_theta=a.rope_theta,
        tie_word_embeddings=False,
    )
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            hf = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)

    def permute(w: torch.Tensor, heads: int) -> torch.Tensor:
        rows, cols = w.shape
        return w.view(heads, rows // heads // 2, 2, cols).transpose(1, 2).reshape(rows, cols)

    ours: dict[str, torch.Tensor] = dict(model.named_parameters())
    widths = (a.n_heads * a.head_dim, a.kv_heads * a.head_dim, a.kv_heads * a.head_dim)
    for i in range(a.n_layers):
        p = f"layers.{i}."
        if p + "attention.wqkv.weight" in ours:  # fused by build_runner; HF keeps them apart
            q, k, v = ours.pop(p + "attention.wqkv.weight").split(widths)
            w1, w3 = ours.pop(p + "feed_forward.w13.weight").chunk(2)
            ours |= {p + "attention.wq.weight": q, p + "attention.wk.weight": k, p + "attention.wv.weight": v}
            ours |= {p + "feed_forward.w1.weight": w1, p + "feed_forward.w3.weight": w3}
    state: dict[str, torch.Tensor] = {
        "model.embed_tokens.weight": ours["tok_embeddings.weight"],
        "model.norm.weight": ours["norm.weight"],
        "lm_head.weight": ours["output.weight"],
    }
    for i in range(a.n_layers):
        p, q = f"layers.{i}.", f"model.layers.{i}."
        state |= {
            q + "self_attn.q_proj.weight": permute(ours[p + "attention.wq.weight"], a.n_heads),
            q + "self_attn.k_proj.weight": permute(ours[p + "attention.wk.weight"], a.kv_heads),
            q + "self_attn.v_proj.weight": ours[p + "attention.wv.weight"],
            q + "self_attn.o_proj.weight": ours[p + "attention.wo.weight"],
            q + "mlp.gate_proj.weight": ours[p + "feed_forward.w1.weight"],
            q + "mlp.up_proj.weight": ours[p + "feed_forward.w3.weight"],
            q + "mlp.down_proj.weight": ours[p + "feed_forward.w2.weight"],
            q + "input_layernorm.weight": ours[p + "attention_norm.weight"],
            q + "post_attention_layernorm.weight": ours[p + "ffn_norm.weight"],
        }
    missing, unexpected = hf.load_state_dict(state, strict=False)
    if unexpected or [m for m in missing if "rotary" not in m]:
        raise RuntimeError(f"weight mapping mismatch: missing {missing}, unexpected {unexpected}")
    return hf.eval()


def hf_tok_s(hf, batch: int, prompt_len: int, new_tokens: int, vocab: int, **kwargs: object) -> float:  # type: ignore[no-untyped-def]
    device = next(hf.parameters()).device
    ids = torch.tensor(random_prompts(batch, prompt_len, vocab, 7), device=device)
    mask = torch.ones_like(ids)
    common = dict(
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        do_sample=False,
        pad_token_id=0,
        eos_token_id=None,
    )
    with torch.inference_mode():
        hf.generate(ids, attention_mask=mask, **common, **kwargs)  # warm-up (and compile)
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = hf.generate(ids, attention_mask=mask, **common, **kwargs)
        if device.type == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
    return batch * (out.shape[1] - prompt_len) / elapsed


def hf_first_tokens(hf, prompt: list[int], n: int) -> list[int]:  # type: ignore[no-untyped-def]
    device = next(hf.parameters()).device
    ids = torch.tensor([prompt], device=device)
    with torch.inference_mode():
        out = hf.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=n,
            min_new_tokens=n,
            do_sample=False,
            pad_token_id=0,
            eos_token_id=None,
        )
    return out[0, len(prompt) :].tolist()


def build_shape(
    args: argparse.Namespace, shape: str, device: torch.device, dtype: torch.dtype
) -> tuple[str, ModelArgs, Transformer, int]:
    """`shape` ("7B", or "70B:8" for its first 8 layers) -> label, args, random model, weight bytes."""
    name, _, layer_text = shape.partition(":")
    layers = int(layer_text) if layer_text else args.layers
    model_args = replace(SHAPES[name], max_seq_len=args.max_seq_len)
    if layers:
        model_args = replace(model_args, n_layers=layers)
    label = name + (f"-{layers}L" if layers else "")
    model = build_model(model_args, device, dtype, seed=0)
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    return label, model_args, model, weight_bytes


def bench_shape(
    args: argparse.Namespace, shape: str, device: torch.device, dtype: torch.dtype, bandwidth: float
) -> dict[str, object]:
    t0 = time.perf_counter()
    label, model_args, model, weight_bytes = build_shape(args, shape, device, dtype)
    result: dict[str, object] = {"shape": label}
    result["weight_gib"] = weight_bytes / 2**30
    result["roofline_tok_s"] = bandwidth / weight_bytes
    config = EngineConfig(
        max_seq_len=args.max_seq_len,
        max_batch_size=args.max_batch_size,
        device=device.type,
        dtype=str(dtype).removeprefix("torch."),
        gpu_memory_utilization=args.gpu_memory_utilization,
        num_kv_blocks=args.num_kv_blocks,
        prefill_chunk=args.prefill_chunk,
        compile=args.compile and device.type == "cuda",
        cuda_graphs=device.type == "cuda",
    )
    runner, allocator = build_runner(model, config)
    result["kv_blocks"] = allocator.usable_blocks
    t1 = time.perf_counter()
    try:
        runner.capture()
    except Exception as error:
        result["compile_error"] = f"{type(error).__name__}: {error}"[:800]
        print("compile failed:", result["compile_error"], flush=True)
    if "compile_error" in result:
        # Rebuilt outside the except block: its traceback would keep the first KV cache alive.
        config = replace(config, compile=False)
        del runner
        gc.collect()
        torch.cuda.empty_cache()
        runner, allocator = build_runner(model, config)
        runner.capture()
    result["compiled"] = config.compile
    result["capture_s"] = time.perf_counter() - t1
    engine = Engine(config, runner, IdTokenizer(model_args.vocab_size), allocator)  # type: ignore[arg-type]
    engine.start()
    try:
        if not args.quick:
            result["correctness"] = check_correctness(engine, model, model_args.vocab_size, args.check_tokens)
            print("correctness:", json.dumps(result["correctness"]), flush=True)
        streams = args.streams or ([32] if args.quick else [8, 32, 64])
        streams = [s for s in streams if s <= args.max_batch_size]
        result |= measure_engine(
            engine, model_args.vocab_size, args, streams, runner=runner, label=label, ttft_lens=args.ttft_lens
        )
        stats = engine.stats()
        result["free_blocks_after"] = stats.free_blocks
        result["preemptions"] = stats.preemptions
    finally:
        engine.stop(drain=False, timeout_s=60)
    if args.compare_no_overlap:
        # The same runner, one step at a time: what overlapping host work with the device buys.
        serial = Engine(
            replace(config, overlap_steps=False),
            runner,
            IdTokenizer(model_args.vocab_size),  # type: ignore[arg-type]
            allocator,
        )
        serial.start()
        try:
            measured = measure_engine(
                serial,
                model_args.vocab_size,
                args,
                [max(streams)],
                runner=runner,
                label=label,
                ttft_lens=(),
                profile_kernels=False,
            )
            result |= {f"no_overlap_{k}": v for k, v in measured.items()}
        finally:
            serial.stop(drain=False, timeout_s=60)
        del serial  # it holds the runner, hence the KV cache
    if device.type == "cuda":
        result["peak_gpu_gib"] = torch.cuda.max_memory_allocated() / 2**30
    print(json.dumps(result), flush=True)
    del engine, runner, allocator
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    if config.compile and not args.quick and not args.skip_no_compile:
        # The same engine with CUDA graphs of the eager step: what compiling buys.
        plain = replace(
            config, compile=False, num_kv_blocks=2 * blocks_for(args.max_seq_len, config.kv_block_size)
        )
        runner, allocator = build_runner(model, plain)
        runner.capture()
        engine = Engine(plain, runner, IdTokenizer(model_args.vocab_size), allocator)  # type: ignore[arg-type]
        engine.start()
        try:
            (one,) = run_requests(
                engine, random_prompts(1, args.prompt_len, model_args.vocab_size, 1), args.new_tokens
            )
            assert one.first is not None and one.last is not None
            result["graphs_no_compile_batch1_tok_s"] = (len(one.tokens) - 1) / (one.last - one.first)
        finally:
            engine.stop(drain=False, timeout_s=60)
        del engine, runner, allocator
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if not args.quick and not args.skip_hf:
        try:
            hf = hf_model(model, dtype, device)
            prompt = random_prompts(1, 33, model_args.vocab_size, 1)[0]
            ours, gaps = eager_greedy(model, prompt, 16)
            theirs = hf_first_tokens(hf, prompt, 16)
            result["hf_same_tokens_as_eager"] = theirs == ours
            differ = next((i for i, (a, b) in enumerate(zip(theirs, ours, strict=True)) if a != b), None)
            if differ is not None:
                result["hf_first_difference"] = {"index": differ, "our_top2_gap_there": gaps[differ]}
            n = args.hf_new_tokens
            result["hf_eager_b1_tok_s"] = hf_tok_s(hf, 1, args.prompt_len, n, model_args.vocab_size)
            result["hf_eager_b64_tok_s"] = hf_tok_s(
                hf, min(64, args.max_batch_size), args.prompt_len, n, model_args.vocab_size
            )
            print(json.dumps(result), flush=True)
            if device.type == "cuda":
                result["hf_static_compiled_b1_tok_s"] = hf_tok_s(
                    hf, 1, args.prompt_len, n, model_args.vocab_size, cache_implementation="static"
                )
                print(json.dumps(result), flush=True)
            if device.type == "cuda" and args.hf_static_b8:
                result["hf_static_compiled_b8_tok_s"] = hf_tok_s(
                    hf, 8, args.prompt_len, n, model_args.vocab_size, cache_implementation="static"
                )
        except Exception as error:
            result["hf_error"] = f"{type(error).__name__}: {error}"[:500]
        finally:
            hf = None
    result["shape_wall_s"] = time.perf_counter() - t0
    del model
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    return result


def parse_variant(name: str) -> tuple[str, bool, str]:
    """ "triton" -> ("triton", fused KV write on, "tensor-cores"); "cublas-unfused" -> ("cublas", off,
    "tensor-cores"); "auto-cudacores" -> ("auto", on, "cuda-cores")."""
    gemm, *options = name.split("-")
    if (
        gemm not in DECODE_GEMMS
        or not set(options) <= {"unfused", "cudacores"}
        or len(set(options)) < len(options)
    ):
        raise SystemExit(
            f"unknown variant {name!r}: use {'|'.join(DECODE_GEMMS)}, optionally with -unfused and -cudacores"
        )
    return gemm, "unfused" not in options, "cuda-cores" if "cudacores" in options else "tensor-cores"


def free_runner() -> None:
    """Drop compiled code (its guards hold the last runner, hence its KV cache) and cached memory."""
    torch._dynamo.reset()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def measure_variant(
    args: argparse.Namespace,
    model: Transformer,
    config: EngineConfig,
    streams: list[int],
    expected: list[tuple[list[int], list[float]]],
    label: str,
) -> dict[str, object]:
    """Build a runner for `config` on the shared model, capture, check and measure it."""
    t0 = time.perf_counter()
    vocab = model.args.vocab_size
    runner, allocator = build_runner(model, config)
    runner.capture()
    out: dict[str, object] = {"capture_s": time.perf_counter() - t0}
    engine = Engine(config, runner, IdTokenizer(vocab), allocator)  # type: ignore[arg-type]
    engine.start()
    try:
        out["correctness"] = check_correctness(engine, model, vocab, args.check_tokens, expected)
        out |= measure_engine(engine, vocab, args, streams, runner=runner, label=label, ttft_lens=())
    finally:
        engine.stop(drain=False, timeout_s=60)
    if config.decode_gemm == "auto":
        out["auto_triton_won"] = decode_gemm.auto_choices()
    return out


def bench_variants(
    args: argparse.Namespace, shape: str, device: torch.device, dtype: torch.dtype, bandwidth: float
) -> dict[str, object]:
    """One model, one runner per decode-kernel variant; only what differs between them is rebuilt."""
    t0 = time.perf_counter()
    label, model_args, model, weight_bytes = build_shape(args, shape, device, dtype)
    roofline = bandwidth / weight_bytes
    variants: dict[str, dict[str, object]] = {}
    result: dict[str, object] = {
        "shape": label,
        "weight_gib": weight_bytes / 2**30,
        "roofline_tok_s": roofline,
        "variants": variants,
    }
    streams = [s for s in (args.streams or [64]) if s <= args.max_batch_size]
    # Enough blocks for every stream's prompt and tokens, with room to spare; a cache sized to the
    # card would be reallocated for every variant.
    per_stream = blocks_for(args.prompt_len + args.new_tokens + 64, 16)
    num_blocks = args.num_kv_blocks or max(2048, 2 * per_stream * max([*streams, 4]))
    # The plain eager model's tokens, before any variant swaps its projections.
    expected = [eager_greedy(model, p, args.check_tokens) for p in correctness_prompts(model_args.vocab_size)]
    for variant in args.variants:
        gemm, fused, attention = parse_variant(variant)
        t1 = time.perf_counter()
        config = EngineConfig(
            max_seq_len=args.max_seq_len,
            max_batch_size=args.max_batch_size,
            device=device.type,
            dtype=str(dtype).removeprefix("torch."),
            num_kv_blocks=num_blocks,
            prefill_chunk=args.prefill_chunk,
            compile=args.compile and device.type == "cuda",
            cuda_graphs=device.type == "cuda",
            graph_sizes=tuple(sorted({1, 4, *streams})),
            fused_kv_write=fused,
            decode_gemm=gemm,
            decode_attention=attention,
        )
        try:
            out = measure_variant(args, model, config, streams, expected, f"{label}_{variant}")
            out["batch1_pct_roofline"] = 100 * float(out["batch1_decode_tok_s"]) / roofline  # type: ignore[arg-type]
        except Exception as error:
            # One variant's failure (a kernel that does not build, a capture error) must not cost the others.
            traceback.print_exc()
            out = {"error": f"{type(error).__name__}: {error}"[:800]}
        out["variant_wall_s"] = time.perf_counter() - t1
        variants[variant] = out
        print(json.dumps({"variant": variant, **out}), flush=True)
        # After every variant, so a run cut short still leaves a table of what it measured.
        print(variants_table(result, streams), flush=True)
        free_runner()
    result["shape_wall_s"] = time.perf_counter() - t0
    del model
    free_runner()
    return result


def variants_table(result: dict[str, object], streams: list[int]) -> str:
    roofline = float(result["roofline_tok_s"])  # type: ignore[arg-type]
    head = [
        "variant",
        "batch-1 tok/s",
        "% of roofline",
        "b1 GPU step ms",
        "b1 kernels µs",
        "matmul µs",
        "kv_write µs",
        "b1 attention µs",
    ]
    for n in streams:
        head += [f"{n} streams tok/s", f"{n} streams GPU step ms", f"{n} streams attention µs"]
    head += ["correct", "capture s"]
    lines = [
        f"{result['shape']}: roofline {roofline:.1f} tok/s ({result['weight_gib']:.2f} GiB of weights)",
        "| " + " | ".join(head) + " |",
        "| --- |" + " --- |" * (len(head) - 1),
    ]
    variants: dict[str, dict[str, object]] = result["variants"]  # type: ignore[assignment]
    for variant, out in variants.items():
        kernels: dict[str, float] = out.get("batch1_kernels_us") or {}  # type: ignore[assignment]

        def cell(value: object) -> str:
            return "" if value is None else f"{value:.1f}" if isinstance(value, float) else str(value)

        row = [
            variant,
            cell(out.get("batch1_decode_tok_s")),
            cell(out.get("batch1_pct_roofline")),
            f"{out['batch1_gpu_step_ms']:.3f}" if out.get("batch1_gpu_step_ms") else "",
            cell(kernels.get("kernels_total")),
            cell(kernels.get("matmul")),
            cell(kernels.get("kv_write")),
            cell(kernels.get("paged_attention")),
        ]
        for n in streams:
            stream_kernels: dict[str, float] = out.get(f"streams{n}_kernels_us") or {}  # type: ignore[assignment]
            step_ms = out.get(f"streams{n}_gpu_step_ms")
            row += [
                cell(out.get(f"streams{n}_total_tok_s")),
                f"{step_ms:.3f}" if isinstance(step_ms, float) else "",
                cell(stream_kernels.get("paged_attention")),
            ]
        correctness: dict[str, object] = out.get("correctness") or {}  # type: ignore[assignment]
        row += [cell(correctness.get("ok", "error")), cell(out.get("capture_s"))]
        lines.append("| " + " | ".join(row) + " |")
    for variant, out in variants.items():
        if "error" in out:
            lines.append(f"\nerror {variant}: {out['error']}")
        elif not out["correctness"]["ok"]:  # type: ignore[index]
            lines.append(f"\ncorrectness {variant}: {json.dumps(out['correctness'])}")
        if "auto_triton_won" in out:
            lines.append(f"\nauto {variant}: Triton won for {json.dumps(out['auto_triton_won'])}")
        if out.get("batch1_kernels_us"):
            lines.append(f"\nbatch1_kernels_us {variant}: {json.dumps(out['batch1_kernels_us'])}")
    return "\n".join(lines)


def table(results: list[dict[str, object]]) -> str:
    keys = [
        "weight_gib",
        "roofline_tok_s",
        "batch1_decode_tok_s",
        "batch1_step_ms",
        "batch1_gpu_step_ms",
        "batch1_gpu_step_sampling_ms",
        "no_overlap_batch1_decode_tok_s",
        "no_overlap_batch1_step_ms",
        "streams8_total_tok_s",
        "streams32_total_tok_s",
        "streams64_total_tok_s",
        "no_overlap_streams64_total_tok_s",
        "no_overlap_streams32_total_tok_s",
        "streams32_decode_step_ms",
        "streams32_gpu_step_ms",
        "streams64_decode_step_ms",
        "streams64_gpu_step_ms",
        "no_overlap_streams64_decode_step_ms",
        "streams32_p50_ttft_ms",
        "streams64_p50_ttft_ms",
        "ttft_512_ms",
        "ttft_2048_ms",
        "peak_gpu_gib",
        "kv_blocks",
        "capture_s",
        "compiled",
        "graphs_no_compile_batch1_tok_s",
        "hf_eager_b1_tok_s",
        "hf_eager_b64_tok_s",
        "hf_static_compiled_b1_tok_s",
        "hf_static_compiled_b8_tok_s",
    ]
    lines = [
        "| metric | " + " | ".join(str(r["shape"]) for r in results) + " |",
        "| --- |" + " --- |" * len(results),
    ]
    for key in keys:
        cells = []
        for r in results:
            value = r.get(key)
            cells.append("" if value is None else f"{value:.1f}" if isinstance(value, float) else str(value))
        if any(cells):
            lines.append(f"| {key} | " + " | ".join(cells) + " |")
    for r in results:
        if "correctness" in r:
            lines.append(f"\ncorrectness {r['shape']}: {json.dumps(r['correctness'])}")
        if "compile_error" in r:
            lines.append(f"\ncompile error {r['shape']}: {r['compile_error']}")
        if "hf_error" in r:
            lines.append(f"\nHF error {r['shape']}: {r['hf_error']}")
        for key in ("batch1_kernels_us", "streams32_kernels_us", "streams64_kernels_us"):
            if r.get(key):
                lines.append(f"\n{key} {r['shape']}: {json.dumps(r[key])}")
        if "hf_same_tokens_as_eager" in r:
            lines.append(
                f"\nHF greedy == our eager model ({r['shape']}): {r['hf_same_tokens_as_eager']} "
                f"{json.dumps(r.get('hf_first_difference'))}"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--shape",
        default="7B",
        help="comma list of 7B, 13B, 70B, tiny; NAME:LAYERS overrides n_layers (70B:8)",
    )
    parser.add_argument("--layers", type=int, help="override n_layers (e.g. a 70B-wide model on one GPU)")
    parser.add_argument("--quick", action="store_true", help="batch 1, 32 streams and TTFT only; no HF")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--prompt-len", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--hf-new-tokens", type=int, default=128)
    parser.add_argument("--check-tokens", type=int, default=32)
    parser.add_argument("--max-seq-len", type=int, default=4096)
    parser.add_argument("--max-batch-size", type=int, default=64)
    parser.add_argument("--prefill-chunk", type=int, default=512)
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    parser.add_argument("--num-kv-blocks", type=int)
    parser.add_argument("--no-compile", dest="compile", action="store_false")
    parser.add_argument("--skip-hf", action="store_true")
    parser.add_argument(
        "--skip-no-compile", action="store_true", help="skip the graphs-without-compile engine"
    )
    parser.add_argument("--compare-no-overlap", action="store_true", help="also run steps one at a time")
    parser.add_argument("--streams", type=lambda t: [int(x) for x in t.split(",")], help="e.g. 32,64")
    parser.add_argument(
        "--ttft-lens", type=lambda t: [int(x) for x in t.split(",")], default=[512], help="e.g. 512,2048"
    )
    parser.add_argument(
        "--hf-static-b8", action="store_true", help="also HF static cache at batch 8 (one more compile)"
    )
    parser.add_argument(
        "--variants",
        type=lambda t: t.split(","),
        help="decode-kernel variants timed side by side, e.g. cublas-unfused,cublas,triton,auto "
        "(default --streams 64; no TTFT, HF or no-compile runs)",
    )
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ".")) / "inference_bench.json")
    args = parser.parse_args()

    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    header: dict[str, object] = {"torch": torch.__version__, "device": str(device)}
    if device.type == "cuda":
        header["gpu"] = torch.cuda.get_device_name(device)
    bandwidth = copy_bandwidth(device)
    header["copy_bandwidth_gb_s"] = bandwidth / 1e9
    print(json.dumps(header), flush=True)
    results = []
    if args.variants:
        for variant in args.variants:
            parse_variant(variant)
        for shape in args.shape.split(","):
            results.append(bench_variants(args, shape, device, dtype, bandwidth))
            args.out.write_text(json.dumps({"header": header, "results": results}, indent=2))
        print(json.dumps(header))
        streams = [s for s in (args.streams or [64]) if s <= args.max_batch_size]
        print("\n\n".join(variants_table(r, streams) for r in results))
        return
    for shape in args.shape.split(","):
        results.append(bench_shape(args, shape, device, dtype, bandwidth))
        args.out.write_text(json.dumps({"header": header, "results": results}, indent=2))
    print(json.dumps(header))
    print(table(results))


if __name__ == "__main__":
    main()
