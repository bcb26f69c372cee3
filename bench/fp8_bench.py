"""FP8 weights against bf16 on one GPU, in one run (`--weights-dtype fp8`, model/fp8.py).

    python -m bench.fp8_bench            # one H100/H200, about 5 minutes
    python -m bench.fp8_bench --tiny     # dry run on CPU with tiny shapes (the reference FP8 path)

1. Roofline: device-to-device copy bandwidth; a decode step's floor is the bytes it reads (every
   weight but the embedding table) over that bandwidth.
2. 7B, random weights: the same model in bf16 and in FP8 (quantized from it), each through the
   engine (compiled decode, CUDA graphs for batch 1 and the stream count): batch-1 decode tok/s,
   N-stream tok/s, TTFT of a 512-token prompt; the FP8 model again with the KV cache in FP8 too
   (`fp8-kv8`, `--kv-cache-dtype fp8`).
3. Accuracy, FP8 against bf16: logits over a prompt set (teacher-forced; max and mean |difference|,
   top-1 agreement) through the prefill path (per-token FP8 activations) and the reference
   (dequantized weights, bf16 activations, the numerics of the decode kernel); greedy tokens of
   both engines on the same prompts (where they first part); decode-step logits over an fp8 KV
   cache against a bf16 one (teacher-forced, bf16 weights: the cache's rounding alone); and the
   same logit comparisons on the demo model, a small trained checkpoint
   (services/inference/demo.py), as a non-random check.
4. Kernels on 7B's projection shapes: FP8 Triton skinny GEMM, and FP8 tensor cores through
   `torch._scaled_mm` and the Triton W8A8 kernel (both with their activation quantization), against
   bf16 cuBLAS and bf16 Triton (decode_gemm), at 1, 16, 32, 64 and 512 rows;
   FP8 Triton and bf16 cuBLAS on 70B's shapes at 1 row.
5. 70B-shaped layers (dim 8192, GQA 8 kv heads) in FP8 on one GPU: batch-1 decode through the engine
   with 8 and 4 layers; the difference is the time per layer, which projects the 80-layer step.

Results go to $OUT/fp8_bench.json (and the kernel profiles of the engine runs); a table at the end.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from bench.inference_bench import (
    SHAPES,
    IdTokenizer,
    build_model,
    copy_bandwidth,
    free_runner,
    guarded,
    measure_engine,
    random_prompts,
    replay_ms,
    run_requests,
)
from services.inference.engine.blocks import BlockAllocator
from services.inference.engine.cache_replay import decode_through_cache
from services.inference.engine.config import EngineConfig
from services.inference.engine.engine import Engine
from services.inference.engine.kv_cache import blocks_for
from services.inference.engine.runner import ModelRunner, build_runner
from services.inference.kernels import DECODE_ATTENTIONS, decode_gemm, fp8_linear, w8a8_gemm
from services.inference.model.fp8 import (
    FP8_DTYPE,
    check_fp8_device,
    quantize,
    quantize_projections,
)
from services.inference.model.transformer import CONFIGS, ModelArgs, Transformer

TINY_70B = ModelArgs(dim=128, n_layers=4, n_heads=8, n_kv_heads=1, multiple_of=64, vocab_size=1000)


def decode_bytes(model: nn.Module) -> int:
    """Bytes a decode step reads from the weights: all of them but the embedding (one row a token)."""
    return sum(p.numel() * p.element_size() for n, p in model.named_parameters() if "tok_embeddings" not in n)


def full_70b_fp8_bytes() -> int:
    """Decode bytes of the whole 70B in FP8: projections 1 byte + a 4-byte scale a row, the head and
    norms in bf16."""
    a = CONFIGS["70B"]
    q, kv = a.n_heads * a.head_dim, a.kv_heads * a.head_dim
    shapes = [(q + 2 * kv, a.dim), (a.dim, q), (2 * a.hidden_dim, a.dim), (a.dim, a.hidden_dim)]
    layer = sum(n * k + 4 * n for n, k in shapes) + 2 * 2 * a.dim
    return a.n_layers * layer + 2 * (a.vocab_size * a.dim + a.dim)


# -- accuracy ------------------------------------------------------------------------------------


def eager_logits(model: Transformer, prompts: list[list[int]]) -> Tensor:
    """[prompts, len, vocab] fp32 logits of the plain model (no cache), one prompt at a time."""
    device = model.output.weight.device
    with torch.inference_mode():
        return torch.stack([model(torch.tensor([p], device=device))[0] for p in prompts])


def logit_error(got: Tensor, expected: Tensor) -> dict[str, float]:
    diff = (got - expected).abs()
    return {
        "max_abs_diff": float(diff.max()),
        "mean_abs_diff": float(diff.mean()),
        # Against the logits' own spread, so random and trained models read alike.
        "mean_abs_diff_over_logit_std": float(diff.mean() / expected.std()),
        "top1_agreement": float((got.argmax(-1) == expected.argmax(-1)).float().mean()),
    }


def compare_logits(model: Transformer, prompts: list[list[int]], expected: Tensor) -> dict[str, float]:
    return logit_error(eager_logits(model, prompts), expected)


def greedy_agreement(a: list[list[int]], b: list[list[int]]) -> dict[str, object]:
    """Where two engines' greedy continuations of the same prompts first part, and how many match."""
    first = [
        next((i for i, (x, y) in enumerate(zip(s, t, strict=True)) if x != y), len(s))
        for s, t in zip(a, b, strict=True)
    ]
    same = sum(x == y for s, t in zip(a, b, strict=True) for x, y in zip(s, t, strict=True))
    return {
        "tokens_per_prompt": len(a[0]) if a else 0,
        "identical_prefix_lens": first,
        "same_position_fraction": same / max(1, sum(len(s) for s in a)),
    }


