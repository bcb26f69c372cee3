"""A two-hop topology on loopback that exercises the telemetry layer the way the services will.

client -> "front" (ChatService: turn span, safety spans, calls back) -> "back" (SafetyService and
InferenceService with GenerationTrace). Each hop owns its own `Telemetry` with in-memory exporters,
as if it were its own process. The servicers are tiny stand-ins for the real services; what is
under test is the real telemetry wiring around them: interceptors, spans, metrics, logs.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from llamagate.v1 import chat_service_pb2 as chat_pb
from llamagate.v1 import chat_service_pb2_grpc as chat_grpc
from llamagate.v1 import inference_service_pb2 as inf_pb
from llamagate.v1 import inference_service_pb2_grpc as inf_grpc
from llamagate.v1 import safety_service_pb2 as safety_pb
from llamagate.v1 import safety_service_pb2_grpc as safety_grpc
from llamagate.v1 import types_pb2 as types_pb
from services.common.errors import InvalidRequest
from services.common.logs import bind_request_id
from services.common.server import GrpcServer, ServerConfig
from services.common.telemetry import Telemetry, TelemetryConfig, setup_telemetry
from services.gateway.metrics import GatewayMetrics
from services.gateway.tracing import safety_span, turn_span
from services.inference.metrics import InferenceMetrics, SchedulerSnapshot
from services.inference.tracing import GenerationTrace
from services.safety.metrics import SafetyMetrics
from tests.support.processes import free_port

FRONT_LOGGER = "llamagate.test.front"
UNSAFE_WORD = "forbidden"
GENERATED_WORDS = ("Hello", " there", " friend")
TENANT = "acme"
SCHEDULER_STATE = SchedulerSnapshot(queue_depth=2, running_batch_size=1, kv_cache_utilization=0.125)

log = logging.getLogger(FRONT_LOGGER)


def _verdict(text: str, direction: types_pb.Direction.ValueType) -> types_pb.SafetyVerdict:
    unsafe = UNSAFE_WORD in text
    categories = [types_pb.CategoryScore(code="O3", name="Criminal Planning", score=0.9, violated=True)]
    return types_pb.SafetyVerdict(
        safe=not unsafe, direction=direction, categories=categories if unsafe else [], judged_tokens=len(text)
    )


class BackSafety(safety_grpc.SafetyServiceServicer):
    def __init__(self, metrics: SafetyMetrics) -> None:
        self.metrics = metrics

    async def Check(
        self, request: safety_pb.CheckRequest, context: grpc.aio.ServicerContext
    ) -> safety_pb.CheckResponse:
        verdicts = []
        for index, item in enumerate(request.items):
            if not item.dialog.messages:
                raise InvalidRequest(f"items[{index}].dialog is empty; send at least one message")
            start = time.perf_counter()
            verdict = _verdict(item.dialog.messages[-1].content, item.direction)
            direction = "input" if item.direction == types_pb.DIRECTION_INPUT else "output"
            violated = [c.code for c in verdict.categories if c.violated]
            self.metrics.record_verdict(
                direction, violated, time.perf_counter() - start, verdict.judged_tokens
            )
            verdicts.append(verdict)
        return safety_pb.CheckResponse(verdicts=verdicts)

    async def CheckStream(
        self, requests: AsyncIterator[safety_pb.CheckStreamRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[safety_pb.CheckStreamResponse]:
        index = 0
        async for request in requests:
            if request.WhichOneof("action") != "chunk":
                continue
            start = time.perf_counter()
            verdict = _verdict(request.chunk, types_pb.DIRECTION_OUTPUT)
            violated = [c.code for c in verdict.categories if c.violated]
            self.metrics.record_verdict("output", violated, time.perf_counter() - start, mode="stream")
            yield safety_pb.CheckStreamResponse(chunk_index=index, verdict=verdict)
            index += 1

    async def GetPolicy(
        self, request: safety_pb.GetPolicyRequest, context: grpc.aio.ServicerContext
    ) -> safety_pb.GetPolicyResponse:
        return safety_pb.GetPolicyResponse(name="test")


class BackInference(inf_grpc.InferenceServiceServicer):
    def __init__(self, telemetry: Telemetry, metrics: InferenceMetrics) -> None:
        self.telemetry = telemetry
        self.metrics = metrics

    async def Generate(
        self, requests: AsyncIterator[inf_pb.GenerateRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[inf_pb.GenerateResponse]:
        start = None
        async for request in requests:
            start = request.start
            break
        if start is None:
            raise InvalidRequest("send GenerateStart first")
        prompt_tokens = len(start.prompt.split())
        timeline = GenerationTrace(self.telemetry.tracer, self.metrics, start.request_id)
        try:
            timeline.admitted()
            yield inf_pb.GenerateResponse(
                started=inf_pb.GenerateStarted(request_id=start.request_id, prompt_tokens=prompt_tokens)
            )
            for word in GENERATED_WORDS:
                timeline.tokens(1)
                yield inf_pb.GenerateResponse(delta=inf_pb.TokenDelta(token_ids=[1], text=word))
            usage = types_pb.Usage(prompt_tokens=prompt_tokens, completion_tokens=len(GENERATED_WORDS))
            timeline.finish("stop", prompt_tokens, len(GENERATED_WORDS))
            yield inf_pb.GenerateResponse(
                done=inf_pb.GenerateDone(finish_reason=types_pb.FINISH_REASON_STOP, usage=usage)
            )
        finally:
            timeline.finish("cancelled", prompt_tokens, 0)

    async def Tokenize(
        self, request: inf_pb.TokenizeRequest, context: grpc.aio.ServicerContext
    ) -> inf_pb.TokenizeResponse:
        return inf_pb.TokenizeResponse(token_ids=[1])

    async def GetModelInfo(
        self, request: inf_pb.GetModelInfoRequest, context: grpc.aio.ServicerContext
    ) -> inf_pb.GetModelInfoResponse:
        return inf_pb.GetModelInfoResponse(name="test")


class FrontChat(chat_grpc.ChatServiceServicer):
    def __init__(self, telemetry: Telemetry, metrics: GatewayMetrics, back: grpc.aio.Channel) -> None:
        self.telemetry = telemetry
        self.metrics = metrics
        self.safety = safety_grpc.SafetyServiceStub(back)
        self.inference = inf_grpc.InferenceServiceStub(back)

    async def _turn(self, request_id: str, prompt: str) -> AsyncIterator[chat_pb.ChatResponse]:
        tracer = self.telemetry.tracer
        started = time.perf_counter()
        yield chat_pb.ChatResponse(accepted=chat_pb.Accepted(request_id=request_id))
        log.info("turn accepted", extra={"prompt": prompt, "tenant": TENANT})
        user = types_pb.Message(role=types_pb.ROLE_USER, content=prompt)
        with safety_span(tracer, "input"):
            item = safety_pb.CheckItem(
                dialog=types_pb.Dialog(messages=[user]), direction=types_pb.DIRECTION_INPUT
            )
            (verdict,) = (await self.safety.Check(safety_pb.CheckRequest(items=[item]))).verdicts
        if not verdict.safe:
            self.metrics.record_safety_block(TENANT, "input")
            self.metrics.record_finished(TENANT, "safety", time.perf_counter() - started, 0, 0)
            yield chat_pb.ChatResponse(safety=chat_pb.SafetyEvent(verdict=verdict, refusal="no"))
            return
        generate = self.inference.Generate()
        await generate.write(
            inf_pb.GenerateRequest(start=inf_pb.GenerateStart(request_id=request_id, prompt=prompt))
        )
        await generate.done_writing()
        check = self.safety.CheckStream()
        await check.write(safety_pb.CheckStreamRequest(context=types_pb.Dialog(messages=[user])))
        chunk_index, usage = 0, types_pb.Usage()
        while (response := await generate.read()) != grpc.aio.EOF:
            kind = response.WhichOneof("event")
            if kind == "delta":
                with safety_span(tracer, "output", chunk_index):
                    await check.write(safety_pb.CheckStreamRequest(chunk=response.delta.text))
                    await check.read()
                if chunk_index == 0:
                    self.metrics.record_first_token(TENANT, time.perf_counter() - started)
                chunk_index += 1
                yield chat_pb.ChatResponse(delta=chat_pb.TextDelta(text=response.delta.text))
            elif kind == "done":
                usage = response.done.usage
        await check.done_writing()
        # Read to EOF: the interceptor ends a streaming call's client span only when its responses end.
        while await check.read() != grpc.aio.EOF:
            pass
        self.metrics.record_finished(
            TENANT, "stop", time.perf_counter() - started, usage.prompt_tokens, usage.completion_tokens
        )
        log.info("turn done", extra={"completion_tokens": usage.completion_tokens})
        yield chat_pb.ChatResponse(
            done=chat_pb.Done(finish_reason=types_pb.FINISH_REASON_STOP, usage=usage, request_id=request_id)
        )

    async def Complete(
        self, request: chat_pb.CompleteRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[chat_pb.CompleteResponse]:
        request_id = uuid.uuid4().hex
        with (
            bind_request_id(request_id),
            turn_span(self.telemetry.tracer, request_id, TENANT, new_trace=False),
        ):
            async for event in self._turn(request_id, request.prompt):
                yield chat_pb.CompleteResponse(event=event)

    async def Chat(
        self, requests: AsyncIterator[chat_pb.ChatRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[chat_pb.ChatResponse]:
        async for request in requests:
            request_id = uuid.uuid4().hex
            with bind_request_id(request_id), turn_span(self.telemetry.tracer, request_id, TENANT):
                async for event in self._turn(request_id, request.turn.content):
                    yield event


@dataclass
class Hop:
    telemetry: Telemetry
    spans: InMemorySpanExporter
    metrics: InMemoryMetricReader
    server: GrpcServer | None = None

    @property
    def target(self) -> str:
        assert self.server is not None
        return f"127.0.0.1:{self.server.port}"


def make_hop(service_name: str, metrics_port: int = 0) -> Hop:
    spans, reader = InMemorySpanExporter(), InMemoryMetricReader()
    telemetry = setup_telemetry(
        TelemetryConfig(service_name, metrics_port=metrics_port),
        span_exporters=[spans],
        metric_readers=[reader],
    )
    return Hop(telemetry, spans, reader)


async def start_back(hop: Hop) -> None:
    config = ServerConfig(port=0, grace_s=1.0, extra_interceptors=hop.telemetry.server_interceptors())
    hop.server = GrpcServer(config, ["llamagate.v1.SafetyService", "llamagate.v1.InferenceService"])
    safety_grpc.add_SafetyServiceServicer_to_server(
        BackSafety(SafetyMetrics.create(hop.telemetry.meter)), hop.server.server
    )
    inf_grpc.add_InferenceServiceServicer_to_server(
        BackInference(hop.telemetry, InferenceMetrics.create(hop.telemetry.meter, lambda: SCHEDULER_STATE)),
        hop.server.server,
    )
    await hop.server.start()
    await hop.server.set_serving(True)


async def start_front(hop: Hop, back_channel: grpc.aio.Channel) -> None:
    config = ServerConfig(port=0, grace_s=1.0, extra_interceptors=hop.telemetry.server_interceptors())
    hop.server = GrpcServer(config, ["llamagate.v1.ChatService"])
    servicer = FrontChat(hop.telemetry, GatewayMetrics.create(hop.telemetry.meter), back_channel)
    chat_grpc.add_ChatServiceServicer_to_server(servicer, hop.server.server)
    await hop.server.start()
    await hop.server.set_serving(True)


@dataclass
class Topology:
    client: Hop
    front: Hop
    back: Hop
    channel: grpc.aio.Channel  # client -> front, with the client's interceptors

    @property
    def chat(self) -> chat_grpc.ChatServiceStub:
        return chat_grpc.ChatServiceStub(self.channel)


async def open_topology(metrics_ports: bool) -> AsyncIterator[Topology]:
    """client -> front -> back on loopback; `metrics_ports` gives front and back a /metrics endpoint."""
    back = make_hop("back", free_port() if metrics_ports else 0)
    front = make_hop("front", free_port() if metrics_ports else 0)
    client = make_hop("client")
    await start_back(back)
    back_channel = grpc.aio.insecure_channel(back.target, interceptors=front.telemetry.client_interceptors())
    await start_front(front, back_channel)
    channel = grpc.aio.insecure_channel(front.target, interceptors=client.telemetry.client_interceptors())
    try:
        yield Topology(client, front, back, channel)
    finally:
        await channel.close()
        for hop in (front, back):
            assert hop.server is not None
            await hop.server.stop()
        await back_channel.close()
        for hop in (client, front, back):
            hop.telemetry.shutdown()
