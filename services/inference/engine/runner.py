"""Runs one `StepPlan` through the model on this rank: the same call on every rank.

Prefill steps run eagerly (SDPA/flash for fresh prompts). Decode steps on CUDA replay a CUDA graph
captured for the smallest padded batch size that fits, optionally of a torch.compile'd step; the
whole step (token lookup + forward + sampling) is one replay fed by two host-to-device copies.
A second graph per size serves all-greedy batches: argmax instead of the top-p sampler, which
costs about 0.2 ms a step (sort + hashing over the vocabulary) and picks the same token there.

`launch` only queues work on the device and returns a `PendingStep`; the sampled tokens come back
through one asynchronous copy into pinned memory, and `PendingStep.result` is the step's only host
sync. Every step also leaves each row's sampled token on the device (in the row's batch slot of
`slot_tokens`), so the engine can launch step N+1 before reading step N's tokens: a decode input of
-1 means "the token in my batch slot".

On CUDA, decode steps rotate q/k and write the KV cache in one Triton kernel per layer (kv_write.py,
unless `fused_kv_write` is off), and `decode_gemm` picks how their projections run (decode_gemm.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from services.inference.engine.config import EngineConfig
from services.inference.engine.kv_cache import (
    PAD_SLOT,
    BlockAllocator,
    KVStorage,
    StepCache,
    blocks_for,
    bytes_per_block,
    plan_num_blocks,
)
from services.inference.engine.ranks import min_over_ranks
from services.inference.engine.scheduler import StepPlan
from services.inference.kernels import kv_write
from services.inference.kernels.decode_gemm import use_decode_gemm
from services.inference.model.sampling import greedy_sample, sample
from services.inference.model.transformer import Transformer, TransformerBlock

log = logging.getLogger(__name__)

# Columns of the packed integer input of a captured decode step; block table columns follow.
_TOKEN, _POSITION, _SLOT, _LENGTH, _SEED, _STEP, _BATCH_SLOT, _TABLE = range(8)


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
        self._ints: Tensor | None = None
        self._floats: Tensor | None = None
        self._forward: Callable[[Tensor, Tensor], Tensor] = self._decode_logits
        self._fused_rotary = config.fused_kv_write and kv_write.fused_available(
            self.device, model.args.head_dim
        )

    @torch.inference_mode()
    def run(self, plan: StepPlan) -> StepResult:
        """Launch and wait: for callers that do not overlap steps."""
        return self.launch(plan).result()

    @torch.inference_mode()
    def launch(self, plan: StepPlan) -> PendingStep:
        """Queue `plan` on the device; steps run in launch order on one stream."""
        if plan.decode and self._graphs:
            return self._launch_graph(plan)
        return self._launch_eager(plan)

    def _tokens_in(self, tokens: Tensor, batch_slots: Tensor) -> Tensor:
        """[b, t] input tokens with each -1 (a token still in flight) read from the row's batch slot."""
        return torch.where(tokens >= 0, tokens, self.slot_tokens[batch_slots][:, None])

    def _launch_eager(self, plan: StepPlan) -> PendingStep:
        def tensor(values: object, dtype: torch.dtype) -> Tensor:
            return torch.tensor(values, dtype=dtype).to(self.device, non_blocking=True)

        batch_slots = tensor(plan.batch_slots, torch.long)
        tokens = tensor(plan.tokens, torch.long)
        if plan.decode:
            tokens = self._tokens_in(tokens, batch_slots)
        positions = tensor(plan.positions, torch.long)
        cache = StepCache(
            self.storage,
            slots=tensor(plan.slots, torch.long).flatten(),
            block_tables=tensor(plan.block_tables, torch.int32),
            context_lens=tensor(plan.context_lens, torch.int32),
            positions=positions,
            fresh=plan.fresh,
            fused_rotary=self._fused_rotary,
        )
        logits = self.model(tokens, positions, cache)
        rows = torch.arange(plan.rows, device=self.device)
        last = logits[rows, tensor(plan.sample_index, torch.long)]
        sampled, logprobs = sample(
            last,
            tensor(plan.temperature, torch.float32),
            tensor(plan.top_p, torch.float32),
            tensor(plan.seeds, torch.long),
            tensor(plan.steps, torch.long),
        )
        # Mid-prefill rows store a meaningless token too; their slot is read only once a real one is there.
        self.slot_tokens.index_copy_(0, batch_slots, sampled)
        echo: dict[int, list[float]] = {}
        for row, targets in zip(plan.echo_rows, plan.echo_targets, strict=True):
            scores = F.log_softmax(logits[row, : len(targets)], dim=-1)
            echo[row] = scores.gather(-1, tensor(targets, torch.long)[:, None]).squeeze(-1).tolist()
        return PendingStep(torch.stack((sampled.double(), logprobs.double())), echo)

    # -- CUDA graphs -----------------------------------------------------------------------

    def _decode_logits(self, tokens: Tensor, ints: Tensor) -> Tensor:
        """The decode forward on packed inputs -> last-token logits [b, V] (the part we compile)."""
        positions = ints[:, _POSITION : _POSITION + 1]
        cache = StepCache(
            self.storage,
            slots=ints[:, _SLOT],
            block_tables=ints[:, _TABLE:],
            context_lens=ints[:, _LENGTH],
            positions=positions,
            fresh=False,
            fused_rotary=self._fused_rotary,
        )
        return self.model(tokens, positions, cache)[:, -1]

    def _decode_step(self, ints: Tensor, floats: Tensor, greedy: bool = False) -> Tensor:
        """The captured decode step: packed inputs -> [2, b] (tokens, logprobs) as float64."""
        batch_slots = ints[:, _BATCH_SLOT]
        tokens = self._tokens_in(ints[:, _TOKEN : _TOKEN + 1], batch_slots)
        logits = self._forward(tokens, ints)
        if greedy:
            sampled, logprobs = greedy_sample(logits)
        else:
            sampled, logprobs = sample(logits, floats[:, 0], floats[:, 1], ints[:, _SEED], ints[:, _STEP])
        self.slot_tokens.index_copy_(0, batch_slots, sampled)
        return torch.stack((sampled.double(), logprobs.double()))

    @torch.inference_mode()
    def capture(self) -> None:
        """Capture decode graphs for padded batch sizes (largest first, sharing one memory pool)."""
        if self.device.type != "cuda" or not self.config.cuda_graphs:
            return
        sizes = graph_batch_sizes(self.config.max_batch_size, self.config.graph_sizes)
        biggest = sizes[-1]
        self._ints = torch.zeros(biggest, _TABLE + self.max_blocks, dtype=torch.long, device=self.device)
        self._ints[:, _SLOT] = PAD_SLOT
        self._ints[:, _LENGTH] = 1
        self._ints[:, _BATCH_SLOT] = self._pad_batch_slot
        self._floats = torch.zeros(biggest, 2, dtype=torch.float32, device=self.device)
        self._floats[:, 1] = 1.0
        # Only the forward is compiled: it is where fusion pays (norms, rotary, SwiGLU), and
        # inductor has failed on the sampler's sort/gather/argmax reduction (torch 2.11).
        if self.config.compile:
            self._forward = torch.compile(self._decode_logits, fullgraph=True)
        step = self._decode_step
        pool = torch.cuda.graph_pool_handle()
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
        self.slot_tokens.zero_()
        torch.cuda.synchronize()
        log.info(
            "captured decode CUDA graphs for batch sizes %s (compiled: %s, fused KV write: %s, decode GEMM: %s)",
            sizes,
            self.config.compile,
            self._fused_rotary,
            self.config.decode_gemm,
        )

    def _launch_graph(self, plan: StepPlan) -> PendingStep:
        assert self._ints is not None and self._floats is not None
        b = plan.rows
        size = next(s for s in sorted(self._graphs) if s >= b)
        width = len(plan.block_tables[0])
        # Only the table columns this step uses are sent: a row reads no block past its length.
        rows = [
            [t[0], p[0], s[0], n, seed, step, slot, *table]
            for t, p, s, n, seed, step, slot, table in zip(
                plan.tokens,
                plan.positions,
                plan.slots,
                plan.context_lens,
                plan.seeds,
                plan.steps,
                plan.batch_slots,
                plan.block_tables,
                strict=True,
            )
        ]
        pad_row = [0, 0, PAD_SLOT, 1, 0, 0, self._pad_batch_slot, *[0] * width]
        rows += [pad_row] * (size - b)
        floats = [[t, p] for t, p in zip(plan.temperature, plan.top_p, strict=True)]
        floats += [[0.0, 1.0]] * (size - b)
        # Pinned staging from PyTorch's host allocator: it is not reused before the copy has run.
        ints_host = torch.tensor(rows, dtype=torch.long).pin_memory()
        floats_host = torch.tensor(floats, dtype=torch.float32).pin_memory()
        self._ints[:size, : _TABLE + width].copy_(ints_host, non_blocking=True)
        self._floats[:size].copy_(floats_host, non_blocking=True)
        greedy = all(t == 0 for t in plan.temperature)
        graph, out = (self._greedy_graphs if greedy else self._graphs)[size]
        graph.replay()
        return PendingStep(out[:, :b], {})


