"""Runs one `StepPlan` through the model on this rank: the same call on every rank.

Prefill steps run the model's forward (flash attention for fresh prompts, the paged prefill kernel
for chunks that continue a cached prefix), compiled on CUDA unless `compile` is off: eager, a 7B
layer launches ~45 kernels and Python's time to launch them exceeds the GPU's time to run them
for a few hundred tokens, so a short prompt's prefill waits on the host. Decode steps on CUDA replay a CUDA graph
captured for the smallest padded batch size that fits, optionally of a torch.compile'd step; the
whole step (token lookup + forward + sampling) is one replay fed by two host-to-device copies.
A second graph per size serves all-greedy batches: argmax instead of the top-p sampler, which
costs about 0.2 ms a step (sort + hashing over the vocabulary) and picks the same token there.
One-row prefill steps of a few dozen tokens (a chat's new message over its cached history) are
host-bound the same way, compiled or not, so they replay graphs captured for a few padded lengths.

`launch` only queues work on the device and returns a `PendingStep`; the sampled tokens come back
through one asynchronous copy into pinned memory, and `PendingStep.result` is the step's only host
sync. Every step also leaves each row's sampled token on the device (in the row's batch slot of
`slot_tokens`), so the engine can launch step N+1 before reading step N's tokens: a decode input of
-1 means "the token in my batch slot".

On CUDA, decode steps rotate q/k and write the KV cache in one Triton kernel per layer (kv_write.py,
unless `fused_kv_write` is off), `decode_gemm` picks how their projections run (decode_gemm.py), and
batch-1 steps run each block as four projection kernels with the norms, SwiGLU and residual adds
folded in (decode_block.py, unless `fused_decode_block` is off).
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from services.inference.engine.blocks import PAD_SLOT, BlockAllocator, blocks_for
from services.inference.engine.config import EngineConfig
from services.inference.engine.kv_cache import (
    KVStorage,
    StepCache,
    bytes_per_block,
    cache_dtype,
    plan_num_blocks,
)
from services.inference.engine.ranks import min_over_ranks
from services.inference.engine.step_inputs import Layout, pack
from services.inference.engine.step_plan import StepPlan, StepRow
from services.inference.kernels import kv_write, paged_attention, paged_prefill
from services.inference.kernels.decode_block import use_fused_decode_block
from services.inference.kernels.decode_gemm import use_decode_gemm
from services.inference.model.fp8 import check_fp8_device
from services.inference.model.fusion import fuse_projections
from services.inference.model.sampling import greedy_sample, sample
from services.inference.model.transformer import Transformer, TransformerBlock

if TYPE_CHECKING:
    from torch.cuda import _POOL_HANDLE

log = logging.getLogger(__name__)

# Columns of the packed integer input of a captured decode step (one token per row).
_DECODE = Layout(t=1)

# Graphs the compiled prefill forward may hold. Each kind of step is a graph of its own: one row or
# several (dynamo specialises a dimension of 1) x a fresh prompt or a continued one, 4 in all (FP8
# projections choose their kernel by row count inside one op, so they add none). Past dynamo's
# default limit of 8 a frame silently runs eagerly: the margin keeps a new guard from doing that.
PREFILL_RECOMPILE_LIMIT = 32


@dataclass(frozen=True)
class StepResult:
    tokens: list[int]
    logprobs: list[float]
    echo_logprobs: dict[int, list[float]]


class PendingStep:
    """A launched step whose sampled tokens may still be on their way to the host."""

    def __init__(self, out: Tensor, echo: dict[int, list[float]]) -> None:
        # out: [2, rows] float64 (tokens, logprobs) on the device.
        self._event: torch.cuda.Event | None = None
        if out.is_cuda:
            self._host = torch.empty(out.shape, dtype=out.dtype, pin_memory=True)
            self._host.copy_(out, non_blocking=True)
            self._event = torch.cuda.Event()
            self._event.record()
        else:
            self._host = out
        self._echo = echo

    def result(self) -> StepResult:
        if self._event is not None:
            self._event.synchronize()
        return StepResult(self._host[0].long().tolist(), self._host[1].tolist(), self._echo)


def _dense(x: Tensor) -> Tensor:
    return x.clone(memory_format=torch.contiguous_format)


def _same(x: Tensor) -> Tensor:
    return x


def chunk_graph_length(plan: StepPlan, lengths: Iterable[int]) -> int | None:
    """The captured chunk length a prefill step replays as (the shortest that fits), or None for
    steps that run eagerly: decode steps, several rows, longer chunks, echoed prompt logprobs."""
    if plan.decode or len(plan.rows) != 1 or plan.rows[0].echo_targets is not None:
        return None
    return min((n for n in lengths if n >= len(plan.rows[0].tokens)), default=None)


def graph_batch_sizes(max_batch_size: int, wanted: tuple[int, ...] = ()) -> list[int]:
    sizes = wanted or (1, 2, 4, 8, *range(16, max_batch_size + 1, 8))
    return sorted({s for s in sizes if s <= max_batch_size} | {max_batch_size})


class ModelRunner:
    def __init__(
        self, model: Transformer, storage: KVStorage, config: EngineConfig, max_blocks_per_seq: int
    ) -> None:
        self.model = model
        self.storage = storage
        self.config = config
        self.device = storage.k.device
        self.max_blocks = max_blocks_per_seq
        # Each admitted sequence's latest sampled token, by batch slot; the extra last slot takes
        # the padded rows of a captured step.
        self.slot_tokens = torch.zeros(config.max_batch_size + 1, dtype=torch.long, device=self.device)
        self._pad_batch_slot = config.max_batch_size
        self._graphs: dict[int, tuple[torch.cuda.CUDAGraph, Tensor]] = {}
        self._greedy_graphs: dict[int, tuple[torch.cuda.CUDAGraph, Tensor]] = {}
        # One-row prefill chunks: graphs by (padded length, fresh, greedy) over static inputs by length.
        self._chunk_graphs: dict[tuple[int, bool, bool], tuple[torch.cuda.CUDAGraph, Tensor]] = {}
        self._chunk_inputs: dict[int, tuple[Tensor, Tensor]] = {}
        self._ints: Tensor | None = None
        self._floats: Tensor | None = None
        self._forward: Callable[[Tensor, Tensor], Tensor] = self._decode_logits
        self._prefill: Callable[[Tensor, Tensor, StepCache], Tensor] = model
        # What compile_prefill built, for start-up logs and benchmarks: its graphs and seconds.
        self.prefill_graphs = 0
        self.prefill_compile_s = 0.0
        self._fused_rotary = config.fused_kv_write and kv_write.fused_available(
            self.device, model.args.head_dim
        )
        # Asked for, and suited to the model's grouping of query heads (70B's groups of 8 are not).
        self.cuda_core_attention = (
            config.decode_attention == "cuda-cores"
            and paged_attention.cuda_cores_suit(model.args.n_heads, model.args.kv_heads)
        )
        if config.decode_attention == "cuda-cores" and not self.cuda_core_attention:
            log.info(
                "decode attention stays on tensor cores: %d query heads per kv head fill a dot's rows",
                model.args.n_heads // model.args.kv_heads,
            )

    @property
    def prefill_compiled(self) -> bool:
        """Whether prefill steps of several tokens a row run the compiled forward (compile_prefill
        succeeded) rather than the eager model."""
        return self._prefill is not self.model

    @property
    def asynchronous(self) -> bool:
        """Whether `launch` returns before the step has run (CUDA). On the CPU it computes the step,
        so there is nothing to overlap with the host's work."""
        return self.device.type == "cuda"

    @torch.inference_mode()
    def run(self, plan: StepPlan) -> StepResult:
        """Launch and wait: for callers that do not overlap steps."""
        return self.launch(plan).result()

    @torch.inference_mode()
    def launch(self, plan: StepPlan) -> PendingStep:
        """Queue `plan` on the device; steps run in launch order on one stream."""
        if plan.decode and self._graphs:
            return self._launch_graph(plan)
        if self._chunk_graphs and (length := chunk_graph_length(plan, self._chunk_inputs)) is not None:
            return self._launch_chunk_graph(plan, length)
        return self._launch_eager(plan)

    def _tokens_in(self, tokens: Tensor, batch_slots: Tensor) -> Tensor:
        """[b, t] input tokens with each -1 (a token still in flight) read from the row's batch slot."""
        return torch.where(tokens >= 0, tokens, self.slot_tokens[batch_slots][:, None])

    def _launch_eager(self, plan: StepPlan) -> PendingStep:
        layout, ints_host, floats_host = pack(plan, pin=self.device.type == "cuda")
        ints = ints_host.to(self.device, non_blocking=True)
        floats = floats_host.to(self.device, non_blocking=True)
        logits, out = self._step(
            layout, ints, floats, decode=plan.decode, fresh=plan.fresh, greedy=plan.greedy
        )
        echo: dict[int, list[float]] = {}
        for i, row in enumerate(plan.rows):
            if row.echo_targets is not None:
                targets = torch.tensor(row.echo_targets, dtype=torch.long).to(self.device, non_blocking=True)
                scores = F.log_softmax(logits[i, : len(row.echo_targets)], dim=-1)
                echo[i] = scores.gather(-1, targets[:, None]).squeeze(-1).tolist()
        return PendingStep(out, echo)

    def _step(
        self, layout: Layout, ints: Tensor, floats: Tensor, *, decode: bool, fresh: bool, greedy: bool
    ) -> tuple[Tensor, Tensor]:
        """One step on packed inputs already on the device -> (logits [b, t, V], [2, b] (tokens,
        logprobs) as float64). Eager steps and captured prefill chunks run this."""
        batch_slots = ints[:, layout.batch_slot]
        tokens = ints[:, layout.tokens]
        if decode:
            tokens = self._tokens_in(tokens, batch_slots)
        positions = ints[:, layout.positions]
        compiled = not decode and tokens.shape[1] > 1 and self.prefill_compiled
        # The compiled prefill takes dense inputs: the strides of slices of the packed tensor vary
        # with the step's layout and would each be a new guard, so a new compilation.
        dense = _dense if compiled else _same
        tokens, positions = dense(tokens), dense(positions)
        cache = StepCache(
            self.storage,
            slots=dense(ints[:, layout.slots].flatten()),
            block_tables=dense(ints[:, layout.table :].to(torch.int32)),
            context_lens=dense(ints[:, layout.context_len].to(torch.int32)),
            positions=positions,
            fresh=fresh,
            fused_rotary=self._fused_rotary,
            cuda_core_attention=self.cuda_core_attention,
        )
        forward = self._prefill if compiled else self.model
        logits = forward(tokens, positions, cache)
        rows = torch.arange(ints.shape[0], device=self.device)
        last = logits[rows, ints[:, layout.sample_index]]
        if greedy:  # the argmax the sampler would take, without its sort over the vocabulary
            sampled, logprobs = greedy_sample(last)
        else:
            sampled, logprobs = sample(
                last, floats[:, 0], floats[:, 1], ints[:, layout.seed], ints[:, layout.step]
            )
        # Mid-prefill rows store a meaningless token too; their slot is read only once a real one is there.
        self.slot_tokens.index_copy_(0, batch_slots, sampled)
        return logits, torch.stack((sampled.double(), logprobs.double()))

    # -- CUDA graphs -----------------------------------------------------------------------

    def _decode_logits(self, tokens: Tensor, ints: Tensor) -> Tensor:
        """The decode forward on packed inputs -> last-token logits [b, V] (the part we compile)."""
        positions = ints[:, _DECODE.positions]
        cache = StepCache(
            self.storage,
            slots=ints[:, _DECODE.slots.start],
            block_tables=ints[:, _DECODE.table :],
            context_lens=ints[:, _DECODE.context_len],
            positions=positions,
            fresh=False,
            fused_rotary=self._fused_rotary,
            cuda_core_attention=self.cuda_core_attention,
        )
        return self.model(tokens, positions, cache)[:, -1]

    def _decode_step(self, ints: Tensor, floats: Tensor, greedy: bool = False) -> Tensor:
        """The captured decode step: packed inputs -> [2, b] (tokens, logprobs) as float64."""
        batch_slots = ints[:, _DECODE.batch_slot]
        tokens = self._tokens_in(ints[:, _DECODE.tokens], batch_slots)
        logits = self._forward(tokens, ints)
        if greedy:
            sampled, logprobs = greedy_sample(logits)
        else:
            sampled, logprobs = sample(
                logits, floats[:, 0], floats[:, 1], ints[:, _DECODE.seed], ints[:, _DECODE.step]
            )
        self.slot_tokens.index_copy_(0, batch_slots, sampled)
        return torch.stack((sampled.double(), logprobs.double()))

    @torch.inference_mode()
    def capture(self) -> None:
        """Compile the paged prefill kernel's variants (so no request waits for Triton's compiler),
        then capture decode graphs for padded batch sizes (largest first) and one-row prefill chunk
        graphs for padded lengths, all sharing one memory pool (steps run one after another)."""
        if self.device.type != "cuda":
            return
        args, kv_heads = self.model.args, self.storage.k.shape[3]  # kv heads held by this rank
        queries = self.model.tok_embeddings.weight.dtype  # the cache's too, unless it is fp8
        paged_prefill.warm_up(kv_heads * (args.n_heads // args.kv_heads), queries, self.storage.k[0])
        if self.config.compile_prefill:
            try:
                self.compile_prefill()
            except Exception:  # a model the compiler cannot take still serves, eagerly
                log.exception("compiling the prefill forward failed: prefill runs eagerly")
                self._prefill = self.model
        if not self.config.cuda_graphs:
            return
        pool = torch.cuda.graph_pool_handle()
        self._capture_decode(pool)
        try:
            self._capture_chunks(pool)
        except Exception:  # a model or GPU the capture fails on still serves, prefill launched eagerly
            log.exception("capturing the prefill chunk graphs failed: prefill steps run eagerly")
            self._chunk_graphs.clear()
            self._chunk_inputs.clear()
        self.slot_tokens.zero_()
        torch.cuda.synchronize()

    def _capture_decode(self, pool: _POOL_HANDLE) -> None:
        sizes = graph_batch_sizes(self.config.max_batch_size, self.config.graph_sizes)
        biggest = sizes[-1]
        self._ints = torch.zeros(
            biggest, _DECODE.table + self.max_blocks, dtype=torch.long, device=self.device
        )
        self._ints[:, _DECODE.slots] = PAD_SLOT
        self._ints[:, _DECODE.context_len] = 1
        self._ints[:, _DECODE.batch_slot] = self._pad_batch_slot
        self._floats = torch.zeros(biggest, 2, dtype=torch.float32, device=self.device)
        self._floats[:, 1] = 1.0
        # Only the forward is compiled: it is where fusion pays (norms, rotary, SwiGLU), and
        # inductor has failed on the sampler's sort/gather/argmax reduction (torch 2.11).
        if self.config.compile:
            self._forward = torch.compile(self._decode_logits, fullgraph=True)
        step = self._decode_step
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for size in sorted(sizes, reverse=True):
                for _ in range(2):  # warm up: compile, autotune, cuBLAS workspaces
                    step(self._ints[:size], self._floats[:size])
                step(self._ints[:size], self._floats[:size], greedy=True)
        torch.cuda.current_stream().wait_stream(stream)
        for size in sorted(sizes, reverse=True):
            for greedy, graphs in ((False, self._graphs), (True, self._greedy_graphs)):
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, pool=pool):
                    out = step(self._ints[:size], self._floats[:size], greedy=greedy)
                graphs[size] = (graph, out)
        log.info(
            "captured decode CUDA graphs for batch sizes %s (compiled: %s, fused KV write: %s, decode GEMM: %s, "
            "decode attention: %s)",
            sizes,
            self.config.compile,
            self._fused_rotary,
            self.config.decode_gemm,
            "CUDA cores" if self.cuda_core_attention else "tensor cores",
        )

    def _capture_chunks(self, pool: _POOL_HANDLE) -> None:
        """Graphs of one-row prefill chunks padded to each of `chunk_graph_tokens`: fresh prompts and
        chunks continuing a cached prefix, sampled and greedy. Their inputs carry the block table at
        full width, and nothing in the step reads a length on the host, so one graph serves every
        prefix length."""
        self.prepare_chunk_inputs()
        lengths = self.chunk_lengths
        if not lengths:
            return
        kinds = list(itertools.product(reversed(lengths), (False, True), (False, True)))  # largest first
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):  # warm up: compile (a new block table width), autotune, workspaces
                for length, fresh, greedy in kinds:
                    self.chunk_step(length, fresh, greedy)
        torch.cuda.current_stream().wait_stream(stream)
        for length, fresh, greedy in kinds:
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool):
                out = self.chunk_step(length, fresh, greedy)
            self._chunk_graphs[(length, fresh, greedy)] = (graph, out)
        log.info("captured prefill chunk CUDA graphs for one row padded to %s tokens", lengths)

    def prepare_chunk_inputs(self) -> None:
        """The static inputs of the chunk graphs, one per captured length, holding a harmless step
        (the reserved block only) until a real one is staged."""
        # A chunk is never longer than the model's context: no graph for lengths past it.
        for length in (n for n in self.config.chunk_graph_tokens if n <= self.config.max_seq_len):
            _, ints, floats = pack(
                StepPlan(decode=False, fresh=False, rows=[self._idle_row(0, length)]),
                pin=False,
                table_width=self.max_blocks,
            )
            self._chunk_inputs[length] = (ints.to(self.device), floats.to(self.device))

    @property
    def chunk_lengths(self) -> list[int]:
        """The padded lengths of one-row prefill chunks with static inputs (and, on CUDA, graphs)."""
        return sorted(self._chunk_inputs)

    def stage_chunk(self, plan: StepPlan, length: int) -> None:
        """Copy a one-row prefill step, padded to `length` tokens, into that length's static inputs."""
        _, ints_host, floats_host = pack(
            plan, pin=self.device.type == "cuda", pad_tokens_to=length, table_width=self.max_blocks
        )
        ints, floats = self._chunk_inputs[length]
        ints.copy_(ints_host, non_blocking=True)
        floats.copy_(floats_host, non_blocking=True)

    def chunk_step(self, length: int, fresh: bool, greedy: bool) -> Tensor:
        """The step a chunk graph captures, on the static inputs of `length` -> [2, 1] (token, logprob).
        Called directly it runs eagerly (how the CPU tests check the padded step)."""
        ints, floats = self._chunk_inputs[length]
        return self._step(Layout(length), ints, floats, decode=False, fresh=fresh, greedy=greedy)[1]

    def _launch_chunk_graph(self, plan: StepPlan, length: int) -> PendingStep:
        self.stage_chunk(plan, length)
        graph, out = self._chunk_graphs[(length, plan.fresh, plan.greedy)]
        graph.replay()
        return PendingStep(out, {})

    @torch.inference_mode()
    def compile_prefill(self) -> None:
        """torch.compile the prefill forward with dynamic shapes and compile it now, through the
        real step path, for each kind of prefill step (one row or several; a fresh prompt or a
        chunk continuing a cached prefix), so no request waits for the compiler. Steps of one
        token per row stay eager."""
        # The cache's shape never changes: static, so no step's sizes are unified with its own.
        torch._dynamo.mark_static(self.storage.k)
        torch._dynamo.mark_static(self.storage.v)
        # A process-wide setting (dynamo has no per-function limit); raised, never lowered.
        limit = max(torch._dynamo.config.recompile_limit, PREFILL_RECOMPILE_LIMIT)
        torch._dynamo.config.recompile_limit = limit
        self._prefill = torch.compile(self.model, dynamic=True)
        # Dynamo's own count of the graphs it compiled (process-wide, so a difference).
        graphs_before = torch._dynamo.utils.counters["stats"]["unique_graphs"]
        started = time.perf_counter()
        block = self.storage.block_size
        # Lengths no guard can pin (not multiples of the block, not 0 or 1), on both sides of the
        # row counts where an FP8 projection changes kernels (16 and 64 rows), so each kernel is
        # tuned here rather than in a request's first step.
        for t, fresh in itertools.product((3, 2 * block + 3, 8 * block + 3), (True, False)):
            start = 0 if fresh else block
            if start + t > self.max_blocks * block:
                continue
            row = self._idle_row(start, t)
            for rows in (1, 2):
                self._launch_eager(StepPlan(decode=False, fresh=fresh, rows=[row] * rows)).result()
        self.slot_tokens.zero_()
        self.prefill_compile_s = time.perf_counter() - started
        self.prefill_graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"] - graphs_before
        log.info(
            "compiled the prefill forward: %d graphs in %.1f s", self.prefill_graphs, self.prefill_compile_s
        )

    def _idle_row(self, start: int, t: int) -> StepRow:
        """A prefill row of t tokens from position `start` that reads and writes only the reserved
        block: for warm-ups, and for static inputs before a real step is staged."""
        return StepRow(
            tokens=[0] * t,
            positions=list(range(start, start + t)),
            slots=[PAD_SLOT] * t,
            block_table=[0] * blocks_for(start + t, self.storage.block_size),
            context_len=start + t,
            sample_index=t - 1,
            temperature=0.0,
            top_p=1.0,
            seed=0,
            step=0,
            batch_slot=self._pad_batch_slot,
            samples=False,
        )

    def _launch_graph(self, plan: StepPlan) -> PendingStep:
        assert self._ints is not None and self._floats is not None
        b = len(plan.rows)
        size = next(s for s in sorted(self._graphs) if s >= b)
        _, ints_host, floats_host = pack(
            plan, pin=True, pad_rows_to=size, pad_batch_slot=self._pad_batch_slot
        )
        self._ints[:size, : ints_host.shape[1]].copy_(ints_host, non_blocking=True)
        self._floats[:size].copy_(floats_host, non_blocking=True)
        graph, out = (self._greedy_graphs if plan.greedy else self._graphs)[size]
        graph.replay()
        return PendingStep(out[:, :b], {})


