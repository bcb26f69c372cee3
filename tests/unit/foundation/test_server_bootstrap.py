"""The shared server bootstrap: health, reflection, size limits, unknown fields, graceful stop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pb2
from google.protobuf.unknown_fields import UnknownFieldSet
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status

from llamagate.v1 import types_pb2
from services.common.errors import Unauthenticated
from services.common.interceptors import ErrorInterceptor
from services.common.server import GrpcServer, ServerConfig
from services.common.validation import unknown_field_paths

SERVICE = "llamagate.v1.Test"


@pytest.fixture
async def server() -> AsyncIterator[GrpcServer]:
    config = ServerConfig(port=0, max_message_bytes=64 * 1024, grace_s=1.0, refuse_new_calls_s=0.0)
    srv = GrpcServer(config, [SERVICE])
    await srv.start()
    yield srv
    await srv.stop()


async def health_status(port: int, service: str) -> int:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service)
        )
        return reply.status


async def test_health_is_not_serving_until_ready(server: GrpcServer) -> None:
    assert await health_status(server.port, SERVICE) == health_pb2.HealthCheckResponse.NOT_SERVING
    await server.set_serving(True)
    assert await health_status(server.port, SERVICE) == health_pb2.HealthCheckResponse.SERVING
    assert await health_status(server.port, "") == health_pb2.HealthCheckResponse.SERVING


async def test_reflection_lists_the_service_and_health(server: GrpcServer) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        call = stub.ServerReflectionInfo()
        await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
        reply = await call.read()
        await call.done_writing()
    names = {s.name for s in reply.list_services_response.service}
    assert {SERVICE, "grpc.health.v1.Health"} <= names


async def test_reflection_v1_answers_as_v1alpha_does(server: GrpcServer) -> None:
    """grpc.reflection.v1: the request written as raw bytes (field 7 list_services, then field 4
    file_containing_symbol), the replies read with the wire-identical v1alpha messages."""
    list_services = b"\x3a\x00"
    symbol = b"grpc.health.v1.Health"
    by_symbol = b"\x22" + bytes([len(symbol)]) + symbol
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        info = channel.stream_stream(
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            request_serializer=lambda raw: raw,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )
        replies = [reply async for reply in info(iter([list_services, by_symbol]))]
    names = {s.name for s in replies[0].list_services_response.service}
    assert {SERVICE, "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"} <= names
    assert "grpc.reflection.v1alpha.ServerReflection" in names
    [file_bytes] = replies[1].file_descriptor_response.file_descriptor_proto
    described = descriptor_pb2.FileDescriptorProto.FromString(file_bytes)
    assert described.package == "grpc.health.v1" and [s.name for s in described.service] == ["Health"]


async def test_oversized_message_is_resource_exhausted(server: GrpcServer) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Check(health_pb2.HealthCheckRequest(service="x" * 100_000))
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "larger than max" in (err.value.details() or "")


async def test_unknown_field_is_invalid_argument_naming_the_field(server: GrpcServer) -> None:
    # HealthCheckRequest has only field 1; field 15 (varint 7) is unknown to the server.
    payload = health_pb2.HealthCheckRequest(service=SERVICE).SerializeToString() + bytes([15 << 3, 7])
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        check = channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=lambda raw: raw,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await check(payload)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "#15" in (err.value.details() or "")
    status = rpc_status.from_call(err.value)
    assert status is not None and status.details, "rich BadRequest details are attached"


def test_unknown_fields_are_found_in_nested_messages() -> None:
    inner = types_pb2.Message(content="hi").SerializeToString() + bytes([15 << 3, 1])
    dialog = types_pb2.Dialog.FromString(bytes([(1 << 3) | 2, len(inner)]) + inner)
    assert len(UnknownFieldSet(dialog.messages[0])) == 1
    assert unknown_field_paths(dialog) == ["messages[0].#15"]


async def test_stop_reports_not_serving_and_refuses_new_calls() -> None:
    srv = GrpcServer(ServerConfig(port=0, grace_s=0.5, refuse_new_calls_s=0.1), [SERVICE])
    port = await srv.start()
    await srv.set_serving(True)
    await srv.stop()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


Text = types_pb2.Message


async def _echo(request: Text, context: grpc.aio.ServicerContext) -> Text:
    return request


async def _count(request: Text, context: grpc.aio.ServicerContext) -> AsyncIterator[Text]:
    for i in range(int(request.content)):
        await asyncio.sleep(0.01)
        yield Text(content=str(i))


def _method(kind: str, behavior: object) -> grpc.RpcMethodHandler:
    make = getattr(grpc, f"{kind}_rpc_method_handler")
    return make(behavior, request_deserializer=Text.FromString, response_serializer=Text.SerializeToString)


async def test_the_error_interceptor_wraps_a_methods_handler_once_and_anew_when_it_changes() -> None:
    interceptor = ErrorInterceptor()
    echo, refused = _method("unary_unary", _echo), _method("unary_unary", _count)
    details: Any = SimpleNamespace(method=f"/{SERVICE}/Echo", invocation_metadata=())

    async def finds(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        return await interceptor.intercept_service(lambda _: asyncio.sleep(0, handler), details)

    first = await finds(echo)
    assert first is not echo and await finds(echo) is first
    other = await finds(refused)  # a call's own handler, as a draining server's refusal
    assert other is not first and other.unary_unary is not first.unary_unary
    assert await finds(echo) is not other


async def test_a_draining_server_answers_new_calls_unavailable_and_finishes_calls_in_flight() -> None:
    """Between SIGTERM and the grpc server's stop, a call must not be one grpc core cancels
    (CANCELLED, not retried): it is refused UNAVAILABLE with a reason, health still answers."""
    srv = GrpcServer(ServerConfig(port=0, grace_s=5.0, refuse_new_calls_s=60.0), [SERVICE])
    handlers = {"Echo": _method("unary_unary", _echo), "Count": _method("unary_stream", _count)}
    srv.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    port = await srv.start()
    await srv.set_serving(True)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        kw = {"request_serializer": Text.SerializeToString, "response_deserializer": Text.FromString}
        echo = channel.unary_unary(f"/{SERVICE}/Echo", **kw)
        count = channel.unary_stream(f"/{SERVICE}/Count", **kw)
        assert (await echo(Text(content="hi"))).content == "hi"
        in_flight = count(Text(content="30"))
        assert (await in_flight.read()).content == "0"
        stopping = asyncio.create_task(srv.stop())
        watch = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service=SERVICE), timeout=10
        )
        async for update in watch:
            if update.status == health_pb2.HealthCheckResponse.NOT_SERVING:
                break
        for call in (echo(Text(content="late")), count(Text(content="2")).read()):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await call
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "shutting down" in (err.value.details() or "")
            status = rpc_status.from_call(err.value)
            assert status is not None and b"SERVER_DRAINING" in status.details[0].value
        assert await health_status(port, "") == health_pb2.HealthCheckResponse.NOT_SERVING
        rest = []
        while (reply := await in_flight.read()) != grpc.aio.EOF:
            rest.append(reply.content)
        assert rest == [str(i) for i in range(1, 30)]
        stopping.cancel()
        await srv.server.stop(None)


async def _echo_all(requests: AsyncIterator[Text], context: grpc.aio.ServicerContext) -> AsyncIterator[Text]:
    async for request in requests:
        yield request


async def _count_all(requests: AsyncIterator[Text], context: grpc.aio.ServicerContext) -> Text:
    return Text(content=str(len([request async for request in requests])))


async def _written_late(content: str) -> AsyncIterator[Text]:
    """One request, written once the call is under way and while the loop is busy: the refusal
    reaches the client's core before its write starts and before the loop has read the status."""
    for _ in range(20):
        await asyncio.sleep(0)
    time.sleep(0.02)  # noqa: ASYNC251 - blocking is the point: the loop must not see the status yet
    yield Text(content=content)