def build_runner(model: Transformer, config: EngineConfig) -> tuple[ModelRunner, BlockAllocator]:
    """Fuse the model's projections (once), then KV storage sized for this rank's heads (after
    sharding) and a runner over it."""
    args = model.args
    model.fuse_projections()
    use_decode_gemm(model, config.decode_gemm)
    weight: Tensor = model.output.weight
    dtype, device = weight.dtype, weight.device
    if device.type == "cuda":
        # The separate weights are free now but still cached by the allocator, and the KV cache
        # is sized from the memory the driver reports free.
        torch.cuda.empty_cache()
    first_layer = model.layers[0]
    assert isinstance(first_layer, TransformerBlock)
    kv_heads = first_layer.attention.kv_heads
    block_bytes = bytes_per_block(args.n_layers, kv_heads, args.head_dim, config.kv_block_size, dtype)
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
        dtype=dtype,
        device=device,
    )
    log.info(
        "KV cache: %d blocks of %d tokens (%.2f GiB, %d tokens)",
        num_blocks,
        config.kv_block_size,
        num_blocks * block_bytes / 2**30,
        (num_blocks - 1) * config.kv_block_size,
    )
    runner = ModelRunner(model, storage, config, blocks_for(config.max_seq_len, config.kv_block_size))
    return runner, BlockAllocator(num_blocks)
