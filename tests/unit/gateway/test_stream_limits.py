"""The gateway's per-stream limits and the undecodable-request status, on a real grpc.aio server
with scripted backends (the end-to-end versions are in tests/reliability/)."""

import asyncio
import time
from collections.abc import AsyncIterator

import grpc
import pytest

from llamagate.v1 import chat_service_pb2 as chat_pb
from llamagate.v1 import chat_service_pb2_grpc as chat_grpc
from llamagate.v1 import types_pb2
from services.common.server import GrpcServer, ServerConfig
from services.gateway.audit import AuditSink
from services.gateway.auth import parse_api_keys
from services.gateway.chat_turns import StreamLimits
from services.gateway.config import build_parser, config_from_args
from services.gateway.moderation import ModerationConfig
from services.gateway.pipeline import PipelineConfig, ReplyPipeline
from services.gateway.ratelimit import RateLimiter
from services.gateway.servicer import ChatServicer
from tests.unit.gateway.scripted_backends import ScriptedGeneration, ScriptedInference, ScriptedSafety

KEY = (("authorization", "Bearer k"),)
Gateway = tuple[grpc.aio.Channel, ScriptedInference]


async def _serve(tmp_path, limits: StreamLimits) -> AsyncIterator[Gateway]:  # type: ignore[no-untyped-def]
    inference = ScriptedInference(ScriptedGeneration(["One.", " Two."]))
    pipeline = ReplyPipeline(
        PipelineConfig(moderation=ModerationConfig(chunk_tokens=4)),
        inference,
        ScriptedSafety(),
        AuditSink(tmp_path),
    )
    server = GrpcServer(ServerConfig(), ["llamagate.v1.ChatService"])
    keys = parse_api_keys({"tenants": {"t": {"keys": [{"plain": "k"}]}}})
    servicer = ChatServicer(pipeline, keys, RateLimiter(), limits=limits)
    chat_grpc.add_ChatServiceServicer_to_server(servicer, server.server)
    port = await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield channel, inference
    await server.server.stop(0)


@pytest.fixture
async def limited(request, tmp_path):  # type: ignore[no-untyped-def]
    async for gateway in _serve(tmp_path, request.param):
        yield gateway


def start(content: str = "hello") -> chat_pb.ChatRequest:
    return chat_pb.ChatRequest(
        start=chat_pb.ChatStart(messages=[types_pb2.Message(role=types_pb2.ROLE_USER, content=content)])
    )


async def read_reply(call: grpc.aio.StreamStreamCall) -> None:
    while not (await call.read()).HasField("done"):
        pass


@pytest.mark.parametrize("limited", [StreamLimits(max_turns=2)], indirect=True)
async def test_the_turn_after_max_turns_is_resource_exhausted(limited: Gateway) -> None:
    call = chat_grpc.ChatServiceStub(limited[0]).Chat(metadata=KEY, timeout=10)
    await call.write(start())
    await read_reply(call)
    await call.write(chat_pb.ChatRequest(turn=chat_pb.ChatTurn(content="again")))
    await read_reply(call)
    await call.write(chat_pb.ChatRequest(turn=chat_pb.ChatTurn(content="third")))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call.read()
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "--max-turns 2" in (info.value.details() or "")


@pytest.mark.parametrize("limited", [StreamLimits(idle_timeout_s=0.3)], indirect=True)
async def test_a_client_silent_between_turns_is_cut_at_the_idle_timeout(limited: Gateway) -> None:
    call = chat_grpc.ChatServiceStub(limited[0]).Chat(metadata=KEY)
    await call.write(start())
    await read_reply(call)
    waited = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call.read()
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "--stream-idle-timeout-s 0.3" in (info.value.details() or "")
    assert 0.2 <= time.monotonic() - waited < 5


@pytest.mark.parametrize("limited", [StreamLimits(idle_timeout_s=0.3)], indirect=True)
async def test_the_idle_timeout_does_not_cut_a_reply_in_progress(limited: Gateway) -> None:
    channel, inference = limited
    inference.generation.hang_after = 1  # the reply stalls (slow generation), the client waits
    call = chat_grpc.ChatServiceStub(channel).Chat(metadata=KEY)
    await call.write(start())
    await asyncio.sleep(1.0)
    await call.write(chat_pb.ChatRequest(cancel=chat_pb.ChatCancel()))
    while not (event := await call.read()).HasField("done"):
        pass
    assert event.done.finish_reason == types_pb2.FINISH_REASON_CANCELLED
    call.cancel()


@pytest.mark.parametrize("limited", [StreamLimits(max_duration_s=0.5)], indirect=True)
async def test_a_stream_is_cut_at_its_max_duration_even_mid_reply(limited: Gateway) -> None:
    channel, inference = limited
    inference.generation.hang_after = 1
    call = chat_grpc.ChatServiceStub(channel).Chat(metadata=KEY)
    opened = time.monotonic()
    await call.write(start())
    with pytest.raises(grpc.aio.AioRpcError) as info:
        while True:
            await call.read()
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "--max-stream-duration-s 0.5" in (info.value.details() or "")
    assert 0.4 <= time.monotonic() - opened < 5
    assert inference.generation.closed or inference.generation.cancelled


@pytest.mark.parametrize("limited", [StreamLimits()], indirect=True)
async def test_undecodable_request_bytes_are_invalid_argument(limited: Gateway) -> None:
    # A ChatTurn whose content (a proto3 string) is not UTF-8: the client library cannot build it.
    raw = b"\x12\x03\x0a\x01\xff"
    chat = limited[0].stream_stream(
        "/llamagate.v1.ChatService/Chat",
        request_serializer=lambda b: b,
        response_deserializer=chat_pb.ChatResponse.FromString,
    )
    call = chat(metadata=KEY, timeout=10)
    await call.write(raw)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call.read()
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid llamagate.v1.ChatRequest" in (info.value.details() or "")
    assert "UTF-8" in (info.value.details() or "")


def test_limits_come_from_the_command_line() -> None:
    required = ["--inference-target", "i", "--safety-target", "s", "--api-keys", "k", "--audit-dir", "a"]
    limits = ["--max-turns", "3", "--stream-idle-timeout-s", "2", "--max-stream-duration-s", "9"]
    limits += ["--max-queued-turns", "4"]
    assert config_from_args(build_parser().parse_args(required + limits)).stream_limits == StreamLimits(
        3, 2.0, 9.0, 4
    )
    assert config_from_args(build_parser().parse_args(required)).stream_limits == StreamLimits()
    with pytest.raises(SystemExit, match="--max-turns"):
        config_from_args(build_parser().parse_args([*required, "--max-turns", "0"]))


@pytest.mark.parametrize("limited", [StreamLimits(max_duration_s=0.5)], indirect=True)
async def test_a_client_that_stops_reading_is_cut_at_the_max_duration(limited: Gateway) -> None:
    channel, inference = limited
    # Megabytes of reply, far past the HTTP/2 flow-control window, and a client that never reads.
    inference.generation.deltas = ["x" * 2000 + ". "] * 3000
    call = chat_grpc.ChatServiceStub(channel).Chat(metadata=KEY)
    await call.write(start())
    for _ in range(100):  # bounded poll (10 s) of the scripted generation's state
        if inference.generation.closed:
            break
        await asyncio.sleep(0.1)
    assert inference.generation.closed, "the generation of an unread stream outlived the stream limit"
    with pytest.raises(grpc.aio.AioRpcError) as info:
        while True:
            await call.read()
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
