"""Continuous batching on the paged cache gives the same greedy tokens as recomputing from scratch,
with chunked prefill, mixed prompt lengths and preemption; every block returns to the pool."""

from __future__ import annotations

import pytest
import torch

from services.inference.config import EngineConfig
from services.inference.kv_cache import BlockAllocator, KVStorage
from services.inference.model import ModelArgs, Transformer, init_random_weights
from services.inference.request import GenerationRequest
from services.inference.runner import ModelRunner
from services.inference.sampling import SamplingParams
from services.inference.scheduler import Scheduler

ARGS = ModelArgs(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=97, max_seq_len=128, multiple_of=32)
PROMPTS = [[1, 5, 9, 13, 2, 7, 8, 9, 10, 11, 12], [1, 3], [1, *[4] * 15, 50], [1, 9, 9]]


def greedy_reference(model: Transformer, prompt: list[int], n: int) -> list[int]:
    tokens = list(prompt)
    with torch.no_grad():
        for _ in range(n):
            tokens.append(int(model(torch.tensor([tokens]))[0, -1].argmax()))
    return tokens


@pytest.mark.parametrize("num_blocks", [40, 14])  # 14 blocks forces preemption
def test_batched_paged_generation_matches_recompute(num_blocks: int) -> None:
    model = Transformer(ARGS)
    init_random_weights(model, 1)
    model.eval()
    config = EngineConfig(
        max_seq_len=128, max_batch_size=4, kv_block_size=4, num_kv_blocks=num_blocks, prefill_chunk=7
    )
    allocator = BlockAllocator(num_blocks)
    storage = KVStorage(
        n_layers=2,
        num_blocks=num_blocks,
        block_size=4,
        kv_heads=2,
        head_dim=16,
        dtype=torch.float32,
        device=torch.device("cpu"),
    )
    runner = ModelRunner(model, storage, config, 32)
    scheduler = Scheduler(config, allocator, eos_id=-1)
    params = SamplingParams(temperature=0, max_gen_len=12)
    sequences = [scheduler.add(GenerationRequest(str(i), tuple(p), params, 0)) for i, p in enumerate(PROMPTS)]
    for _ in range(200):
        if not scheduler.has_work():
            break
        plan = scheduler.schedule()
        assert plan is not None
        rows = scheduler.rows_of(plan)
        result = runner.run(plan)
        for update in scheduler.apply(plan, rows, result.tokens, result.logprobs, result.echo_logprobs):
            if update.token is not None and scheduler.finish_reason(update.sequence):
                scheduler.release(update.sequence)
    assert not scheduler.has_work()
    assert allocator.num_free == num_blocks - 1
    if num_blocks == 14:
        assert scheduler.preemptions > 0
    for sequence, prompt in zip(sequences, PROMPTS, strict=True):
        assert sequence.tokens == greedy_reference(model, prompt, 12)
