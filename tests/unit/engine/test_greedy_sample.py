"""The all-greedy decode graph's sampler picks what the general sampler picks at temperature 0."""

from __future__ import annotations

import torch

from services.inference.model.sampling import greedy_sample, sample


def test_greedy_sample_equals_sample_at_temperature_zero() -> None:
    generator = torch.Generator().manual_seed(3)
    logits = torch.randn(6, 97, generator=generator) * 4
    logits[2, 10] = logits[2, 50] = logits[2].max() + 1  # a tie: both take the first index
    rows = logits.shape[0]
    tokens, logprobs = sample(
        logits,
        torch.zeros(rows),
        torch.full((rows,), 0.9),
        torch.arange(rows, dtype=torch.long),
        torch.zeros(rows, dtype=torch.long),
    )
    greedy_tokens, greedy_logprobs = greedy_sample(logits)
    assert torch.equal(greedy_tokens, tokens)
    assert int(greedy_tokens[2]) == 10
    assert torch.equal(greedy_logprobs, logprobs)
