"""What the engine tests share: a tiny model, a CPU runner over its paged cache, a step loop."""

from __future__ import annotations

import torch

from services.inference.engine.blocks import BlockAllocator
from services.inference.engine.config import EngineConfig
from services.inference.engine.kv_cache import KVStorage, StepCache, cache_dtype
from services.inference.engine.runner import ModelRunner
from services.inference.engine.scheduler import Scheduler
from services.inference.kernels.paged_attention import to_cache_dtype
from services.inference.model.transformer import ModelArgs, Transformer

ARGS = ModelArgs(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=97, max_seq_len=128, multiple_of=32)
PROMPTS = [[1, 5, 9, 13, 2, 7, 8, 9, 10, 11, 12], [1, 3], [1, *[4] * 15, 50], [1, 9, 9]]


def tiny_runner(
    model: Transformer,
    num_blocks: int,
    prefix_caching: bool = True,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    kv_cache_dtype: str = "auto",
) -> tuple[EngineConfig, BlockAllocator, ModelRunner]:
    """Blocks of 4 tokens, chunks of 7, 4 sequences at most: small enough to force preemption.
    `dtype` is the model's; the cache's follows it as build_runner's does."""
    config = EngineConfig(
        max_seq_len=128,
        max_batch_size=4,
        kv_block_size=4,
        num_kv_blocks=num_blocks,
        prefill_chunk=7,
        prefix_caching=prefix_caching,
        device=device,
        kv_cache_dtype=kv_cache_dtype,
    )
    storage = KVStorage(
        n_layers=ARGS.n_layers,
        num_blocks=num_blocks,
        block_size=4,
        kv_heads=ARGS.kv_heads,
        head_dim=ARGS.head_dim,
        dtype=cache_dtype(kv_cache_dtype, dtype),
        device=torch.device(device),
    )
    return config, BlockAllocator(num_blocks), ModelRunner(model, storage, config, 32)


def run_to_completion(scheduler: Scheduler, runner: ModelRunner, max_steps: int) -> None:
    """One step at a time (no overlap), releasing each sequence when it finishes."""
    for _ in range(max_steps):
        if not scheduler.has_work():
            break
        step = scheduler.schedule()
        assert step is not None
        result = runner.run(step.plan)
        for update in scheduler.apply(step, result.tokens, result.logprobs, result.echo_logprobs):
            if update.token is not None and scheduler.finish_reason(update.sequence):
                scheduler.release(update.sequence)
    assert not scheduler.has_work()


# Two decode rows at positions 5 and 9 over blocks of 4 tokens: [position, slot, length, table...].
DECODE_ROWS = [[5, 9, 6, 3, 2, 0], [9, 17, 10, 5, 6, 4]]


def random_kv_storage(dtype: torch.dtype, device: str) -> KVStorage:
    """A KV cache of 8 blocks of 4 tokens for ARGS, filled with seeded noise (earlier tokens)."""
    storage = KVStorage(
        n_layers=ARGS.n_layers,
        num_blocks=8,
        block_size=4,
        kv_heads=ARGS.kv_heads,
        head_dim=ARGS.head_dim,
        dtype=dtype,
        device=torch.device(device),
    )
    generator = torch.Generator(device=device).manual_seed(1)
    for cache in (storage.k, storage.v):  # drawn in fp32: there is no normal_ for float8
        noise = torch.empty(cache.shape, device=device).normal_(generator=generator)
        cache.copy_(to_cache_dtype(noise, dtype))
    return storage


def decode_step_cache(storage: KVStorage, fused_rotary: bool) -> StepCache:
    """The cache view of a decode step of DECODE_ROWS."""
    ints = torch.tensor(DECODE_ROWS, device=storage.k.device)
    return StepCache(
        storage,
        slots=ints[:, 1],
        block_tables=ints[:, 3:],
        context_lens=ints[:, 2],
        positions=ints[:, :1],
        fresh=False,
        fused_rotary=fused_rotary,
    )