def kv_cache_error(model: Transformer, prompts: list[list[int]], new_tokens: int) -> dict[str, float]:
    """Decode-step logits over an fp8 KV cache against a cache in the model's dtype, teacher-forced
    through the latter's greedy tokens (engine/cache_replay.py): what the cache's rounding alone
    moves, with the weights as they are."""
    full, rounded = [], []
    for prompt in prompts:
        tokens, logits = decode_through_cache(model, prompt, new_tokens, "auto")
        full.append(logits.float())
        rounded.append(decode_through_cache(model, prompt, new_tokens, "fp8", forced=tokens)[1].float())
    return logit_error(torch.cat(rounded), torch.cat(full))


def demo_accuracy(device: torch.device, dtype: torch.dtype) -> dict[str, object]:
    """The logit comparison on a trained checkpoint: the demo model, built here in seconds."""
    from services.inference.demo import CORPUS, write_demo
    from services.inference.model.checkpoint import load_model
    from services.inference.model.parallel import ParallelContext
    from services.inference.model.tokenizer import Tokenizer

    paths = write_demo(Path(tempfile.mkdtemp(prefix="fp8-demo-")))
    tokenizer = Tokenizer(paths.tokenizer)
    lines = [line.strip() for line in CORPUS.read_text(encoding="utf-8").splitlines() if line.strip()]
    prompts = [
        tokenizer.encode(f"{a} {b}", bos=True, eos=False)[:64]
        for a, b in zip(lines[:32:2], lines[1:32:2], strict=True)
    ]
    ctx = ParallelContext(0, 1, 0, device, "nccl" if device.type == "cuda" else "gloo")
    plain = load_model(paths.ckpt_dir, ctx=ctx, dtype=dtype, max_seq_len=256)
    fp8 = load_model(paths.ckpt_dir, ctx=ctx, dtype=dtype, max_seq_len=256, fp8_weights=True)
    expected = [eager_logits(plain, [p])[0] for p in prompts]
    out: dict[str, object] = {"prompts": len(prompts), "tokens": sum(map(len, prompts))}
    for path, options in (("dequantized", {"on": False}), ("fp8_activations", {"scaled_mm": "always"})):
        fp8_linear.use_fp8_kernels(fp8, **options)
        got = [eager_logits(fp8, [p])[0] for p in prompts]
        out[path] = logit_error(torch.cat(got), torch.cat(expected))
    out["fp8_kv_cache"] = kv_cache_error(plain, prompts, 16)
    return out


# -- engines -------------------------------------------------------------------------------------


def engine_config(
    args: argparse.Namespace,
    device: torch.device,
    batch: int,
    num_blocks: int,
    fused_block: bool = True,
    kv_cache_dtype: str = "auto",
) -> EngineConfig:
    cuda = device.type == "cuda"
    return EngineConfig(
        decode_attention=args.decode_attention,
        fused_decode_block=fused_block,
        kv_cache_dtype=kv_cache_dtype,
        max_seq_len=args.max_seq_len,
        max_batch_size=batch,
        device=device.type,
        dtype=args.dtype,
        num_kv_blocks=num_blocks,
        prefill_chunk=512,
        compile=cuda and not args.no_compile,
        cuda_graphs=cuda,
        graph_sizes=tuple(sorted({1, batch})),
    )


