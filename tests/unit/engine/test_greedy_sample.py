"""The all-greedy sampler (decode graphs and eager steps whose rows all have temperature 0) picks
what the general sampler picks at temperature 0."""

from __future__ import annotations

import pytest
import torch

from services.inference.engine import runner as runner_module
from services.inference.engine.step_plan import StepPlan, StepRow
from services.inference.model.sampling import greedy_sample, sample
from services.inference.model.transformer import Transformer, init_random_weights
from tests.unit.engine.stepping import ARGS, tiny_runner


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


def test_an_all_greedy_eager_step_takes_the_argmax_without_the_top_p_sampler(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Prefill steps (and decode steps without graphs) sample eagerly: the same shortcut as the
    greedy decode graph, so a first token does not wait for a sort over the vocabulary."""
    model = Transformer(ARGS)
    init_random_weights(model, 4)
    _, _, runner = tiny_runner(model.eval(), num_blocks=8)
    calls: list[int] = []

    def counted_sample(*args: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        calls.append(len(args[0]))
        return sample(*args)

    monkeypatch.setattr(runner_module, "sample", counted_sample)
    prompt = [1, 5, 9, 13, 2]

    def prefill(temperature: float) -> int:
        row = StepRow(
            tokens=prompt,
            positions=list(range(5)),
            slots=[4 + p for p in range(5)],  # blocks 1 and 2 of 4 tokens
            block_table=[1, 2],
            context_len=5,
            sample_index=4,
            temperature=temperature,
            top_p=0.9,
            seed=0,
            step=0,
            batch_slot=0,
            samples=True,
        )
        (token,) = runner.run(StepPlan(decode=False, fresh=True, rows=[row])).tokens
        return token

    with torch.no_grad():
        expected = int(model(torch.tensor([prompt]))[0, -1].argmax())
    assert prefill(0.0) == expected and calls == []
    prefill(0.7)
    assert calls == [1]
