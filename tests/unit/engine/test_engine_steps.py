"""The engine's step loop where launching a step computes it (the CPU): each step's tokens reach
their sink before the next step runs, so a reply's first token waits for its prefill alone and
every later token for its own decode step, not for the step after it."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import pytest

from services.common.sampling import SamplingParams
from services.inference.engine.engine import Engine
from services.inference.engine.request import Delta, Done, Event, Failed, GenerationRequest
from services.inference.engine.runner import PendingStep
from services.inference.engine.step_plan import StepPlan
from services.inference.model.transformer import Transformer, init_random_weights
from tests.unit.engine.stepping import ARGS, PROMPTS, tiny_runner


class CharTokenizer:
    eos_id = -1

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(chr(0x4E00 + i) for i in ids)


def test_on_the_cpu_each_token_reaches_its_sink_before_the_next_step_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = Transformer(ARGS)
    init_random_weights(model, 2)
    config, allocator, runner = tiny_runner(model.eval(), num_blocks=40)
    assert config.overlap_steps and not runner.asynchronous
    launched = 0
    launch = runner.launch

    def counting(plan: StepPlan) -> PendingStep:
        nonlocal launched
        launched += 1
        return launch(plan)

    monkeypatch.setattr(runner, "launch", counting)
    steps_at_token: list[int] = []
    done = threading.Event()

    def sink(event: Event) -> None:  # called on the engine thread
        if isinstance(event, Delta) and event.token_ids:
            steps_at_token.append(launched)
        elif isinstance(event, Done | Failed):
            done.set()

    engine = Engine(config, runner, CharTokenizer(), allocator)  # type: ignore[arg-type]
    engine.start()
    try:
        params = SamplingParams(temperature=0, max_gen_len=5)
        engine.submit(GenerationRequest("r", tuple(PROMPTS[0]), params, seed=0), sink)
        assert done.wait(60)
    finally:
        engine.stop(drain=False, timeout_s=10)
    # 11 prompt tokens: two prefill chunks of at most 7 (the second samples the first token), then
    # one decode step per further token.
    assert steps_at_token == [2, 3, 4, 5, 6]


def test_when_a_request_ends_the_published_stats_no_longer_count_it() -> None:
    """A caller that reads the gauges as soon as it hears Done (the inference telemetry test did)
    must see the request gone, not the stats of the step before its end."""
    model = Transformer(ARGS)
    init_random_weights(model, 2)
    config, allocator, runner = tiny_runner(model.eval(), num_blocks=40)
    engine = Engine(config, runner, CharTokenizer(), allocator)  # type: ignore[arg-type]
    at_done: list[tuple[int, int, int]] = []
    done = threading.Event()

    def sink(event: Event) -> None:  # called on the engine thread, as the servicer's sink is
        if isinstance(event, Done | Failed):
            stats = engine.stats()
            at_done.append((stats.waiting, stats.prefilling + stats.decoding, stats.free_blocks))
            done.set()

    engine.start()
    try:
        params = SamplingParams(temperature=0, max_gen_len=5)
        engine.submit(GenerationRequest("r", tuple(PROMPTS[0]), params, seed=0), sink)
        assert done.wait(60)
    finally:
        engine.stop(drain=False, timeout_s=10)
    assert at_done == [(0, 0, allocator.usable_blocks)]