def measure_model(
    args: argparse.Namespace,
    model: Transformer,
    device: torch.device,
    label: str,
    greedy_prompts: list[list[int]],
    fp8_options: dict[str, Any] | None = None,
    fused_block: bool = True,
    kv_cache_dtype: str = "auto",
) -> tuple[dict[str, object], list[list[int]]]:
    """One runner over `model` (fused, kernels chosen, graphs captured): its greedy tokens for the
    accuracy prompts, then batch 1, the stream count and TTFT (inference_bench.measure_engine).
    fp8_options: use_fp8_kernels' knobs for this runner, instead of the service's defaults;
    fused_block: the engine's fused decode block (kernels/decode_block.py) on or off;
    kv_cache_dtype: the engine's KV cache ("auto": the model's dtype, or "fp8")."""
    vocab = model.args.vocab_size
    per_stream = blocks_for(max(args.prompt_len + args.new_tokens, args.ttft_len) + 64, 16)
    blocks = max(512, 2 * per_stream * args.streams)
    config = engine_config(args, device, args.streams, blocks, fused_block, kv_cache_dtype)
    t0 = time.perf_counter()
    compile_error = None

    def build(config: EngineConfig) -> tuple[ModelRunner, BlockAllocator]:
        runner, allocator = build_runner(model, config)
        if fp8_options:
            fp8_linear.use_fp8_kernels(model, **fp8_options)
        runner.capture()
        return runner, allocator

    try:
        runner, allocator = build(config)
    except Exception as error:  # measured without torch.compile rather than not at all
        compile_error = f"{type(error).__name__}: {error}"[:800]
        print(f"{label}: capture failed, again without torch.compile: {compile_error}", flush=True)
    if compile_error is not None:
        config = replace(config, compile=False)
        free_runner()
        runner, allocator = build(config)
    out: dict[str, object] = {
        "compiled": config.compile,
        "compile_error": compile_error,
        "capture_s": time.perf_counter() - t0,
        "prefill_compile_s": runner.prefill_compile_s,
        "prefill_graphs": runner.prefill_graphs,
        "decode_weight_gib": decode_bytes(model) / 2**30,
        "fp8_options": fp8_options,
        "kv_cache_dtype": kv_cache_dtype,
    }
    engine = Engine(config, runner, IdTokenizer(vocab), allocator)  # type: ignore[arg-type]
    engine.start()
    try:
        greedy = [r.tokens for r in run_requests(engine, greedy_prompts, args.check_tokens)]
        out |= measure_engine(
            engine,
            vocab,
            args,
            [args.streams],
            runner=runner,
            label=label,
            ttft_lens=(args.ttft_len,),
            profile_kernels=device.type == "cuda",
        )
    finally:
        engine.stop(drain=False, timeout_s=60)
    del runner, allocator, engine
    free_runner()
    print(json.dumps({label: out}), flush=True)
    return out, greedy


