"""sampling.sample: greedy, nucleus, reproducible per (seed, step), independent of the batch."""

from __future__ import annotations

import math

import pytest
import torch

from services.common.errors import InvalidRequest
from services.common.sampling import SamplingParams, seed_as_int64
from services.inference.model.sampling import sample


def _batch(
    logits: torch.Tensor, temperature: float, top_p: float, seeds: list[int], steps: list[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    b = logits.shape[0]
    return sample(
        logits,
        torch.full((b,), temperature),
        torch.full((b,), top_p),
        torch.tensor(seeds, dtype=torch.int64),
        torch.tensor(steps, dtype=torch.int64),
    )


def test_temperature_zero_is_argmax_with_raw_logprobs() -> None:
    logits = torch.randn(16, 1000, generator=torch.Generator().manual_seed(0)) * 3
    tokens, logprobs = _batch(logits, 0.0, 0.9, list(range(16)), [0] * 16)
    assert torch.equal(tokens, logits.argmax(-1))
    expected = torch.log_softmax(logits, -1).gather(-1, tokens[:, None]).squeeze(-1)
    torch.testing.assert_close(logprobs, expected)


def test_tiny_top_p_keeps_only_the_most_likely_token() -> None:
    logits = torch.randn(32, 500, generator=torch.Generator().manual_seed(1))
    tokens, _ = _batch(logits, 1.5, 1e-6, list(range(32)), list(range(32)))
    assert torch.equal(tokens, logits.argmax(-1))


def test_same_seed_and_step_give_the_same_token_whatever_the_batch() -> None:
    gen = torch.Generator().manual_seed(2)
    logits = torch.randn(8, 300, generator=gen)
    seeds = [11, 12, 13, 14, 2**62, -5, 0, 99]
    steps = [0, 1, 2, 3, 4, 5, 6, 7]
    tokens, logprobs = _batch(logits, 1.0, 0.95, seeds, steps)
    for i in range(8):
        alone, alone_lp = _batch(logits[i : i + 1], 1.0, 0.95, seeds[i : i + 1], steps[i : i + 1])
        assert alone.item() == tokens[i].item()
        assert alone_lp.item() == pytest.approx(logprobs[i].item())
    order = torch.randperm(8, generator=gen)
    shuffled, _ = _batch(logits[order], 1.0, 0.95, [seeds[j] for j in order], [steps[j] for j in order])
    assert torch.equal(shuffled, tokens[order])
    # Mixed with other rows of different temperatures and top_p.
    mixed_logits = torch.cat([torch.randn(3, 300, generator=gen), logits[2:3]])
    mixed, _ = sample(
        mixed_logits,
        torch.tensor([0.0, 0.3, 2.0, 1.0]),
        torch.tensor([0.5, 1.0, 0.2, 0.95]),
        torch.tensor([1, 2, 3, seeds[2]]),
        torch.tensor([9, 9, 9, steps[2]]),
    )
    assert mixed[3].item() == tokens[2].item()


def test_different_steps_or_seeds_draw_different_tokens() -> None:
    logits = torch.zeros(200, 1000)  # uniform: every draw is pure noise
    by_step, _ = _batch(logits, 1.0, 1.0, [7] * 200, list(range(200)))
    by_seed, _ = _batch(logits, 1.0, 1.0, list(range(200)), [0] * 200)
    assert len(set(by_step.tolist())) > 150
    assert len(set(by_seed.tolist())) > 150


def test_draws_follow_the_renormalised_nucleus() -> None:
    # probs 0.5, 0.3, 0.15, 0.05 with top_p 0.7: the reference keeps tokens 0 and 1 (mass before
    # token 2 is 0.8 > 0.7), renormalised to 0.625 / 0.375.
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    n = 40_000
    logits = probs.log().expand(n, -1).contiguous()
    tokens, _ = _batch(logits, 1.0, 0.7, list(range(n)), [3] * n)
    counts = torch.bincount(tokens, minlength=4).double() / n
    assert counts[2] == 0 and counts[3] == 0
    assert abs(counts[0].item() - 0.625) < 4 * math.sqrt(0.625 * 0.375 / n)


def test_temperature_sharpens_the_distribution() -> None:
    probs = torch.tensor([0.4, 0.3, 0.2, 0.1])
    n = 40_000
    logits = probs.log().expand(n, -1).contiguous()
    tokens, _ = _batch(logits, 0.5, 1.0, list(range(n)), [0] * n)
    expected = torch.softmax(probs.log() / 0.5, -1)
    counts = torch.bincount(tokens, minlength=4).double() / n
    assert torch.allclose(counts, expected.double(), atol=0.015)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        (SamplingParams(temperature=-0.1), "sampling.temperature"),
        (SamplingParams(temperature=float("nan")), "sampling.temperature"),
        (SamplingParams(top_p=0.0), "sampling.top_p"),
        (SamplingParams(top_p=1.01), "sampling.top_p"),
        (SamplingParams(max_gen_len=0), "sampling.max_gen_len"),
        (SamplingParams(seed=2**64), "sampling.seed"),
        (SamplingParams(stop=tuple("abcdefghi")), "sampling.stop"),
        (SamplingParams(stop=("x" * 257,)), "sampling.stop[0]"),
        (SamplingParams(stop=("",)), "sampling.stop[0]"),
    ],
)
def test_invalid_params_name_the_field_and_range(params: SamplingParams, field: str) -> None:
    with pytest.raises(InvalidRequest) as raised:
        params.validate()
    assert raised.value.message.startswith(field)
    assert [v.field for v in raised.value.violations] == [field]


def test_valid_params_pass() -> None:
    SamplingParams(temperature=0.0, top_p=1.0, max_gen_len=1, seed=2**64 - 1, stop=("\n\n",)).validate()


def test_uint64_seeds_map_onto_int64() -> None:
    assert seed_as_int64(5) == 5
    assert seed_as_int64(2**64 - 1) == -1
    assert seed_as_int64(2**63) == -(2**63)
