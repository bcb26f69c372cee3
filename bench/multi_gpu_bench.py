"""Tensor-parallel Llama 2 13B / 70B over NCCL, checked against MP=1 and timed.

Run under torchrun, one process per GPU. Each run loads (building it first if missing) a random
seeded Meta checkpoint, then on every rank:
  1. load time (progress bar on rank 0) and this rank's weight bytes;
  2. per-GPU copy bandwidth -> the bandwidth roofline: batch-1 tok/s <= bandwidth / bytes per rank;
  3. collective cost of one decode step: 2 all-reduces of [b, 1, dim] per layer (+ the embedding
     and logits all-gathers), timed eagerly and replayed from a CUDA graph as the engine runs them;
  4. greedy tokens of the plain eager model (no cache) and of the engine, for fixed prompts;
  5. the engine (services/inference/engine/engine.py, rank 0 schedules and broadcasts each step):
     batch-1 decode tok/s, 32/64-stream throughput, TTFT for 512- and 2048-token prompts.
A run with --write-reference stores its greedy tokens; a run with --reference compares with them.

    # 13B, 2 shards. MP=1 on one GPU writes the reference, MP=2 checks and compares.
    python -m bench.make_checkpoint --shape 13B --shards 2 --device cuda --out /data/13b
    torchrun --nproc_per_node 1 -m bench.multi_gpu_bench --ckpt-dir /data/13b --write-reference $OUT/ref13.json
    torchrun --nproc_per_node 2 -m bench.multi_gpu_bench --ckpt-dir /data/13b --reference $OUT/ref13.json
    # 70B: the 70B shape with 4 layers (fits one GPU) for correctness, then the full 70B on 8.
    torchrun --nproc_per_node 1 -m bench.multi_gpu_bench --ckpt-dir /data/70b-4L --shape 70B --layers 4 \
        --shards 8 --write-reference $OUT/ref70.json --streams 32 --ttft 512
    torchrun --nproc_per_node 8 -m bench.multi_gpu_bench --ckpt-dir /data/70b-4L --reference $OUT/ref70.json
    torchrun --nproc_per_node 8 -m bench.multi_gpu_bench --ckpt-dir /data/70b --shape 70B --shards 8
    # CPU dry run (gloo, tiny shape): the whole script in ~1 minute
    torchrun --nproc_per_node 2 -m bench.multi_gpu_bench --dry-run
    # combine result files into one markdown table
    python -m bench.multi_gpu_bench --table $OUT/multi_gpu_*.json

See docs/multi_gpu.md. Reuses bench/inference_bench.py's request driver and bandwidth probe.
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

import torch
import torch.distributed as dist

from bench import inference_bench, make_checkpoint
from services.inference.config import EngineConfig
from services.inference.engine.blocks import BlockAllocator, blocks_for
from services.inference.engine.engine import Engine, run_follower
from services.inference.engine.ranks import StepBroadcaster
from services.inference.engine.runner import ModelRunner, build_runner
from services.inference.model.checkpoint import load_model, read_model_args
from services.inference.model.parallel import ParallelContext, init_parallel, local_kv_heads, split_dim
from services.inference.model.transformer import ModelArgs, Transformer

ROOT = Path(__file__).resolve().parents[1]

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


@dataclass(frozen=True)
class BenchOptions:
    ckpt_dir: Path
    shape: str
    layers: int | None
    shards: int
    vocab: str
    seed: int
    gen_device: str | None
    device: str
    dtype: str
    max_seq_len: int
    max_batch_size: int
    prefill_chunk: int
    gpu_memory_utilization: float
    num_kv_blocks: int | None
    compile: bool
    prompt_len: int
    new_tokens: int
    check_tokens: int
    streams: tuple[int, ...]
    ttft_lengths: tuple[int, ...]
    collective_reps: int
    graph_collectives: bool
    reference: Path | None
    write_reference: Path | None
    out: Path


# -- checkpoint and bandwidth ----------------------------------------------------------------------


def ensure_checkpoint(opts: BenchOptions, ctx: ParallelContext) -> dict[str, object]:
    """Build the checkpoint if params.json is missing: rank r writes shards r, r+N, ... in parallel."""
    if (opts.ckpt_dir / "params.json").is_file():
        return {"checkpoint_built_s": None}
    start = time.perf_counter()
    args = make_checkpoint.model_args(opts.shape, opts.layers, opts.vocab)
    spec = make_checkpoint.CheckpointSpec(
        args, opts.shards, make_checkpoint.DTYPES["bf16"], opts.seed, opts.gen_device or str(ctx.device)
    )
    for shard in range(ctx.rank, opts.shards, ctx.world_size):
        make_checkpoint.write_shard(spec, shard, opts.ckpt_dir, progress=ctx.is_main)
    _barrier(ctx)
    if ctx.is_main:
        make_checkpoint.write_params(spec, opts.ckpt_dir)
    _barrier(ctx)
    return {"checkpoint_built_s": time.perf_counter() - start}


def copy_bandwidth(device: torch.device) -> float:
    """Bytes/s of a device copy (read + write): inference_bench's probe on CUDA, a host-memory copy on CPU."""
    if device.type == "cuda":
        return inference_bench.copy_bandwidth(device)
    src = torch.ones(2**26, dtype=torch.uint8)
    dst = torch.empty_like(src)
    times = []
    for _ in range(5):
        start = time.perf_counter()
        dst.copy_(src)
        times.append(time.perf_counter() - start)
    return 2 * src.numel() / statistics.median(times)