def bench_7b(
    args: argparse.Namespace, device: torch.device, dtype: torch.dtype, bandwidth: float
) -> dict[str, object]:
    model_args = replace(SHAPES["tiny"] if args.tiny else CONFIGS["7B"], max_seq_len=args.max_seq_len)
    if args.layers_7b:
        model_args = replace(model_args, n_layers=args.layers_7b)
    vocab = model_args.vocab_size
    model = build_model(model_args, device, dtype, seed=0)
    fp8: Transformer = quantize_projections(copy.deepcopy(model))
    prompts = random_prompts(args.accuracy_prompts, args.accuracy_len, vocab, seed=123)
    result: dict[str, object] = {"shape": "tiny" if args.tiny else "7B", "layers": model_args.n_layers}
    expected = eager_logits(model, prompts)
    accuracy: dict[str, object] = {"prompts": len(prompts), "prompt_len": args.accuracy_len}
    # Dequantized weights and bf16 activations (the default prefill path, the decode kernel's
    # numerics), and per-token FP8 activations on FP8 tensor cores (where supported).
    for path, options in (("dequantized", {"on": False}), ("fp8_activations", {"scaled_mm": "always"})):
        fp8_linear.use_fp8_kernels(fp8, **options)
        accuracy[path] = guarded(compare_logits, fp8, prompts, expected)
    fp8_linear.use_fp8_kernels(fp8)
    del expected
    accuracy["fp8_kv_cache"] = guarded(
        kv_cache_error, model, prompts[: args.greedy_prompts], args.check_tokens
    )
    result["accuracy"] = accuracy
    print(json.dumps(accuracy), flush=True)
    greedy_prompts = prompts[: args.greedy_prompts]
    shape = result["shape"]
    engines: dict[str, dict[str, object]] = {}
    bf16_tokens: list[list[int]] = []
    if "bf16" in args.engines:
        engines["bf16"], bf16_tokens = measure_model(args, model, device, f"{shape}_bf16", greedy_prompts)
    if "bf16" in args.engines and args.unfused_block:
        engines["bf16 unfused block"], unfused_tokens = measure_model(
            args, model, device, f"{shape}_bf16_unfused_block", greedy_prompts, fused_block=False
        )
        accuracy["greedy_bf16_fused_vs_unfused_block"] = greedy_agreement(bf16_tokens, unfused_tokens)
    del model
    free_runner()
    # The service's defaults, then variants of where the Triton kernel stops and what prefill runs on.
    variants: dict[str, dict[str, Any] | None] = {"fp8": None} if "fp8" in args.engines else {}
    for text in args.fp8_variants:
        rows, scaled_mm, tensor_cores = [*text.split("-"), "", ""][:3]
        scaled_mm, tensor_cores = scaled_mm or "decode", tensor_cores or fp8_linear.TENSOR_CORES[0]
        variants[f"fp8 kernel<={rows} scaled_mm:{scaled_mm} ({tensor_cores})"] = {
            "max_rows": int(rows),
            "scaled_mm": scaled_mm,
            "tensor_cores": tensor_cores,
        }
    if args.unfused_block and "fp8" in args.engines:
        variants["fp8 unfused block"] = None
    fp8_tokens: list[list[int]] = []
    for name, knobs in variants.items():
        out, tokens = measure_model(
            args,
            fp8,
            device,
            f"{shape}_{name.replace(' ', '_')}",
            greedy_prompts,
            knobs,
            fused_block="unfused block" not in name,
        )
        engines[name] = out
        fp8_tokens = fp8_tokens or tokens
        if name == "fp8 unfused block":
            accuracy["greedy_fp8_fused_vs_unfused_block"] = greedy_agreement(fp8_tokens, tokens)
        free_runner()
    if "fp8-kv8" in args.engines:
        engines["fp8-kv8"], kv8_tokens = measure_model(
            args, fp8, device, f"{shape}_fp8_kv8", greedy_prompts, kv_cache_dtype="fp8"
        )
        if bf16_tokens:
            accuracy["greedy_fp8_kv8"] = greedy_agreement(bf16_tokens, kv8_tokens)
        free_runner()
    del fp8
    free_runner()
    if bf16_tokens and fp8_tokens:
        accuracy["greedy"] = greedy_agreement(bf16_tokens, fp8_tokens)
    for out in engines.values():
        out["roofline_tok_s"] = bandwidth / (float(out["decode_weight_gib"]) * 2**30)  # type: ignore[arg-type]
    result["engines"] = engines
    return result


# -- kernels -------------------------------------------------------------------------------------


def layer_shapes(a: ModelArgs) -> dict[str, tuple[int, int]]:
    """(out, in) of the fused projections of one layer."""
    q, kv = a.n_heads * a.head_dim, a.kv_heads * a.head_dim
    return {
        "wqkv": (q + 2 * kv, a.dim),
        "wo": (a.dim, q),
        "w13": (2 * a.hidden_dim, a.dim),
        "w2": (a.dim, a.hidden_dim),
    }


def time_us(calls: list[Callable[[], object]], device: torch.device) -> float:
    """Time of one call. On CUDA the calls (one per weight copy, together several times the L2, so
    weights stream from memory as in a decode step) are captured in one CUDA graph, so the host's
    launch cost, hidden in the engine's graphs, is not counted; on CPU the wall clock of the first."""
    if device.type != "cuda":
        calls[0]()
        times = []
        for _ in range(5):
            start = time.perf_counter()
            calls[0]()
            times.append(time.perf_counter() - start)
        return 1e6 * statistics.median(times)
    for call in calls:  # autotune and warm up outside the capture
        call()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for call in calls:
            call()
    graph.replay()
    times = []
    for _ in range(10):
        began, ended = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        began.record()
        graph.replay()
        ended.record()
        ended.synchronize()
        times.append(began.elapsed_time(ended))
    del graph
    return 1000 * statistics.median(times) / len(calls)


