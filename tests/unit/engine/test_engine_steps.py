"""The engine's step loop where launching a step computes it (the CPU): each step's tokens reach
their sink before the next step runs, so a reply's first token waits for its prefill alone and
every later token for its own decode step, not for the step after it."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

import pytest

from services.common.sampling import SamplingParams
from services.inference.engine.blocks import BlockAllocator
from services.inference.engine.config import EngineConfig
from services.inference.engine.engine import Engine
from services.inference.engine.request import Delta, Done, Event, Failed, GenerationRequest
from services.inference.engine.runner import ModelRunner, PendingStep
from services.inference.engine.step_plan import StepPlan
from services.inference.model.transformer import Transformer, init_random_weights
from tests.unit.engine.stepping import ARGS, PROMPTS, tiny_runner


class CharTokenizer:
    eos_id = -1

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(chr(0x4E00 + i) for i in ids)


def tiny_engine() -> tuple[Engine, EngineConfig, BlockAllocator, ModelRunner]:
    model = Transformer(ARGS)
    init_random_weights(model, 2)
    config, allocator, runner = tiny_runner(model.eval(), num_blocks=40)
    return Engine(config, runner, CharTokenizer(), allocator), config, allocator, runner  # type: ignore[arg-type]


def generate_once(engine: Engine, sink: Callable[[Event], None]) -> None:
    """One 5-token greedy request through the running engine; returns once it ended."""
    ended = threading.Event()

    def until_end(event: Event) -> None:  # called on the engine thread
        sink(event)
        if isinstance(event, Done | Failed):
            ended.set()

    engine.start()
    try:
        params = SamplingParams(temperature=0, max_gen_len=5)
        engine.submit(GenerationRequest("r", tuple(PROMPTS[0]), params, seed=0), until_end)
        assert ended.wait(60)
    finally:
        engine.stop(drain=False, timeout_s=10)


def test_on_the_cpu_each_token_reaches_its_sink_before_the_next_step_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    engine, config, _, runner = tiny_engine()
    assert config.overlap_steps and not runner.asynchronous
    launched = 0
    launch = runner.launch

    def counting(plan: StepPlan) -> PendingStep:
        nonlocal launched
        launched += 1
        return launch(plan)

    monkeypatch.setattr(runner, "launch", counting)
    steps_at_token: list[int] = []

    def sink(event: Event) -> None:
        if isinstance(event, Delta) and event.token_ids:
            steps_at_token.append(launched)

    generate_once(engine, sink)
    # 11 prompt tokens: two prefill chunks of at most 7 (the second samples the first token), then
    # one decode step per further token.
    assert steps_at_token == [2, 3, 4, 5, 6]


def test_when_a_request_ends_the_published_stats_no_longer_count_it() -> None:
    """A caller that reads the gauges as soon as it hears Done (the inference telemetry test did)
    must see the request gone, not the stats of the step before its end."""
    engine, _, allocator, _ = tiny_engine()
    at_done: list[tuple[int, int, int]] = []

    def sink(event: Event) -> None:  # called on the engine thread, as the servicer's sink is
        if isinstance(event, Done | Failed):
            stats = engine.stats()
            at_done.append((stats.waiting, stats.prefilling + stats.decoding, stats.free_blocks))

    generate_once(engine, sink)
    assert at_done == [(0, 0, allocator.usable_blocks)]
