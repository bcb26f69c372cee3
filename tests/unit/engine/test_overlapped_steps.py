"""Steps planned one ahead of their results (the engine's overlap): step N+1 is planned and run
before step N's tokens are applied, its pending decode tokens taken from the runner's device-side
slots. The tokens must equal recomputing from scratch, also when sequences are preempted with a
token in flight or end on EOS while their next row is already running; every block returns."""

from __future__ import annotations

import pytest
import torch

from services.common.sampling import SamplingParams
from services.inference.engine.request import GenerationRequest
from services.inference.engine.runner import PendingStep
from services.inference.engine.scheduler import ScheduledStep, Scheduler, Sequence
from services.inference.model.transformer import Transformer, init_random_weights
from tests.unit.engine.stepping import ARGS, PROMPTS, tiny_runner

NEW = 12


def greedy_reference(model: Transformer, prompt: list[int], n: int, eos: int) -> list[int]:
    tokens = list(prompt)
    with torch.no_grad():
        for _ in range(n):
            tokens.append(int(model(torch.tensor([tokens]))[0, -1].argmax()))
            if tokens[-1] == eos:
                break
    return tokens


def overlapped_run(model: Transformer, num_blocks: int, eos: int) -> tuple[list[Sequence], Scheduler, int]:
    config, allocator, runner = tiny_runner(model, num_blocks)
    scheduler = Scheduler(config, allocator, eos_id=eos)
    params = SamplingParams(temperature=0, max_gen_len=NEW)
    sequences = [scheduler.add(GenerationRequest(str(i), tuple(p), params, 0)) for i, p in enumerate(PROMPTS)]
    in_flight: tuple[ScheduledStep, PendingStep] | None = None
    wasted = 0
    for _ in range(300):
        step = scheduler.schedule()
        launched = None if step is None else (step, runner.launch(step.plan))
        if in_flight is not None:
            done, pending = in_flight
            result = pending.result()
            updates = scheduler.apply(done, result.tokens, result.logprobs, result.echo_logprobs)
            wasted += sum(row.samples for row in done.plan.rows) - sum(u.token is not None for u in updates)
            for update in updates:
                if update.token is not None and scheduler.finish_reason(update.sequence):
                    scheduler.release(update.sequence)
        in_flight = launched
        if in_flight is None and not scheduler.has_work():
            break
    assert not scheduler.has_work()
    assert allocator.num_free == num_blocks - 1
    return sequences, scheduler, wasted


@pytest.mark.parametrize("num_blocks", [40, 14])  # 14 blocks forces preemption
def test_overlapped_steps_match_recompute(num_blocks: int) -> None:
    model = Transformer(ARGS)
    init_random_weights(model, 1)
    model.eval()
    sequences, scheduler, _ = overlapped_run(model, num_blocks, eos=-1)
    if num_blocks == 14:
        assert scheduler.preemptions > 0
    for sequence, prompt in zip(sequences, PROMPTS, strict=True):
        assert sequence.tokens == greedy_reference(model, prompt, NEW, eos=-1)


def test_eos_while_next_step_runs_drops_that_row() -> None:
    model = Transformer(ARGS)
    init_random_weights(model, 1)
    model.eval()
    # An EOS that the first prompt produces mid-generation: its next step is already planned.
    free_run = greedy_reference(model, PROMPTS[0], NEW, eos=-1)
    eos = free_run[len(PROMPTS[0]) + 3]
    sequences, _, wasted = overlapped_run(model, 40, eos=eos)
    assert wasted >= 1
    for sequence, prompt in zip(sequences, PROMPTS, strict=True):
        assert sequence.tokens == greedy_reference(model, prompt, NEW, eos=eos)
