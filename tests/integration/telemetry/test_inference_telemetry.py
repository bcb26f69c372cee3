"""The real InferenceServicer and engine (demo model, in-process, loopback): a Generate call's spans
follow the engine's phases under the incoming server span, and its metrics match the stream the
client received, for a finished, a cancelled and a refused request."""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
import torch
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

from llamagate.v1 import inference_service_pb2 as pb
from llamagate.v1 import inference_service_pb2_grpc as pb_grpc
from llamagate.v1 import types_pb2
from services.common.server import GrpcServer, ServerConfig
from services.inference.__main__ import scheduler_snapshot
from services.inference.config import EngineConfig
from services.inference.demo import DemoPaths, write_demo
from services.inference.engine.engine import Engine
from services.inference.engine.runner import build_runner
from services.inference.metrics import InferenceMetrics
from services.inference.model.checkpoint import load_model
from services.inference.model.parallel import init_parallel
from services.inference.model.tokenizer import Tokenizer
from services.inference.servicer import InferenceServicer, model_info
from services.inference.tracing import (
    DECODE_SPAN,
    FINISH_EVENT,
    FIRST_TOKEN_EVENT,
    GENERATE_SPAN,
    PREFILL_SPAN,
    QUEUE_WAIT_SPAN,
)
from tests.support.two_hop import Hop, make_hop
from tests.unit.telemetry.readings import collect, labels

pytestmark = pytest.mark.slow  # trains the demo model once (tens of seconds on a small CPU box)

GENERATE = "/llamagate.v1.InferenceService/Generate"
CONFIG = EngineConfig(max_seq_len=256, max_batch_size=4, num_kv_blocks=64, prefill_chunk=64)


@dataclass
class Served:
    hop: Hop
    stub: pb_grpc.InferenceServiceStub
    engine: Engine


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoPaths:
    return write_demo(tmp_path_factory.mktemp("demo"))


class CancelAwaitingEngine(Engine):
    """The real engine, whose model steps after the first few wait until a cancel has reached it.

    The demo model is fast: unheld, it can generate every token of a request before a client's
    cancel makes it through the loaded event loops of the client and the server, and the request
    then ends "length". Held, it cannot finish before the cancel arrives.
    """

    FREE_STEPS = 6  # enough for the prefill and the first tokens the client waits for

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cancel_arrived = threading.Event()
        launch = self._runner.launch
        steps = itertools.count(1)

        def held_launch(plan: Any) -> Any:
            if next(steps) > self.FREE_STEPS:
                self.cancel_arrived.wait(timeout=60)
            return launch(plan)

        self._runner.launch = held_launch  # type: ignore[method-assign]

    def cancel(self, handle: int) -> None:
        super().cancel(handle)
        self.cancel_arrived.set()


def _engine(
    demo: DemoPaths, engine_type: type[Engine] = Engine
) -> tuple[Engine, Tokenizer, pb.GetModelInfoResponse]:
    model = load_model(
        demo.ckpt_dir, ctx=init_parallel("cpu"), dtype=torch.float32, max_seq_len=CONFIG.max_seq_len
    )
    tokenizer = Tokenizer(demo.tokenizer)
    runner, allocator = build_runner(model, CONFIG)
    info = model_info("demo", model.args, 1, CONFIG.max_batch_size, True)
    return engine_type(CONFIG, runner, tokenizer, allocator), tokenizer, info


async def _serve(
    engine: Engine, tokenizer: Tokenizer, info: pb.GetModelInfoResponse
) -> AsyncIterator[Served]:
    hop = make_hop("llamagate-inference")
    metrics = InferenceMetrics.create(hop.telemetry.meter, lambda: scheduler_snapshot(engine))
    servicer = InferenceServicer(engine, tokenizer, info, tracer=hop.telemetry.tracer, metrics=metrics)
    server = GrpcServer(
        ServerConfig(port=0, extra_interceptors=hop.telemetry.server_interceptors()),
        ["llamagate.v1.InferenceService"],
    )
    pb_grpc.add_InferenceServiceServicer_to_server(servicer, server.server)
    port = await server.start()
    await server.set_serving(True)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield Served(hop, pb_grpc.InferenceServiceStub(channel), engine)
    finally:
        await server.stop()
        hop.telemetry.shutdown()