def kernel_timings(device: torch.device, name: str, weights: list[Tensor], rows: int) -> list[dict[str, Any]]:
    """Each implementation's time for one of `weights` ([n, k] copies) at `rows` rows of x."""
    cuda = device.type == "cuda"
    hopper = cuda and torch.cuda.get_device_capability(device) >= (9, 0)
    (n, k), dtype = weights[0].shape, weights[0].dtype
    fp8 = [quantize(w) for w in weights]
    x = torch.randn(rows, k, device=device, dtype=dtype)
    out = torch.empty(rows, n, device=device, dtype=dtype)
    # name -> (one call per weight copy, bytes per weight element)
    impls: dict[str, tuple[list[Callable[[], object]], int]] = {
        "bf16 cuBLAS": ([partial(torch.mm, x, w.t(), out=out) for w in weights], 2),
    }
    if cuda and rows <= decode_gemm.MAX_ROWS:
        impls["bf16 Triton"] = ([partial(decode_gemm.launch, x, w, out) for w in weights], 2)
    if cuda and rows <= 64:
        impls["fp8 Triton"] = ([partial(fp8_linear.launch, x, w, s, out) for w, s in fp8], 1)
    if cuda and rows == 1:
        # Both one-row kernels (the one above is whichever was timed faster for this shape).
        for label, dot in (("GEMV", False), ("tensor cores", True)):
            impls[f"bf16 Triton {label}"] = (
                [partial(decode_gemm.launch, x, w, out, one_row_dot=dot) for w in weights],
                2,
            )
            impls[f"fp8 Triton {label}"] = (
                [partial(fp8_linear.launch, x, w, s, out, one_row_dot=dot) for w, s in fp8],
                1,
            )
    if hopper and dtype == torch.bfloat16:
        impls["fp8 scaled_mm"] = ([partial(fp8_linear.scaled_matmul, x, w, s) for w, s in fp8], 1)
        if fp8_linear.MAX_ROWS < rows <= w8a8_gemm.MAX_ROWS:
            impls["fp8 W8A8 Triton"] = (
                [partial(fp8_linear.scaled_matmul, x, w, s, "triton") for w, s in fp8],
                1,
            )
    if rows > 16 or not cuda:
        dequantizing = [fp8_linear.FP8KernelLinear(w, s) for w, s in fp8]
        for module in dequantizing:
            fp8_linear.use_fp8_kernels(module, max_rows=0, scaled_mm="never")
        impls["fp8 dequantized + mm"] = ([partial(m, x) for m in dequantizing], 1)
    results = []
    for impl, (calls, bytes_per_weight) in impls.items():
        try:
            us = time_us(calls, device)
        except Exception as error:  # one kernel that does not build must not cost the others
            print(f"{name} x{rows} {impl} failed: {type(error).__name__}: {error}"[:600], flush=True)
            continue
        row = {"weight": name, "n": n, "k": k, "rows": rows, "impl": impl, "us": us}
        row["weight_gb_s"] = n * k * bytes_per_weight / us / 1e3
        results.append(row)
        print(json.dumps(row), flush=True)
    return results


