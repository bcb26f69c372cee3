"""The ChatService edge on a real grpc.aio server, with scripted backends behind the pipeline."""

import asyncio

import grpc
import pytest

from llamagate.v1 import chat_service_pb2 as chat_pb
from llamagate.v1 import chat_service_pb2_grpc as chat_grpc
from llamagate.v1 import types_pb2
from services.common.server import GrpcServer, ServerConfig
from services.gateway.audit import AuditSink
from services.gateway.auth import parse_api_keys
from services.gateway.chat_turns import StreamLimits
from services.gateway.moderation import ModerationConfig
from services.gateway.pipeline import PipelineConfig, ReplyPipeline
from services.gateway.ratelimit import RateLimiter
from services.gateway.servicer import ChatServicer
from tests.support.status_details import error_info_of, violations_of
from tests.unit.gateway.scripted_backends import ScriptedGeneration, ScriptedInference, ScriptedSafety

KEY = (("authorization", "Bearer k"),)


@pytest.fixture
async def gateway(tmp_path):
    inference = ScriptedInference(ScriptedGeneration(["One.", " Two.", " Three."]))
    safety = ScriptedSafety()
    pipeline = ReplyPipeline(
        PipelineConfig(moderation=ModerationConfig(chunk_tokens=4)), inference, safety, AuditSink(tmp_path)
    )
    server = GrpcServer(ServerConfig(), ["llamagate.v1.ChatService"])
    keys = parse_api_keys({"tenants": {"t": {"keys": [{"plain": "k"}]}}})
    chat_grpc.add_ChatServiceServicer_to_server(ChatServicer(pipeline, keys, RateLimiter()), server.server)
    port = await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield chat_grpc.ChatServiceStub(channel), inference
    await server.server.stop(0)


def start(content: str) -> chat_pb.ChatRequest:
    return chat_pb.ChatRequest(
        start=chat_pb.ChatStart(messages=[types_pb2.Message(role=types_pb2.ROLE_USER, content=content)])
    )


def turn(content: str) -> chat_pb.ChatRequest:
    return chat_pb.ChatRequest(turn=chat_pb.ChatTurn(content=content))


async def read_reply(call) -> list[chat_pb.ChatResponse]:
    events = []
    while True:
        event = await call.read()
        assert event is not grpc.aio.EOF
        events.append(event)
        if event.HasField("done"):
            return events


async def test_two_turns_on_one_stream(gateway):
    stub, inference = gateway
    call = stub.Chat(metadata=KEY, timeout=10)
    await call.write(start("hello"))
    first = await read_reply(call)
    await call.write(turn("again"))
    second = await read_reply(call)
    await call.done_writing()
    assert await call.read() is grpc.aio.EOF
    assert "".join(e.delta.text for e in first if e.HasField("delta")) == "One. Two. Three."
    assert second[-1].done.finish_reason == types_pb2.FINISH_REASON_STOP
    assert [m.content for m in inference.requests[1].dialog] == ["hello", "One. Two. Three.", "again"]


async def test_cancel_and_turn_while_streaming(gateway):
    stub, inference = gateway
    inference.generation.hang_after = 1
    call = stub.Chat(metadata=KEY, timeout=10)
    await call.write(start("hello"))
    while not (await call.read()).HasField("delta"):
        pass
    await call.write(chat_pb.ChatRequest(cancel=chat_pb.ChatCancel()))
    events = await read_reply(call)
    assert events[-1].done.finish_reason == types_pb2.FINISH_REASON_CANCELLED
    assert inference.generation.cancelled

    await call.write(turn("more"))  # the next generation hangs too: send a turn while it streams
    while not (await call.read()).HasField("delta"):
        pass
    await call.write(turn("sent ahead"))  # queued behind the reply in flight
    await call.write(chat_pb.ChatRequest(cancel=chat_pb.ChatCancel()))
    events = await read_reply(call)
    assert events[-1].done.finish_reason == types_pb2.FINISH_REASON_CANCELLED
    # The queued turn is answered next, on the dialog as the cancelled reply left it.
    queued = await call.read()
    assert queued.HasField("accepted") and queued.accepted.request_id != events[-1].done.request_id
    while not (await call.read()).HasField("delta"):
        pass
    assert [m.content for m in inference.requests[-1].dialog][-3:] == ["more", "One.", "sent ahead"]
    call.cancel()


async def test_turns_past_the_queue_bound_end_the_stream_resource_exhausted(gateway):
    stub, inference = gateway
    inference.generation.hang_after = 1
    call = stub.Chat(metadata=KEY, timeout=10)
    await call.write(start("hello"))
    for i in range(StreamLimits().max_queued_turns + 1):
        await call.write(turn(f"ahead {i}"))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        while True:
            await call.read()
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error_info_of(info.value).reason == "TURN_QUEUE_FULL"
    await asyncio.sleep(0)
    assert inference.generations[-1].closed  # the failed stream's generation was dropped


async def test_client_disconnect_closes_the_generation(gateway):
    stub, inference = gateway
    inference.generation.hang_after = 1
    call = stub.Chat(metadata=KEY, timeout=10)
    await call.write(start("hello"))
    while not (await call.read()).HasField("delta"):
        pass
    call.cancel()
    for _ in range(100):  # bounded: the server notices the cancel within a few loop turns
        if inference.generation.closed:
            break
        await asyncio.sleep(0.01)
    assert inference.generation.closed


async def test_wrong_key_is_unauthenticated(gateway):
    stub, _ = gateway
    call = stub.Chat(metadata=(("authorization", "Bearer nope"),), timeout=10)
    # The gateway refuses the stream from its metadata alone, before reading a message. A write racing that
    # refusal fails locally and grpc then reports INTERNAL instead of the server's status, so only read.
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call.read()
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error_info_of(info.value).reason == "API_KEY_INVALID"


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (start(""), "start.messages[0].content"),
        (start("   "), "start.messages[0].content"),
        (
            chat_pb.ChatRequest(
                start=chat_pb.ChatStart(
                    system_prompt="<<SYS>>",
                    messages=[types_pb2.Message(role=types_pb2.ROLE_USER, content="hi")],
                )
            ),
            "start.system_prompt",
        ),
        (chat_pb.ChatRequest(), "action"),
    ],
)
async def test_bad_chat_requests_name_the_clients_field(gateway, request_, field):
    stub, inference = gateway
    call = stub.Chat(metadata=KEY, timeout=10)
    await call.write(request_)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call.read()
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in violations_of(info.value)] == [field]
    assert inference.requests == []  # nothing generated


async def test_an_empty_complete_prompt_and_turn_follow_the_same_rule(gateway):
    stub, _ = gateway
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _ in stub.Complete(chat_pb.CompleteRequest(prompt=" "), metadata=KEY, timeout=10):
            pass
    assert [f for f, _ in violations_of(info.value)] == ["prompt"]
    call = stub.Chat(metadata=KEY, timeout=10)
    await call.write(start("hello"))
    await read_reply(call)
    await call.write(turn("\n"))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call.read()
    assert [f for f, _ in violations_of(info.value)] == ["turn.content"]


async def test_a_turn_before_the_start_is_failed_precondition_with_its_reason(gateway):
    stub, _ = gateway
    call = stub.Chat(metadata=KEY, timeout=10)
    await call.write(turn("hi"))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call.read()
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_info_of(info.value).reason == "CONVERSATION_NOT_STARTED"