@pytest.fixture
async def served(demo: DemoPaths) -> AsyncIterator[Served]:
    engine, tokenizer, info = _engine(demo)
    engine.start()
    try:
        async for value in _serve(engine, tokenizer, info):
            yield value
    finally:
        engine.stop(drain=False, timeout_s=10)


@pytest.fixture
async def served_until_cancelled(demo: DemoPaths) -> AsyncIterator[Served]:
    engine, tokenizer, info = _engine(demo, CancelAwaitingEngine)
    engine.start()
    try:
        async for value in _serve(engine, tokenizer, info):
            yield value
    finally:
        engine.stop(drain=False, timeout_s=10)


@pytest.fixture
async def not_running(demo: DemoPaths) -> AsyncIterator[Served]:
    """An engine that was never started: every submission is refused with UNAVAILABLE."""
    engine, tokenizer, info = _engine(demo)
    async for value in _serve(engine, tokenizer, info):
        yield value


def _start(n: int) -> pb.GenerateRequest:
    sampling = types_pb2.SamplingParams(temperature=0.0, max_gen_len=n)
    return pb.GenerateRequest(
        start=pb.GenerateStart(request_id="r-1", prompt="Once upon a time", sampling=sampling)
    )


def _spans(hop: Hop) -> dict[str, ReadableSpan]:
    spans = hop.spans.get_finished_spans()
    by_name = {s.name: s for s in spans}
    assert len(by_name) == len(spans), [s.name for s in spans]
    return by_name


def _is_child(child: ReadableSpan, parent: ReadableSpan) -> bool:
    return child.parent is not None and child.parent.span_id == parent.context.span_id


async def test_a_finished_generation_has_contiguous_phases_and_matching_metrics(served: Served) -> None:
    deltas: list[int] = []
    done: pb.GenerateDone | None = None
    async for reply in served.stub.Generate(iter([_start(16)])):
        if reply.HasField("delta"):
            deltas.append(len(reply.delta.token_ids))
        elif reply.HasField("done"):
            done = reply.done
    assert done is not None and done.usage.completion_tokens == sum(deltas) > 0

    spans = _spans(served.hop)
    server, generate = spans[GENERATE], spans[GENERATE_SPAN]
    assert server.kind == SpanKind.SERVER and _is_child(generate, server)
    queue_wait, prefill, decode = spans[QUEUE_WAIT_SPAN], spans[PREFILL_SPAN], spans[DECODE_SPAN]
    assert all(_is_child(phase, generate) for phase in (queue_wait, prefill, decode))
    # One timeline: each phase starts where the previous ended, from submission to finish.
    assert generate.start_time == queue_wait.start_time
    assert queue_wait.end_time == prefill.start_time
    assert prefill.end_time == decode.start_time
    assert decode.end_time == generate.end_time
    events = {e.name: e for e in generate.events}
    assert list(events) == [FIRST_TOKEN_EVENT, FINISH_EVENT]
    assert events[FIRST_TOKEN_EVENT].timestamp == decode.start_time
    assert generate.attributes is not None
    assert generate.attributes["llamagate.request_id"] == "r-1"
    assert generate.attributes["llamagate.generated_tokens"] == done.usage.completion_tokens
    assert generate.attributes["llamagate.prompt_tokens"] == done.usage.prompt_tokens
    reason = generate.attributes["llamagate.finish_reason"]
    assert reason in ("stop", "length")

    metrics = collect(served.hop.metrics)
    assert metrics["llamagate_generate_requests_total"][labels(finish_reason=reason)].value == 1
    assert metrics["llamagate_prompt_tokens_total"][labels()].value == done.usage.prompt_tokens
    assert metrics["llamagate_generated_tokens_total"][labels()].value == done.usage.completion_tokens
    assert metrics["llamagate_queue_wait_seconds"][labels()].value == 1
    assert metrics["llamagate_ttft_seconds"][labels()].value == 1
    assert (
        metrics["llamagate_inter_token_latency_seconds"][labels()].value == done.usage.completion_tokens - 1
    )
    duration = metrics["llamagate_request_duration_seconds"][labels(finish_reason=reason)]
    assert generate.end_time is not None and generate.start_time is not None
    assert duration.value == 1
    assert duration.total == pytest.approx((generate.end_time - generate.start_time) / 1e9)
    # Read from the engine at collection time: nothing waits or runs now, every KV block is free.
    assert metrics["llamagate_queue_depth"][labels()].value == 0
    assert metrics["llamagate_running_batch_size"][labels()].value == 0
    assert metrics["llamagate_kv_cache_utilization"][labels()].value == 0.0