def _barrier(ctx: ParallelContext) -> None:
    if ctx.world_size > 1:
        dist.barrier()


def _reduce(ctx: ParallelContext, value: float, op: dist.ReduceOp.RedOpType) -> float:
    if ctx.world_size == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=ctx.device)
    dist.all_reduce(t, op=op)
    return float(t.item())


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# -- collectives -----------------------------------------------------------------------------------


def time_collectives(
    ctx: ParallelContext,
    args: ModelArgs,
    dtype: torch.dtype,
    batch: int,
    reps: int,
    graph_collectives: bool = True,
) -> dict[str, float]:
    """Milliseconds of one decode step's collectives at `batch` rows, as the sharded model issues
    them: 2 all-reduces of [b, 1, dim] per layer, one all-gather of [b, dim/N] (embedding) and one
    of [b, V/N] (logits). Eager (with launch overhead) and, on CUDA, replayed from a CUDA graph."""
    if ctx.world_size == 1:
        return {}
    n = ctx.world_size
    activation = torch.ones(batch, 1, args.dim, dtype=dtype, device=ctx.device)
    embed_in = torch.ones(batch, args.dim // n, dtype=dtype, device=ctx.device)
    embed_out = torch.empty(batch * n, args.dim // n, dtype=dtype, device=ctx.device)
    logits_in = torch.ones(batch, args.vocab_size // n, dtype=dtype, device=ctx.device)
    logits_out = torch.empty(batch * n, args.vocab_size // n, dtype=dtype, device=ctx.device)

    def step() -> None:
        dist.all_gather_single(embed_out, embed_in)
        for _ in range(2 * args.n_layers):
            dist.all_reduce(activation)
        dist.all_gather_single(logits_out, logits_in)

    def timed(run: Callable[[], object]) -> float:
        run()  # warm-up
        _barrier(ctx)
        _sync(ctx.device)
        start = time.perf_counter()
        for _ in range(reps):
            run()
        _sync(ctx.device)
        return 1000 * (time.perf_counter() - start) / reps

    def one() -> None:
        dist.all_reduce(activation)

    out = {f"collectives_b{batch}_eager_ms": timed(step)}
    # One all-reduce alone: the latency floor of each of the 2 * n_layers per step.
    out[f"allreduce_b{batch}_single_us"] = 1000 * timed(one)
    if ctx.device.type == "cuda" and graph_collectives:
        try:
            graph = torch.cuda.CUDAGraph()
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                step()
            torch.cuda.current_stream().wait_stream(stream)
            with torch.cuda.graph(graph):
                step()
            out[f"collectives_b{batch}_graph_ms"] = timed(graph.replay)
        except RuntimeError as error:  # NCCL builds without graph support: keep the eager number
            out[f"collectives_b{batch}_graph_error"] = float("nan")
            print(f"rank {ctx.rank}: CUDA graph of collectives failed: {error}", flush=True)
    return {k: _reduce(ctx, v, dist.ReduceOp.MAX) for k, v in out.items()}


# -- engine ----------------------------------------------------------------------------------------


def bench_kv_blocks(opts: BenchOptions, block_size: int) -> int:
    """Enough KV blocks for the largest stream count at full length plus one longest TTFT prompt,
    not "all free memory": a cache that fills the GPU leaves torch.compile no room (it OOMed on
    the 7B single-GPU run), and the benchmark never needs more."""
    per_stream = blocks_for(opts.prompt_len + opts.new_tokens, block_size)
    # 512: inference_bench.measure_engine always times a 512-token prompt.
    longest = blocks_for(max((*opts.ttft_lengths, 512, 130 + opts.check_tokens)) + 1, block_size)
    return opts.max_batch_size * per_stream + longest + 8


def engine_config(opts: BenchOptions, ctx: ParallelContext, num_kv_blocks: int | None) -> EngineConfig:
    cuda = ctx.device.type == "cuda"
    return EngineConfig(
        max_seq_len=opts.max_seq_len,
        max_batch_size=opts.max_batch_size,
        num_kv_blocks=num_kv_blocks,
        gpu_memory_utilization=opts.gpu_memory_utilization,
        prefill_chunk=opts.prefill_chunk,
        device=ctx.device.type,
        dtype=opts.dtype,
        cuda_graphs=cuda,
        compile=opts.compile and cuda,
    )


def build_engine_runner(
    model: Transformer, opts: BenchOptions, ctx: ParallelContext
) -> tuple[ModelRunner, BlockAllocator, EngineConfig, dict[str, object]]:
    """A runner with the same KV block count on every rank (rank 0's allocator hands out block ids
    that every rank's storage must hold), captured; compile falls back to eager graphs everywhere
    if it fails anywhere."""
    info: dict[str, object] = {}
    explicit = opts.num_kv_blocks or bench_kv_blocks(opts, EngineConfig().kv_block_size)
    config = engine_config(opts, ctx, explicit if opts.num_kv_blocks != 0 else None)
    runner, allocator = build_runner(model, config)
    agreed = int(_reduce(ctx, allocator.num_blocks, dist.ReduceOp.MIN))
    if agreed != allocator.num_blocks:
        del runner, allocator
        config = engine_config(opts, ctx, agreed)
        runner, allocator = build_runner(model, config)
    config = replace(config, num_kv_blocks=agreed)
    info["kv_blocks"] = agreed
    start = time.perf_counter()
    failed = 0.0
    try:
        runner.capture()
    except Exception as error:
        info["compile_error"] = f"{type(error).__name__}: {error}"[:800]
        failed = 1.0
    if _reduce(ctx, failed, dist.ReduceOp.MAX):
        del runner, allocator
        if ctx.device.type == "cuda":
            torch.cuda.empty_cache()
        config = replace(config, compile=False)
        runner, allocator = build_runner(model, config)
        runner.capture()
    info["compiled"] = config.compile
    info["capture_s"] = time.perf_counter() - start
    return runner, allocator, config, info


def check_prompts(vocab: int) -> list[list[int]]:
    return [
        inference_bench.random_prompts(1, length, vocab, seed)[0] for seed, length in enumerate([7, 33, 130])
    ]


def drive_engine(
    engine: Engine, opts: BenchOptions, vocab: int, prompts: list[list[int]]
) -> dict[str, object]:
    """Rank 0: greedy tokens for the check prompts, then the speed measurements."""
    out: dict[str, object] = {}
    records = inference_bench.run_requests(engine, prompts, opts.check_tokens, temperature=0.0)
    out["engine_tokens"] = [r.tokens for r in records]
    measure = argparse.Namespace(new_tokens=opts.new_tokens, prompt_len=opts.prompt_len)
    streams = [s for s in opts.streams if s <= opts.max_batch_size]
    # batch-1 decode, each stream count (total tok/s, p50 TTFT under load), TTFT of 512 tokens.
    out |= inference_bench.measure_engine(engine, vocab, measure, streams)
    for length in opts.ttft_lengths:
        if length >= opts.max_seq_len:
            continue
        ttfts = []
        for seed in range(5):
            (record,) = inference_bench.run_requests(
                engine, inference_bench.random_prompts(1, length, vocab, 2000 + seed), 1
            )
            ttfts.append((record.first or 0.0) - record.submitted)
        out[f"ttft_{length}_ms"] = 1000 * statistics.median(ttfts)
    stats = engine.stats()
    out["preemptions"] = stats.preemptions
    return out


# -- correctness -----------------------------------------------------------------------------------


def compare(
    tokens: list[list[int]], expected: list[list[int]], gaps: list[list[float]]
) -> list[dict[str, object]]:
    """Per prompt: first differing position and the reference's top-2 logit gap there.
    A difference at a near tie (gap below 5% of the first token's gap) is bf16 rounding, not a bug."""
    rows: list[dict[str, object]] = []
    for got, want, gap in zip(tokens, expected, gaps, strict=True):
        mismatch = next((i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b), None)
        if mismatch is None and len(got) != len(want):
            mismatch = min(len(got), len(want))
        at = None if mismatch is None or mismatch >= len(gap) else gap[mismatch]
        near_tie = at is not None and at < 0.05 * max(1.0, abs(gap[0]))
        rows.append(
            {
                "first_mismatch": mismatch,
                "gap_there": at,
                "exact": mismatch is None,
                "ok": mismatch is None or near_tie,
            }
        )
    return rows


def weight_fingerprint(model: Transformer, ctx: ParallelContext) -> list[float]:
    """[sum, sum of squares] of every weight of the whole model, in float64, whatever the MP
    (replicated norms counted once): two runs compare tokens only if they ran the same weights."""
    total = torch.zeros(2, dtype=torch.float64, device=ctx.device)
    for name, param in model.named_parameters():
        if split_dim(name) is None and not ctx.is_main:
            continue
        values = param.detach().double()
        total += torch.stack((values.sum(), values.square().sum()))
    if ctx.world_size > 1:
        dist.all_reduce(total)
    return [float(v) for v in total.tolist()]


def same_weights(a: list[float], b: list[float]) -> bool:
    return all(abs(x - y) <= 1e-9 * max(1.0, abs(x), abs(y)) for x, y in zip(a, b, strict=True))


def check_reference(opts: BenchOptions, fingerprint: list[float]) -> None:
    """Refuse (on every rank, before any timing) a reference made from other weights or dtype."""
    if opts.reference is None:
        return
    reference = json.loads(opts.reference.read_text())
    key = reference_key(opts.ckpt_dir, opts.dtype)
    if {k: reference.get(k) for k in key} != key:
        raise SystemExit(
            f"{opts.reference} was written for another checkpoint or dtype ({reference.get('params')}, "
            f"{reference.get('dtype')}): rerun the MP=1 run with --write-reference on {opts.ckpt_dir}"
        )
    if not same_weights(reference["weight_fingerprint"], fingerprint):
        raise SystemExit(
            f"{opts.reference} was written for different weights (fingerprint {reference['weight_fingerprint']} "
            f"vs {fingerprint}): the checkpoint was generated differently (another device kind?); rerun "
            "the MP=1 run with --write-reference on this checkpoint"
        )


def reference_key(ckpt_dir: Path, dtype: str) -> dict[str, object]:
    params = json.loads((ckpt_dir / "params.json").read_text())
    params.pop("generation_blocks", None)  # the block count never changes the weights' values
    return {"params": params, "dtype": dtype}


# -- the run ---------------------------------------------------------------------------------------


def run(opts: BenchOptions) -> dict[str, object] | None:
    ctx = init_parallel(opts.device)
    dtype = DTYPES[opts.dtype]
    result: dict[str, object] = {"world_size": ctx.world_size, "torch": torch.__version__}
    if ctx.device.type == "cuda":
        result["gpu"] = torch.cuda.get_device_name(ctx.device)
    result |= ensure_checkpoint(opts, ctx)
    args = read_model_args(opts.ckpt_dir)
    args = replace(args, max_seq_len=opts.max_seq_len)
    result["model"] = {**asdict(args), "hidden_dim": args.hidden_dim, "local_kv_heads": 0}
    _barrier(ctx)
    start = time.perf_counter()
    model = load_model(opts.ckpt_dir, ctx=ctx, dtype=dtype, max_seq_len=opts.max_seq_len)
    _sync(ctx.device)
    result["load_s"] = _reduce(ctx, time.perf_counter() - start, dist.ReduceOp.MAX)
    result["model"]["local_kv_heads"] = local_kv_heads(args, ctx.world_size)  # type: ignore[index]
    fingerprint = weight_fingerprint(model, ctx)
    result["weight_fingerprint"] = fingerprint
    check_reference(opts, fingerprint)
    local_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    result["weight_gib_total"] = _reduce(ctx, local_bytes, dist.ReduceOp.SUM) / 2**30
    result["weight_gib_per_rank"] = _reduce(ctx, local_bytes, dist.ReduceOp.MAX) / 2**30
    bandwidth = _reduce(ctx, copy_bandwidth(ctx.device), dist.ReduceOp.MIN)
    result["copy_bandwidth_gb_s_per_rank"] = bandwidth / 1e9
    result |= rooflines(args, opts, ctx, bandwidth, result["weight_gib_per_rank"] * 2**30, dtype)  # type: ignore[operator]
    for batch in (1, *[s for s in opts.streams if s <= opts.max_batch_size]):
        result |= time_collectives(ctx, args, dtype, batch, opts.collective_reps, opts.graph_collectives)
    if ctx.is_main:
        print(json.dumps(result), flush=True)

    prompts = check_prompts(args.vocab_size)
    eager = [inference_bench.eager_greedy(model, p, opts.check_tokens) for p in prompts]
    result["eager_tokens"] = [tokens for tokens, _ in eager]
    result["eager_gaps"] = [gaps for _, gaps in eager]

    runner, allocator, config, info = build_engine_runner(model, opts, ctx)
    result |= info
    broadcaster = StepBroadcaster(ctx.rank) if ctx.world_size > 1 else None
    if not ctx.is_main:
        assert broadcaster is not None
        run_follower(runner, broadcaster)
        _barrier(ctx)
        return None
    tokenizer = inference_bench.IdTokenizer(args.vocab_size)
    engine = Engine(config, runner, tokenizer, allocator, broadcaster)  # type: ignore[arg-type]
    engine.start()
    try:
        result |= drive_engine(engine, opts, args.vocab_size, prompts)
    finally:
        engine.stop(drain=False, timeout_s=120)  # also releases the followers
    if ctx.device.type == "cuda":
        result["peak_gpu_gib_rank0"] = torch.cuda.max_memory_allocated(ctx.device) / 2**30
    step_ms = 1000 / float(result["batch1_decode_tok_s"])  # type: ignore[arg-type]
    result["batch1_step_ms"] = step_ms
    collective = result.get("collectives_b1_graph_ms", result.get("collectives_b1_eager_ms"))
    if isinstance(collective, float):
        result["collectives_share_of_b1_step"] = collective / step_ms
    result["correctness"] = correctness(result, opts)
    _barrier(ctx)
    return result


def rooflines(
    args: ModelArgs,
    opts: BenchOptions,
    ctx: ParallelContext,
    bandwidth: float,
    bytes_per_rank: float,
    dtype: torch.dtype,
) -> dict[str, float]:
    """Upper bounds from memory bandwidth alone: each decode step reads every weight of the rank
    once plus the keys/values of every row (average context prompt_len + new_tokens / 2)."""
    element = torch.empty((), dtype=dtype).element_size()
    kv_heads = local_kv_heads(args, ctx.world_size)
    kv_per_token = 2 * args.n_layers * kv_heads * args.head_dim * element
    context = opts.prompt_len + opts.new_tokens / 2
    out = {"roofline_b1_tok_s": bandwidth / (bytes_per_rank + kv_per_token * context)}
    for streams in opts.streams:
        kv = streams * context * kv_per_token
        out[f"roofline_streams{streams}_tok_s"] = streams * bandwidth / (bytes_per_rank + kv)
    return out


def correctness(result: dict[str, object], opts: BenchOptions) -> dict[str, object]:
    engine_tokens = result["engine_tokens"]
    eager_tokens = result["eager_tokens"]
    gaps = result["eager_gaps"]
    assert isinstance(engine_tokens, list) and isinstance(eager_tokens, list) and isinstance(gaps, list)
    out: dict[str, object] = {"engine_vs_eager": compare(engine_tokens, eager_tokens, gaps)}
    key = reference_key(opts.ckpt_dir, opts.dtype)
    if opts.write_reference is not None:
        reference = {
            **key,
            "world_size": result["world_size"],
            "weight_fingerprint": result["weight_fingerprint"],
            "engine_tokens": engine_tokens,
            "eager_tokens": eager_tokens,
            "eager_gaps": gaps,
        }
        opts.write_reference.parent.mkdir(parents=True, exist_ok=True)
        opts.write_reference.write_text(json.dumps(reference))
        out["reference_written"] = str(opts.write_reference)
    if opts.reference is not None:
        reference = json.loads(opts.reference.read_text())
        out["reference_world_size"] = reference["world_size"]
        out["engine_vs_reference_engine"] = compare(
            engine_tokens, reference["engine_tokens"], reference["eager_gaps"]
        )
        out["eager_vs_reference_eager"] = compare(
            eager_tokens, reference["eager_tokens"], reference["eager_gaps"]
        )
    checks = [row for rows in out.values() if isinstance(rows, list) for row in rows]
    out["all_exact"] = all(row["exact"] for row in checks)
    out["all_ok"] = all(row["ok"] for row in checks)
    return out


# -- command line ----------------------------------------------------------------------------------


def parse_options(argv: list[str] | None = None) -> BenchOptions | list[Path]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--ckpt-dir", type=Path, help="Meta checkpoint (built here if params.json is missing)"
    )
    parser.add_argument(
        "--shape",
        default="13B",
        choices=sorted(make_checkpoint.SHAPES),
        help="shape of a checkpoint to build",
    )
    parser.add_argument("--layers", type=int, help="n_layers of a checkpoint to build")
    parser.add_argument("--shards", type=int, help="shard files of a checkpoint to build (default: ranks)")
    parser.add_argument("--vocab", default="32000", help="vocabulary of a checkpoint to build")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--gen-device",
        help="where a checkpoint to build draws its random numbers (default: each rank's device; "
        "cpu is slower but gives the same weights on any machine)",
    )
    parser.add_argument("--device", default="auto", help="auto, cuda or cpu")
    parser.add_argument("--dtype", default="bfloat16", choices=sorted(DTYPES))
    parser.add_argument("--max-seq-len", type=int, default=4096)
    parser.add_argument("--max-batch-size", type=int, default=64)
    parser.add_argument("--prefill-chunk", type=int, default=512)
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    parser.add_argument(
        "--num-kv-blocks",
        type=int,
        help="KV blocks per rank (default: what the runs need; 0: size from --gpu-memory-utilization)",
    )
    parser.add_argument("--no-compile", dest="compile", action="store_false")
    parser.add_argument("--prompt-len", type=int, default=128, help="prompt tokens of the decode runs")
    parser.add_argument("--new-tokens", type=int, default=256, help="tokens generated per decode run")
    parser.add_argument("--check-tokens", type=int, default=32, help="greedy tokens compared per prompt")
    parser.add_argument("--streams", default="32,64", help="concurrent stream counts to time")
    parser.add_argument(
        "--ttft", default="512,2048", help="prompt lengths whose time to first token is timed"
    )
    parser.add_argument("--collective-reps", type=int, default=50)
    parser.add_argument(
        "--no-graph-collectives",
        dest="graph_collectives",
        action="store_false",
        help="skip timing the collectives replayed from a CUDA graph (eager timing only)",
    )
    parser.add_argument("--reference", type=Path, help="greedy tokens of an MP=1 run to compare with")
    parser.add_argument("--write-reference", type=Path, help="store this run's greedy tokens here")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(os.environ.get("OUT", ".")),
        help="directory for multi_gpu_<shape>_mp<N>.json (default $OUT)",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="CPU + gloo, tiny 2-layer model, a few tokens: checks the script end to end",
    )
    parser.add_argument(
        "--table", type=Path, nargs="+", help="print a markdown table of result files; no run"
    )
    ns = parser.parse_args(argv)
    if ns.table:
        return list(ns.table)
    if ns.dry_run:
        ns.device, ns.dtype, ns.shape, ns.layers, ns.vocab = "cpu", "float32", "tiny", 2, "demo"
        ns.max_seq_len, ns.max_batch_size, ns.prefill_chunk = 640, 8, 64
        ns.prompt_len, ns.new_tokens, ns.check_tokens = 16, 8, 6
        ns.streams, ns.ttft, ns.collective_reps = "4,8", "64,128", 5
        ns.ckpt_dir = ns.ckpt_dir or ROOT / ".work" / "multi_gpu_dry_run" / "tiny-2L"
    if ns.ckpt_dir is None:
        parser.error("--ckpt-dir is required (a Meta checkpoint, or where to build one)")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return BenchOptions(
        ckpt_dir=ns.ckpt_dir,
        shape=ns.shape,
        layers=ns.layers,
        shards=ns.shards or world,
        vocab=ns.vocab,
        seed=ns.seed,
        gen_device=ns.gen_device,
        device=ns.device,
        dtype=ns.dtype,
        max_seq_len=ns.max_seq_len,
        max_batch_size=ns.max_batch_size,
        prefill_chunk=ns.prefill_chunk,
        gpu_memory_utilization=ns.gpu_memory_utilization,
        num_kv_blocks=ns.num_kv_blocks,
        compile=ns.compile,
        prompt_len=ns.prompt_len,
        new_tokens=ns.new_tokens,
        check_tokens=ns.check_tokens,
        streams=tuple(int(s) for s in ns.streams.split(",") if s),
        ttft_lengths=tuple(int(s) for s in ns.ttft.split(",") if s),
        collective_reps=ns.collective_reps,
        graph_collectives=ns.graph_collectives,
        reference=ns.reference,
        write_reference=ns.write_reference,
        out=ns.out,
    )


# Rows of the table, in order; a "*" stands for every stream count / prompt length / batch measured.
TABLE_KEYS = [
    "load_s",
    "weight_gib_per_rank",
    "copy_bandwidth_gb_s_per_rank",
    "roofline_b1_tok_s",
    "batch1_decode_tok_s",
    "batch1_step_ms",
    "collectives_b1_graph_ms",
    "collectives_b1_eager_ms",
    "allreduce_b1_single_us",
    "collectives_share_of_b1_step",
    "roofline_streams*_tok_s",
    "streams*_total_tok_s",
    "streams*_p50_ttft_ms",
    "collectives_b*_graph_ms",
    "collectives_b*_eager_ms",
    "ttft_*_ms",
    "kv_blocks",
    "compiled",
    "capture_s",
    "peak_gpu_gib_rank0",
    "checkpoint_built_s",
]


def _rows(results: list[dict[str, object]]) -> list[str]:
    keys: list[str] = []
    for pattern in TABLE_KEYS:
        prefix, star, suffix = pattern.partition("*")
        found = [k for r in results for k in r if k not in keys]
        if not star:
            keys += [pattern] if pattern in found else []
            continue
        middles = {
            k[len(prefix) : len(k) - len(suffix)]
            for k in found
            if k.startswith(prefix) and k.endswith(suffix)
        }
        keys += [f"{prefix}{m}{suffix}" for m in sorted(middles, key=lambda m: (len(m), m)) if m.isdigit()]
    return keys


def table(results: list[dict[str, object]]) -> str:
    def label(r: dict[str, object]) -> str:
        model = r["model"]
        assert isinstance(model, dict)
        return f"dim {model['dim']} x {model['n_layers']}L, MP={r['world_size']}"

    lines = [
        "| metric | " + " | ".join(label(r) for r in results) + " |",
        "| --- |" + " --- |" * len(results),
    ]
    for key in _rows(results):
        cells = [r.get(key) for r in results]
        if any(c is not None for c in cells):
            text = ["" if c is None else f"{c:.3g}" if isinstance(c, float) else str(c) for c in cells]
            lines.append(f"| {key} | " + " | ".join(text) + " |")
    for r in results:
        check = r.get("correctness")
        if isinstance(check, dict):
            lines.append(
                f"\n{label(r)}: greedy tokens all exact {check['all_exact']}, all ok {check['all_ok']}"
            )
    return "\n".join(lines)


def main() -> None:
    parsed = parse_options()
    if isinstance(parsed, list):
        print(table([json.loads(p.read_text()) for p in parsed]))
        return
    result = run(parsed)
    if result is not None:
        name = f"multi_gpu_{parsed.ckpt_dir.name}_mp{result['world_size']}.json"
        parsed.out.mkdir(parents=True, exist_ok=True)
        (parsed.out / name).write_text(json.dumps(result, indent=2))
        print(json.dumps(result), flush=True)
        print(table([result]), flush=True)
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