DRAINING = "this server is shutting down: retry the call on another replica"


async def _error_of(call: grpc.aio.StreamStreamCall | grpc.aio.StreamUnaryCall) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        if isinstance(call, grpc.aio.StreamStreamCall):
            async for _ in call:
                pass
        else:
            await call
    return error.value


async def test_a_draining_server_refuses_request_streams_unavailable_never_internal() -> None:
    """grpc's asyncio client reports a status that arrives while its first write is pending as
    INTERNAL "Failed execute_batch" (grpc/grpc#36066), which nobody retries: without the wait for a
    first message, about a third of these calls ended INTERNAL."""
    srv = GrpcServer(ServerConfig(port=0, grace_s=1.0, refuse_new_calls_s=60.0), [SERVICE])
    handlers = {
        "EchoAll": _method("stream_stream", _echo_all),
        "CountAll": _method("stream_unary", _count_all),
    }
    srv.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    port = await srv.start()
    await srv.set_serving(True)
    stopping = asyncio.create_task(srv.stop())
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(), timeout=10)
            async for update in watch:
                if update.status == health_pb2.HealthCheckResponse.NOT_SERVING:
                    break
            kw = {"request_serializer": Text.SerializeToString, "response_deserializer": Text.FromString}
            echo_all = channel.stream_stream(f"/{SERVICE}/EchoAll", **kw)
            count_all = channel.stream_unary(f"/{SERVICE}/CountAll", **kw)

            errors = []
            for i in range(30):
                errors.append(await _error_of(echo_all(_written_late(str(i)), timeout=10)))
                errors.append(await _error_of(count_all(_written_late(str(i)), timeout=10)))
            # A client that never writes is still answered, once the wait for a first message ends.
            errors.append(await _error_of(echo_all(timeout=10)))
        assert {(e.code(), e.details()) for e in errors} == {(grpc.StatusCode.UNAVAILABLE, DRAINING)}
    finally:
        stopping.cancel()
        await srv.server.stop(None)


async def _locked(requests: AsyncIterator[Text], context: grpc.aio.ServicerContext) -> AsyncIterator[Text]:
    raise Unauthenticated("missing API key: send 'authorization: Bearer <key>'", reason="API_KEY_MISSING")
    yield Text()


async def test_a_request_stream_failed_before_its_first_read_keeps_its_status(server: GrpcServer) -> None:
    """The gateway's Chat checks the API key before reading: the caller must see UNAUTHENTICATED."""
    locked = {"Locked": _method("stream_stream", _locked)}
    server.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, locked),))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        kw = {"request_serializer": Text.SerializeToString, "response_deserializer": Text.FromString}
        call = channel.stream_stream(f"/{SERVICE}/Locked", **kw)
        errors = [await _error_of(call(_written_late(str(i)), timeout=10)) for i in range(30)]
    assert {e.code() for e in errors} == {grpc.StatusCode.UNAUTHENTICATED}
