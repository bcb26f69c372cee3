"""Continuous batching on the paged cache gives the same greedy tokens as recomputing from scratch,
with chunked prefill, mixed prompt lengths and preemption; every block returns to the pool."""

from __future__ import annotations

import pytest
import torch

from services.common.sampling import SamplingParams
from services.inference.engine.request import GenerationRequest
from services.inference.engine.scheduler import Scheduler
from services.inference.model.transformer import Transformer, init_random_weights
from tests.unit.engine.stepping import ARGS, PROMPTS, run_to_completion, tiny_runner


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
    config, allocator, runner = tiny_runner(model, num_blocks)
    scheduler = Scheduler(config, allocator, eos_id=-1)
    params = SamplingParams(temperature=0, max_gen_len=12)
    sequences = [scheduler.add(GenerationRequest(str(i), tuple(p), params, 0)) for i, p in enumerate(PROMPTS)]
    run_to_completion(scheduler, runner, max_steps=200)
    assert allocator.num_free == num_blocks - 1
    if num_blocks == 14:
        assert scheduler.preemptions > 0
    for sequence, prompt in zip(sequences, PROMPTS, strict=True):
        assert sequence.tokens == greedy_reference(model, prompt, 12)
