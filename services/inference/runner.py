"""Runs one `StepPlan` through the model on this rank: the same call on every rank.

Prefill steps run eagerly (SDPA/flash for fresh prompts). Decode steps on CUDA replay a CUDA graph
captured for the smallest padded batch size that fits, optionally of a torch.compile'd step; the
whole step (forward + sampling) is one replay fed by two host-to-device copies, and its only host
sync is reading the sampled tokens back, which streaming needs anyway.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from services.inference.config import EngineConfig
from services.inference.kv_cache import (
    PAD_SLOT,
    BlockAllocator,
    KVStorage,
    StepCache,
    blocks_for,
    bytes_per_block,
    plan_num_blocks,
)
from services.inference.model import Transformer
from services.inference.ranks import min_over_ranks
from services.inference.sampling import sample
from services.inference.scheduler import StepPlan

log = logging.getLogger(__name__)

# Columns of the packed integer input of a captured decode step; block table columns follow.
_TOKEN, _POSITION, _SLOT, _LENGTH, _SEED, _STEP, _TABLE = range(7)


@dataclass(frozen=True)
class StepResult:
    tokens: list[int]
    logprobs: list[float]
    echo_logprobs: dict[int, list[float]]


def graph_batch_sizes(max_batch_size: int) -> list[int]:
    sizes = [1, 2, 4, 8, *range(16, max_batch_size + 1, 8)]
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
        self._graphs: dict[int, tuple[torch.cuda.CUDAGraph, Tensor]] = {}
        self._ints: Tensor | None = None
        self._floats: Tensor | None = None
        self._forward: Callable[[Tensor], Tensor] = self._decode_logits

    @torch.inference_mode()
    def run(self, plan: StepPlan) -> StepResult:
        if plan.decode and self._graphs:
            return self._run_graph(plan)
        return self._run_eager(plan)

    def _run_eager(self, plan: StepPlan) -> StepResult:
        def tensor(values: object, dtype: torch.dtype) -> Tensor:
            return torch.tensor(values, dtype=dtype).to(self.device, non_blocking=True)

        tokens = tensor(plan.tokens, torch.long)
        positions = tensor(plan.positions, torch.long)
        cache = StepCache(
            self.storage,
            slots=tensor(plan.slots, torch.long).flatten(),
            block_tables=tensor(plan.block_tables, torch.int32),
            context_lens=tensor(plan.context_lens, torch.int32),
            positions=positions,
            fresh=plan.fresh,
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
        echo: dict[int, list[float]] = {}
        for row, targets in zip(plan.echo_rows, plan.echo_targets, strict=True):
            scores = F.log_softmax(logits[row, : len(targets)], dim=-1)
            echo[row] = scores.gather(-1, tensor(targets, torch.long)[:, None]).squeeze(-1).tolist()
        return StepResult(sampled.tolist(), logprobs.tolist(), echo)

    # -- CUDA graphs -----------------------------------------------------------------------

    def _decode_logits(self, ints: Tensor) -> Tensor:
        """The decode forward on packed inputs -> last-token logits [b, V] (the part we compile)."""
        positions = ints[:, _POSITION : _POSITION + 1]
        cache = StepCache(
            self.storage,
            slots=ints[:, _SLOT],
            block_tables=ints[:, _TABLE:],
            context_lens=ints[:, _LENGTH],
            positions=positions,
            fresh=False,
        )
        return self.model(ints[:, _TOKEN : _TOKEN + 1], positions, cache)[:, -1]

    def _decode_step(self, ints: Tensor, floats: Tensor) -> Tensor:
        """The captured decode step: packed inputs -> [2, b] (tokens, logprobs) as float64."""
        logits = self._forward(ints)
        tokens, logprobs = sample(logits, floats[:, 0], floats[:, 1], ints[:, _SEED], ints[:, _STEP])
        return torch.stack((tokens.double(), logprobs.double()))

    @torch.inference_mode()
    def capture(self) -> None:
        """Capture decode graphs for padded batch sizes (largest first, sharing one memory pool)."""
        if self.device.type != "cuda" or not self.config.cuda_graphs:
            return
        sizes = graph_batch_sizes(self.config.max_batch_size)
        biggest = sizes[-1]
        self._ints = torch.zeros(biggest, _TABLE + self.max_blocks, dtype=torch.long, device=self.device)
        self._ints[:, _SLOT] = PAD_SLOT
        self._ints[:, _LENGTH] = 1
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
        torch.cuda.current_stream().wait_stream(stream)
        for size in sorted(sizes, reverse=True):
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool):
                out = step(self._ints[:size], self._floats[:size])
            self._graphs[size] = (graph, out)
        torch.cuda.synchronize()
        log.info("captured decode CUDA graphs for batch sizes %s (compiled: %s)", sizes, self.config.compile)

    def _run_graph(self, plan: StepPlan) -> StepResult:
        assert self._ints is not None and self._floats is not None
        b = plan.rows
        size = next(s for s in sorted(self._graphs) if s >= b)
        width = _TABLE + self.max_blocks
        ints = torch.zeros(size, width, dtype=torch.long)
        ints[:, _SLOT] = PAD_SLOT
        ints[:, _LENGTH] = 1
        ints[:b, _TOKEN] = torch.tensor([t[0] for t in plan.tokens])
        ints[:b, _POSITION] = torch.tensor([p[0] for p in plan.positions])
        ints[:b, _SLOT] = torch.tensor([s[0] for s in plan.slots])
        ints[:b, _LENGTH] = torch.tensor(plan.context_lens)
        ints[:b, _SEED] = torch.tensor(plan.seeds)
        ints[:b, _STEP] = torch.tensor(plan.steps)
        table = torch.tensor(plan.block_tables)
        ints[:b, _TABLE : _TABLE + table.shape[1]] = table
        floats = torch.zeros(size, 2, dtype=torch.float32)
        floats[:, 1] = 1.0
        floats[:b, 0] = torch.tensor(plan.temperature)
        floats[:b, 1] = torch.tensor(plan.top_p)
        self._ints[:size].copy_(ints.pin_memory(), non_blocking=True)
        self._floats[:size].copy_(floats.pin_memory(), non_blocking=True)
        graph, out = self._graphs[size]
        graph.replay()
        result = out[:, :b].cpu()
        return StepResult(result[0].long().tolist(), result[1].tolist(), {})


def build_runner(model: Transformer, config: EngineConfig) -> tuple[ModelRunner, BlockAllocator]:
    """KV storage sized for this rank's heads (after sharding) and a runner over it."""
    args = model.args
    weight: Tensor = model.get_parameter("layers.0.attention.wk.weight")
    kv_heads = int(weight.shape[0]) // args.head_dim
    dtype, device = weight.dtype, weight.device
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
