"""Every server ends a client's connection after its maximum age (so `dns:///` round robin finds
replicas added later) and lets calls in flight finish within the grace."""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import AsyncIterator

import grpc
from grpc_health.v1 import health_pb2

from services.common.server import GrpcServer, ServerConfig, add_server_arguments, server_config_from_args

# Any protobuf message will do as the wire type (the servers' interceptor checks messages).
Message = health_pb2.HealthCheckRequest
CODEC = {"request_deserializer": Message.FromString, "response_serializer": Message.SerializeToString}
CLIENT = {"request_serializer": Message.SerializeToString, "response_deserializer": Message.FromString}


async def _peer(request: Message, context: grpc.aio.ServicerContext) -> Message:
    return Message(service=context.peer())


async def _slow(request: Message, context: grpc.aio.ServicerContext) -> AsyncIterator[Message]:
    for _ in range(int(request.service)):
        await asyncio.sleep(0.1)
        yield Message(service=context.peer())


async def start(config: ServerConfig) -> tuple[GrpcServer, str]:
    server = GrpcServer(config, [])
    handler = grpc.method_handlers_generic_handler(
        "test.Peer",
        {
            "Unary": grpc.unary_unary_rpc_method_handler(_peer, **CODEC),
            "Slow": grpc.unary_stream_rpc_method_handler(_slow, **CODEC),
        },
    )
    server.server.add_generic_rpc_handlers((handler,))
    port = await server.start()
    return server, f"127.0.0.1:{port}"


async def peers_seen(target: str, within_s: float, want: int) -> set[str]:
    """The client addresses the server saw over one channel (a new one = a new connection)."""
    peers: set[str] = set()
    deadline = time.monotonic() + within_s
    async with grpc.aio.insecure_channel(target) as channel:
        call = channel.unary_unary("/test.Peer/Unary", **CLIENT)
        while time.monotonic() < deadline and len(peers) < want:
            peers.add((await call(Message(), timeout=5, wait_for_ready=True)).service)
            await asyncio.sleep(0.05)
    return peers


async def test_connections_are_replaced_after_their_maximum_age() -> None:
    server, target = await start(ServerConfig(grace_s=1.0, max_connection_age_s=0.3))
    try:
        peers = await peers_seen(target, within_s=15.0, want=3)
    finally:
        await server.stop()
    assert len(peers) >= 3, f"the client kept one connection: {peers}"


async def test_without_a_maximum_age_one_connection_serves_every_call() -> None:
    server, target = await start(ServerConfig(grace_s=1.0, max_connection_age_s=3600.0))
    try:
        peers = await peers_seen(target, within_s=2.0, want=2)
    finally:
        await server.stop()
    assert len(peers) == 1


async def test_a_stream_outliving_the_age_finishes_within_the_grace() -> None:
    server, target = await start(
        ServerConfig(grace_s=1.0, max_connection_age_s=0.3, max_connection_age_grace_s=20.0)
    )
    try:
        async with grpc.aio.insecure_channel(target) as channel:
            stream = channel.unary_stream("/test.Peer/Slow", **CLIENT)(Message(service="30"), timeout=30)
            messages = [m.service async for m in stream]
            assert await stream.code() == grpc.StatusCode.OK
    finally:
        await server.stop()
    assert len(messages) == 30  # 3 s on a connection whose age was up after 0.3 s
    assert len(set(messages)) == 1


def test_the_flags_default_to_five_minutes_with_a_grace_that_outlasts_long_calls() -> None:
    parser = argparse.ArgumentParser()
    add_server_arguments(parser, 50051)
    config = server_config_from_args(parser.parse_args(["--grace-s", "120"]))
    assert (config.max_connection_age_s, config.max_connection_age_grace_s) == (300.0, 900.0)
    config = server_config_from_args(
        parser.parse_args(["--max-connection-age-s", "60", "--max-connection-age-grace-s", "90"])
    )
    assert (config.max_connection_age_s, config.max_connection_age_grace_s) == (60.0, 90.0)


def test_the_gateway_never_cuts_a_chat_stream_before_its_own_limit() -> None:
    from services.gateway.config import build_parser, config_from_args

    required = ["--inference-target", "x:1", "--safety-target", "x:2", "--api-keys", "k", "--audit-dir", "a"]
    config = config_from_args(build_parser().parse_args(required))
    assert config.server.max_connection_age_grace_s >= config.stream_limits.max_duration_s
    config = config_from_args(build_parser().parse_args([*required, "--max-stream-duration-s", "7200"]))
    assert config.server.max_connection_age_grace_s == 7200
    config = config_from_args(build_parser().parse_args([*required, "--max-connection-age-grace-s", "30"]))
    assert config.server.max_connection_age_grace_s == 30  # an explicit value is kept