async def test_a_client_cancel_ends_the_spans_as_cancelled(served_until_cancelled: Served) -> None:
    served = served_until_cancelled
    requests: asyncio.Queue[pb.GenerateRequest | None] = asyncio.Queue()
    await requests.put(_start(200))

    async def outgoing() -> AsyncIterator[pb.GenerateRequest]:
        while (item := await requests.get()) is not None:
            yield item

    call = served.stub.Generate(outgoing())
    received = 0
    reason = None
    cancel_sent = False
    async for reply in call:
        if reply.HasField("delta"):
            received += len(reply.delta.token_ids)
            if received >= 2 and not cancel_sent:
                # One cancel: a second one written while the server ends the call fails the call.
                cancel_sent = True
                await requests.put(pb.GenerateRequest(cancel=pb.GenerateCancel()))
        elif reply.HasField("done"):
            reason = reply.done.finish_reason
    await requests.put(None)
    assert reason == types_pb2.FINISH_REASON_CANCELLED

    generate = _spans(served.hop)[GENERATE_SPAN]
    assert generate.attributes is not None
    assert generate.attributes["llamagate.finish_reason"] == "cancelled"
    metrics = collect(served.hop.metrics)
    assert metrics["llamagate_generate_requests_total"][labels(finish_reason="cancelled")].value == 1
    assert metrics["llamagate_generated_tokens_total"][labels()].value >= received


async def test_a_refused_submission_is_counted_as_rejected(not_running: Served) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        async for _ in not_running.stub.Generate(iter([_start(8)])):
            pass
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE

    spans = _spans(not_running.hop)
    generate = spans[GENERATE_SPAN]
    assert _is_child(generate, spans[GENERATE])
    assert generate.status.status_code == StatusCode.ERROR
    assert generate.attributes is not None and generate.attributes["llamagate.finish_reason"] == "rejected"
    assert {e.name for e in generate.events} == {"exception", FINISH_EVENT}
    metrics = collect(not_running.hop.metrics)
    assert metrics["llamagate_generate_requests_total"][labels(finish_reason="rejected")].value == 1
    assert "llamagate_ttft_seconds" not in metrics or not metrics["llamagate_ttft_seconds"]


async def test_a_client_that_goes_away_ends_the_spans_as_cancelled(served: Served) -> None:
    requests: asyncio.Queue[pb.GenerateRequest | None] = asyncio.Queue()
    await requests.put(_start(200))

    async def outgoing() -> AsyncIterator[pb.GenerateRequest]:
        while (item := await requests.get()) is not None:
            yield item

    call = served.stub.Generate(outgoing())
    received = 0
    async for reply in call:
        if reply.HasField("delta"):
            received += len(reply.delta.token_ids)
            if received >= 2:
                break
    call.cancel()  # the RPC is aborted: no GenerateCancel, no done event
    for _ in range(500):  # bounded: at most ~5 s for the server to see the abort
        if any(s.name == GENERATE_SPAN for s in served.hop.spans.get_finished_spans()):
            break
        await asyncio.sleep(0.01)
    generate = _spans(served.hop)[GENERATE_SPAN]
    assert generate.attributes is not None
    assert generate.attributes["llamagate.finish_reason"] == "cancelled"
    generated = generate.attributes["llamagate.generated_tokens"]
    assert isinstance(generated, int) and generated >= received
    metrics = collect(served.hop.metrics)
    assert metrics["llamagate_generate_requests_total"][labels(finish_reason="cancelled")].value == 1
