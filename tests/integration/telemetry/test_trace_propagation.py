"""Trace context crosses real grpc.aio hops (W3C traceparent in metadata) through our interceptors."""

from __future__ import annotations

import asyncio
import gc

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

from llamagate.v1 import chat_service_pb2 as chat_pb
from llamagate.v1 import safety_service_pb2 as safety_pb
from llamagate.v1 import safety_service_pb2_grpc as safety_grpc
from llamagate.v1 import types_pb2 as types_pb
from services.common.server import GrpcServer, ServerConfig
from services.common.telemetry import TelemetryConfig, setup_telemetry
from services.gateway.tracing import SAFETY_INPUT_SPAN, SAFETY_OUTPUT_SPAN, TURN_SPAN
from services.inference.tracing import DECODE_SPAN, GENERATE_SPAN, PREFILL_SPAN, QUEUE_WAIT_SPAN
from tests.support.two_hop import GENERATED_WORDS, UNSAFE_WORD, Hop, Topology

COMPLETE = "/llamagate.v1.ChatService/Complete"
CHAT = "/llamagate.v1.ChatService/Chat"
CHECK = "/llamagate.v1.SafetyService/Check"
CHECK_STREAM = "/llamagate.v1.SafetyService/CheckStream"
GENERATE = "/llamagate.v1.InferenceService/Generate"


def spans_named(hop: Hop, name: str, kind: SpanKind | None = None) -> list[ReadableSpan]:
    return [s for s in hop.spans.get_finished_spans() if s.name == name and (kind is None or s.kind == kind)]


def one(hop: Hop, name: str, kind: SpanKind | None = None) -> ReadableSpan:
    found = spans_named(hop, name, kind)
    assert len(found) == 1, f"{name}: {[s.name for s in hop.spans.get_finished_spans()]}"
    return found[0]


def parent_of(child: ReadableSpan, candidates: list[ReadableSpan]) -> ReadableSpan:
    assert child.parent is not None, f"{child.name} has no parent"
    (parent,) = [c for c in candidates if c.context.span_id == child.parent.span_id]
    return parent


def assert_child(child: ReadableSpan, parent: ReadableSpan) -> None:
    assert child.parent is not None, f"{child.name} has no parent"
    assert child.context.trace_id == parent.context.trace_id, f"{child.name} is in another trace"
    assert child.parent.span_id == parent.context.span_id, f"{child.name} is not a child of {parent.name}"


async def test_one_trace_spans_client_gateway_safety_and_inference(topology: Topology) -> None:
    with topology.client.telemetry.tracer.start_as_current_span("user-action") as root:
        events = [r.event async for r in topology.chat.Complete(chat_pb.CompleteRequest(prompt="tell me"))]
    assert [e.WhichOneof("event") for e in events] == ["accepted", "delta", "delta", "delta", "done"]
    client, front, back = topology.client, topology.front, topology.back

    client_call = one(client, COMPLETE, SpanKind.CLIENT)
    assert client_call.parent is not None and client_call.parent.span_id == root.get_span_context().span_id
    # Hop 1: client -> front.
    front_server = one(front, COMPLETE, SpanKind.SERVER)
    assert_child(front_server, client_call)
    assert front_server.parent is not None and front_server.parent.is_remote
    turn = one(front, TURN_SPAN)
    assert_child(turn, front_server)
    safety_input = one(front, SAFETY_INPUT_SPAN)
    assert_child(safety_input, turn)
    # Hop 2: front -> back, for the unary safety check and both bidi streams.
    assert_child(one(back, CHECK, SpanKind.SERVER), one(front, CHECK, SpanKind.CLIENT))
    assert_child(one(front, CHECK, SpanKind.CLIENT), safety_input)
    front_generate = one(front, GENERATE, SpanKind.CLIENT)
    assert_child(front_generate, turn)
    back_generate = one(back, GENERATE, SpanKind.SERVER)
    assert_child(back_generate, front_generate)
    assert_child(one(back, CHECK_STREAM, SpanKind.SERVER), one(front, CHECK_STREAM, SpanKind.CLIENT))
    outputs = spans_named(front, SAFETY_OUTPUT_SPAN)
    assert len(outputs) == len(GENERATED_WORDS)
    for chunk in outputs:
        assert_child(chunk, turn)
    # Inside the inference hop: the generate span and its phases.
    generate = one(back, GENERATE_SPAN)
    assert_child(generate, back_generate)
    for phase in (QUEUE_WAIT_SPAN, PREFILL_SPAN, DECODE_SPAN):
        assert_child(one(back, phase), generate)
    assert [e.name for e in generate.events] == ["first_token", "finish"]

    trace_ids = {s.context.trace_id for hop in (client, front, back) for s in hop.spans.get_finished_spans()}
    assert trace_ids == {root.get_span_context().trace_id}


async def test_each_chat_turn_is_its_own_trace_down_to_inference(topology: Topology) -> None:
    async def turns():  # type: ignore[no-untyped-def]
        for text in ("first", "second"):
            yield chat_pb.ChatRequest(turn=chat_pb.ChatTurn(content=text))

    events = [r async for r in topology.chat.Chat(turns())]
    assert [e.WhichOneof("event") for e in events].count("done") == 2
    front, back = topology.front, topology.back
    stream = one(front, CHAT, SpanKind.SERVER)
    turn_spans = spans_named(front, TURN_SPAN)
    assert len(turn_spans) == 2
    assert len({t.context.trace_id for t in turn_spans} | {stream.context.trace_id}) == 3
    for turn in turn_spans:
        assert [link.context.span_id for link in turn.links] == [stream.context.span_id]
        (generate,) = [
            g for g in spans_named(back, GENERATE_SPAN) if g.context.trace_id == turn.context.trace_id
        ]
        back_rpc = parent_of(generate, spans_named(back, GENERATE, SpanKind.SERVER))
        front_rpc = parent_of(back_rpc, spans_named(front, GENERATE, SpanKind.CLIENT))
        assert_child(front_rpc, turn)