def bench_kernels(
    device: torch.device, dtype: torch.dtype, shapes: dict[str, tuple[int, int]], rows: list[int]
) -> list[dict[str, Any]]:
    results = []
    for name, (n, k) in shapes.items():
        # Copies enough that their FP8 bytes are 4x the H200's 60 MB L2 (one on CPU).
        copies = max(2, -(-240_000_000 // (n * k))) if device.type == "cuda" else 1
        weights = [torch.randn(n, k, device=device, dtype=dtype) / k**0.5 for _ in range(copies)]
        for m in rows:
            results += kernel_timings(device, name, weights, m)
        del weights
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return results


# -- 70B layers ----------------------------------------------------------------------------------


def bench_70b_layers(
    args: argparse.Namespace, device: torch.device, dtype: torch.dtype, bandwidth: float
) -> dict[str, object]:
    """Batch-1 FP8 decode of the 70B shape with `args.layers_70b` layer counts; per layer time from the
    difference, and the 80-layer projection."""
    counts = sorted(args.layers_70b, reverse=True)
    base = TINY_70B if args.tiny else CONFIGS["70B"]
    model_args = replace(base, n_layers=counts[0], max_seq_len=args.max_seq_len)
    model = build_model(model_args, device, dtype, seed=1)
    quantize_projections(model)
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    steps: dict[int, dict[str, float]] = {}
    for layers in counts:
        model.layers = model.layers[:layers]
        model.args = replace(model.args, n_layers=layers)
        config = engine_config(args, device, 1, blocks_for(args.prompt_len + args.new_tokens + 64, 16) + 8)
        runner, allocator = build_runner(model, config)
        runner.capture()
        engine = Engine(config, runner, IdTokenizer(model.args.vocab_size), allocator)  # type: ignore[arg-type]
        engine.start()
        try:
            run_requests(engine, random_prompts(1, args.prompt_len, model.args.vocab_size, 5), 8)
            (one,) = run_requests(
                engine, random_prompts(1, args.prompt_len, model.args.vocab_size, 6), args.new_tokens
            )
        finally:
            engine.stop(drain=False, timeout_s=60)
        assert one.first is not None and one.last is not None
        step = {"engine_step_ms": 1000 * (one.last - one.first) / (len(one.tokens) - 1)}
        gpu = replay_ms(runner, 1, greedy=True) if device.type == "cuda" else None
        if gpu is not None:
            step["gpu_step_ms"] = gpu
        step["decode_weight_gib"] = decode_bytes(model) / 2**30
        steps[layers] = step
        print(json.dumps({"70B_layers": layers, **step}), flush=True)
        del runner, allocator, engine
        free_runner()
    del model
    free_runner()
    key = "gpu_step_ms" if "gpu_step_ms" in steps[counts[0]] else "engine_step_ms"
    hi, lo = counts[0], counts[-1]
    per_layer = (steps[hi][key] - steps[lo][key]) / (hi - lo)
    fixed = steps[hi][key] - hi * per_layer
    full_layers = CONFIGS["70B"].n_layers
    projected = fixed + full_layers * per_layer
    full_bytes = full_70b_fp8_bytes()
    return {
        "shape": f"{'tiny-GQA' if args.tiny else '70B'} x {counts} layers",
        "steps": steps,
        "timed_by": key,
        "per_layer_ms": per_layer,
        "fixed_ms": fixed,
        "projected_80_layer_step_ms": projected,
        "projected_80_layer_tok_s": 1000 / projected if projected > 0 else float("nan"),
        "full_70b_fp8_decode_gib": full_bytes / 2**30,
        "full_70b_fp8_roofline_tok_s": bandwidth / full_bytes,
    }


# -- report --------------------------------------------------------------------------------------


def fmt(value: object, digits: int = 1) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def dig(values: dict[str, Any], key: str) -> object:
    """values["a"]["b"] for key "a.b"; None where any part is missing."""
    head, _, rest = key.partition(".")
    value = values.get(head)
    return dig(value, rest) if rest and isinstance(value, dict) else (None if rest else value)


def report(result: dict[str, object], streams: int, ttft_len: int) -> str:
    lines = []
    seven: dict[str, Any] = result["7b"]  # type: ignore[assignment]
    engines: dict[str, dict[str, Any]] = seven["engines"]
    names = list(engines)
    base = names[0]
    lines.append(
        f"copy bandwidth {fmt(result['copy_bandwidth_gb_s'])} GB/s; {seven['shape']} random weights, "
        f"{seven.get('layers')} layers; decode attention on {result.get('decode_attention')}"
    )
    lines.append(
        "| metric | " + " | ".join(names) + " | " + " | ".join(f"{n} / {base}" for n in names[1:]) + " |"
    )
    lines.append("| --- |" + " --- |" * (2 * len(names) - 1))
    rows = [
        ("decode weight GiB", "decode_weight_gib", 2),
        ("roofline tok/s", "roofline_tok_s", 1),
        ("batch-1 decode tok/s", "batch1_decode_tok_s", 1),
        ("batch-1 GPU step ms", "batch1_gpu_step_ms", 3),
        (f"{streams} streams tok/s", f"streams{streams}_total_tok_s", 1),
        (f"{streams} streams GPU step ms", f"streams{streams}_gpu_step_ms", 3),
        (f"{streams} streams p50 TTFT ms", f"streams{streams}_p50_ttft_ms", 1),
        (f"TTFT {ttft_len}-token prompt ms", f"ttft_{ttft_len}_ms", 1),
        ("capture s", "capture_s", 1),
        ("of which compiling the prefill s", "prefill_compile_s", 1),
        ("prefill graphs compiled", "prefill_graphs", 0),
    ]
    for kind in ("kernels_total", "matmul", "fp8_dequantize", "fp8_quantize", "prefill_attention"):
        label = f"TTFT {ttft_len}: {kind.replace('_', ' ')} µs (GPU)"
        rows.append((label, f"ttft_{ttft_len}_kernels_us.{kind}", 0))
    # Decode steps by kind of kernel: where an FP8 engine's time goes against bf16's.
    for prefix, steps in (("batch1", "batch-1 step"), (f"streams{streams}", f"{streams}-stream step")):
        for kind in ("kernels_total", "matmul", "paged_attention"):
            rows.append((f"{steps}: {kind.replace('_', ' ')} µs (GPU)", f"{prefix}_kernels_us.{kind}", 0))
    for label, key, digits in rows:
        values = [dig(engines[n], key) for n in names]
        cells = [fmt(v, digits) for v in values]
        for value in values[1:]:
            ok = isinstance(value, float) and isinstance(values[0], float) and values[0]
            cells.append(fmt(value / values[0], 2) if ok else "")  # type: ignore[operator]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    accuracy: dict[str, Any] = seven["accuracy"]
    lines.append(f"\nFP8 vs {base} logits (teacher-forced prompt set):")
    lines.append("| model | path | max abs diff | mean abs diff | mean diff / logit std | top-1 agreement |")
    lines.append("| --- | --- | --- | --- | --- | --- |")
    demo: dict[str, Any] = result.get("demo_accuracy") or {}  # type: ignore[assignment]
    for model, table in ((str(seven["shape"]) + " random", accuracy), ("demo (trained)", demo)):
        for path in ("dequantized", "fp8_activations", "fp8_kv_cache"):
            e = table.get(path)
            if e:
                lines.append(
                    f"| {model} | {path} | {e['max_abs_diff']:.3f} | {e['mean_abs_diff']:.4f} | "
                    f"{e['mean_abs_diff_over_logit_std']:.4f} | {e['top1_agreement']:.4f} |"
                )
    lines.append(f"greedy tokens, {base} engine vs FP8 engine: {json.dumps(accuracy.get('greedy'))}")
    if "greedy_fp8_kv8" in accuracy:
        kv8 = json.dumps(accuracy["greedy_fp8_kv8"])
        lines.append(f"greedy tokens, {base} engine vs FP8 engine with an FP8 KV cache: {kv8}")
    kernels: list[dict[str, Any]] = result.get("kernels") or []  # type: ignore[assignment]
    if kernels:
        lines.append("\nkernels (µs, weight GB/s):")
        impls = sorted({str(r["impl"]) for r in kernels})
        lines.append("| weight | rows | " + " | ".join(impls) + " |")
        lines.append("| --- | --- |" + " --- |" * len(impls))
        keys = sorted(
            {(str(r["weight"]), int(r["rows"]), int(r["n"])) for r in kernels}, key=lambda t: (t[1], t[0])
        )
        for weight, m, n in keys:
            cells = []
            for impl in impls:
                hit = [
                    r
                    for r in kernels
                    if r["weight"] == weight and r["rows"] == m and r["n"] == n and r["impl"] == impl
                ]
                cells.append(f"{hit[0]['us']:.1f} ({hit[0]['weight_gb_s']:.0f})" if hit else "")
            lines.append(f"| {weight} {n} | {m} | " + " | ".join(cells) + " |")
    big = result.get("70b_layers")
    if isinstance(big, dict):
        lines.append(
            f"\n{big['shape']} FP8, batch 1: {json.dumps(big['steps'])}\n"
            f"per layer {fmt(big['per_layer_ms'], 3)} ms ({big['timed_by']}), fixed {fmt(big['fixed_ms'], 3)} ms; "
            f"projected 80 layers: {fmt(big['projected_80_layer_step_ms'], 2)} ms/token = "
            f"{fmt(big['projected_80_layer_tok_s'])} tok/s (roofline {fmt(big['full_70b_fp8_roofline_tok_s'])}, "
            f"{fmt(big['full_70b_fp8_decode_gib'], 1)} GiB of FP8 decode weights)"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tiny", action="store_true", help="CPU dry run: tiny shapes, no compile or graphs")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    parser.add_argument("--prompt-len", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--streams", type=int, default=64)
    parser.add_argument("--ttft-len", type=int, default=512)
    parser.add_argument("--max-seq-len", type=int, default=4096)
    parser.add_argument("--accuracy-prompts", type=int, default=8)
    parser.add_argument("--accuracy-len", type=int, default=128)
    parser.add_argument("--greedy-prompts", type=int, default=4)
    parser.add_argument("--check-tokens", type=int, default=32)
    parser.add_argument("--layers-70b", type=lambda t: [int(x) for x in t.split(",")], default=[8, 4])
    parser.add_argument(
        "--layers-7b", type=int, help="the 7B shape with fewer layers (per-layer costs in a short run)"
    )
    parser.add_argument("--skip", type=lambda t: t.split(","), default=[], help="any of 7b,demo,kernels,70b")
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument(
        "--fp8-variants",
        type=lambda t: [v for v in t.split(",") if v],
        default=["64"],
        help="FP8 engines besides the defaults: ROWS[-SCALED_MM[-TENSOR_CORES]] (the Triton kernel up to "
        "ROWS rows; FP8 tensor cores beyond it for decode, always or never; through the Triton W8A8 "
        "kernel or cuBLAS), e.g. 64,16-always,16-decode-cublas",
    )
    parser.add_argument(
        "--engines",
        type=lambda t: t.split(","),
        default=["bf16", "fp8", "fp8-kv8"],
        help="7B engines: any of bf16,fp8,fp8-kv8 (FP8 weights and KV cache)",
    )
    parser.add_argument(
        "--unfused-block",
        action="store_true",
        help="also measure each model with the fused decode block off (--no-fused-decode-block)",
    )
    parser.add_argument(
        "--decode-attention",
        default=EngineConfig.decode_attention,
        choices=DECODE_ATTENTIONS,
        help="every engine's decode attention (the service's --decode-attention)",
    )
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ".")) / "fp8_bench.json")
    args = parser.parse_args()
    if args.tiny:
        args.device, args.dtype = "cpu", "float32"
        args.prompt_len, args.new_tokens, args.streams, args.ttft_len = 16, 8, 4, 32
        args.max_seq_len, args.accuracy_prompts, args.accuracy_len, args.check_tokens = 128, 3, 24, 8
        args.greedy_prompts = 2
        args.layers_70b = [4, 2]
        torch.set_num_threads(2)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    check_fp8_device(device)
    t0 = time.perf_counter()
    result: dict[str, object] = {
        "torch": torch.__version__,
        "device": str(device),
        "dtype": args.dtype,
        "fp8_dtype": str(FP8_DTYPE),
        "decode_attention": args.decode_attention,
    }
    if device.type == "cuda":
        result["gpu"] = torch.cuda.get_device_name(device)
        result["capability"] = ".".join(map(str, torch.cuda.get_device_capability(device)))
        result["triton"] = __import__("triton").__version__
    bandwidth = copy_bandwidth(device)
    result["copy_bandwidth_gb_s"] = bandwidth / 1e9
    print(json.dumps(result), flush=True)

    def save() -> None:
        result["wall_s"] = time.perf_counter() - t0
        args.out.write_text(json.dumps(result, indent=2, default=str))

    def kernels() -> list[dict[str, Any]]:
        seven = SHAPES["tiny"] if args.tiny else CONFIGS["7B"]
        rows = [1, 16] if args.tiny else [1, 16, 32, 64, 512]
        out = bench_kernels(device, dtype, layer_shapes(seven), rows)
        big = layer_shapes(TINY_70B if args.tiny else CONFIGS["70B"])
        return out + bench_kernels(device, dtype, {f"70B {k}": v for k, v in big.items()}, [1])

    sections: dict[str, Callable[[], object]] = {
        "7b": lambda: bench_7b(args, device, dtype, bandwidth),
        "demo_accuracy": lambda: demo_accuracy(device, dtype),
        "kernels": kernels,
        "70b_layers": lambda: bench_70b_layers(args, device, dtype, bandwidth),
    }
    for name, run in sections.items():
        if name.split("_")[0] in args.skip:
            continue
        # One section's failure (a kernel that does not build, memory) must not cost the others.
        value = guarded(run)
        if value is not None:
            result[name] = value
        print(json.dumps({name: value}, default=str)[:3000], flush=True)
        free_runner()
        save()
    if "7b" in result:
        print(report(result, args.streams, args.ttft_len))
    print(f"wall {result['wall_s']:.0f} s")


if __name__ == "__main__":
    main()