def build_runner(model: Transformer, config: EngineConfig) -> tuple[ModelRunner, BlockAllocator]:
    """Fuse the model's projections (once), then KV storage sized for this rank's heads (after
    sharding) and a runner over it. The storage is in the model's dtype, or in e4m3 for
    `kv_cache_dtype` "fp8": a bf16 cache's memory then holds twice the blocks."""
    args = model.args
    fuse_projections(model)
    use_decode_gemm(model, config.decode_gemm)
    weight: Tensor = model.output.weight
    dtype, device = weight.dtype, weight.device
    # Its projections are Triton kernels: `--decode-gemm cublas` asks for none.
    fused_block = config.fused_decode_block and config.decode_gemm != "cublas"
    use_fused_decode_block(model, on=fused_block and device.type == "cuda")
    if device.type == "cuda":
        # The separate weights are free now but still cached by the allocator, and the KV cache
        # is sized from the memory the driver reports free.
        torch.cuda.empty_cache()
    first_layer = model.layers[0]
    assert isinstance(first_layer, TransformerBlock)
    kv_heads = first_layer.attention.kv_heads
    kv_dtype = cache_dtype(config.kv_cache_dtype, dtype)
    if config.kv_cache_dtype == "fp8":
        check_fp8_device(device, "--kv-cache-dtype")
    block_bytes = bytes_per_block(args.n_layers, kv_heads, args.head_dim, config.kv_block_size, kv_dtype)
    # Activations of the largest prefill chunk (fp32 logits dominate) plus graph pools.
    reserve = 4 * config.prefill_chunk * (args.vocab_size * 4 + args.hidden_dim * 8) + 2**30
    planned = plan_num_blocks(
        explicit=config.num_kv_blocks,
        block_bytes=block_bytes,
        device=device,
        gpu_memory_utilization=config.gpu_memory_utilization,
        cpu_budget_bytes=config.kv_cache_bytes,
        reserve_bytes=reserve,
    )
    # Every rank sizes from its own free memory, but they all write the same block ids (rank 0
    # plans for everyone), so the cache may only be as large as the smallest rank's.
    num_blocks = min_over_ranks(planned)
    if num_blocks < planned:
        log.info("KV cache: %d blocks fit here, another rank fits only %d", planned, num_blocks)
    storage = KVStorage(
        n_layers=args.n_layers,
        num_blocks=num_blocks,
        block_size=config.kv_block_size,
        kv_heads=kv_heads,
        head_dim=args.head_dim,
        dtype=kv_dtype,
        device=device,
    )
    log.info(
        "KV cache: %d blocks of %d tokens in %s (%.2f GiB, %d tokens)",
        num_blocks,
        config.kv_block_size,
        kv_dtype,
        num_blocks * block_bytes / 2**30,
        (num_blocks - 1) * config.kv_block_size,
    )
    runner = ModelRunner(model, storage, config, blocks_for(config.max_seq_len, config.kv_block_size))
    return runner, BlockAllocator(num_blocks)