async def test_a_domain_error_keeps_its_status_and_is_recorded_on_both_spans(topology: Topology) -> None:
    async with grpc.aio.insecure_channel(
        topology.back.target, interceptors=topology.client.telemetry.client_interceptors()
    ) as channel:
        empty = safety_pb.CheckItem(dialog=types_pb.Dialog(), direction=types_pb.DIRECTION_INPUT)
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await safety_grpc.SafetyServiceStub(channel).Check(safety_pb.CheckRequest(items=[empty]))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "items[0].dialog is empty" in (error.value.details() or "")
    server = one(topology.back, CHECK, SpanKind.SERVER)
    client = one(topology.client, CHECK, SpanKind.CLIENT)
    assert_child(server, client)
    # OpenTelemetry's RPC conventions: a caller's mistake is an error for the client, not the server.
    assert client.status.status_code == StatusCode.ERROR
    assert server.status.status_code == StatusCode.UNSET
    for span in (server, client):
        assert span.attributes is not None
        assert span.attributes["rpc.grpc.status_code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0]


async def test_an_unsafe_prompt_stops_before_inference(topology: Topology) -> None:
    events = [
        r.event async for r in topology.chat.Complete(chat_pb.CompleteRequest(prompt=f"a {UNSAFE_WORD} plan"))
    ]
    assert [e.WhichOneof("event") for e in events] == ["accepted", "safety"]
    assert one(topology.front, SAFETY_INPUT_SPAN)
    assert spans_named(topology.back, GENERATE, SpanKind.SERVER) == []


async def test_health_checks_and_reflection_are_not_traced(topology: Topology) -> None:
    stub = health_pb2_grpc.HealthStub(topology.channel)
    reply = await stub.Check(health_pb2.HealthCheckRequest(service="llamagate.v1.ChatService"))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    for hop in (topology.client, topology.front):
        assert hop.spans.get_finished_spans() == ()


async def test_an_unknown_method_is_still_unimplemented(topology: Topology) -> None:
    call = topology.channel.unary_unary("/llamagate.v1.ChatService/NoSuchMethod")
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await call(b"")
    assert error.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_a_stream_cancelled_after_its_last_reply_ends_its_client_span_at_once(
    topology: Topology, caplog: pytest.LogCaptureFixture
) -> None:
    async with grpc.aio.insecure_channel(
        topology.back.target, interceptors=topology.client.telemetry.client_interceptors()
    ) as channel:
        call = safety_grpc.SafetyServiceStub(channel).CheckStream()
        await call.write(safety_pb.CheckStreamRequest(chunk="a harmless chunk"))
        reply = await call.read()
        assert reply != grpc.aio.EOF and reply.chunk_index == 0
        # What the gateway does when a turn is over: cancel, without reading the stream to its end.
        call.cancel()
        for _ in range(200):  # bounded: at most ~2 s
            if spans_named(topology.client, CHECK_STREAM, SpanKind.CLIENT):
                break
            await asyncio.sleep(0.01)
        client = one(topology.client, CHECK_STREAM, SpanKind.CLIENT)
        assert client.attributes is not None
        assert client.attributes["rpc.grpc.status_code"] == grpc.StatusCode.CANCELLED.value[0]
        # The caller chose to stop: not an error of the call.
        assert client.status.status_code == StatusCode.UNSET
        # Still referenced here, so the span ended because the call ended, not because it was collected.
        assert not call.done() or call.cancelled()
        del call
        gc.collect()
        for _ in range(10):  # let the loop finalize the dropped response stream
            await asyncio.sleep(0)
    assert not [r for r in caplog.records if "ended span" in r.getMessage()], "the span was ended twice"


class _NotesItsTrace(safety_grpc.SafetyServiceServicer):
    def __init__(self) -> None:
        self.seen: list[trace.SpanContext] = []

    async def Check(
        self, request: safety_pb.CheckRequest, context: grpc.aio.ServicerContext
    ) -> safety_pb.CheckResponse:
        self.seen.append(trace.get_current_span().get_span_context())
        return safety_pb.CheckResponse()


async def test_a_server_that_exports_no_spans_serves_each_call_in_its_callers_trace() -> None:
    telemetry = setup_telemetry(TelemetryConfig("back"), start_metrics_server=False)
    server = GrpcServer(ServerConfig(port=0, extra_interceptors=telemetry.server_interceptors()), [])
    servicer = _NotesItsTrace()
    safety_grpc.add_SafetyServiceServicer_to_server(servicer, server.server)
    port = await server.start()
    caller = trace.SpanContext(0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, is_remote=True)
    traceparent = f"00-{caller.trace_id:032x}-{caller.span_id:016x}-01"
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = safety_grpc.SafetyServiceStub(channel)
        await stub.Check(safety_pb.CheckRequest(), metadata=(("traceparent", traceparent),))
        await stub.Check(safety_pb.CheckRequest())
    await server.server.stop(None)
    telemetry.shutdown()
    traced, untraced = servicer.seen
    # The caller's own span: log lines join its trace, and no server span was made to be dropped.
    assert (traced.trace_id, traced.span_id, traced.is_remote) == (caller.trace_id, caller.span_id, True)
    assert not untraced.is_valid  # the first call's trace did not outlive it
