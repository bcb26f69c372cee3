"""Server interceptors shared by all services.

`ErrorInterceptor` is the one place where domain exceptions become gRPC statuses, and where every
incoming message is checked for fields the contract does not know and for bytes that do not parse.
`ClosingStreamsInterceptor`, outermost, makes a cancelled response stream unwind in its own task.
`RefusingInterceptor`, innermost, answers new calls UNAVAILABLE while the server drains.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeAlias

import grpc
from google.protobuf.message import DecodeError
from grpc_status import rpc_status

from services.common.errors import FieldViolation, InvalidRequest, LlamagateError, Unavailable
from services.common.validation import reject_unknown_fields

log = logging.getLogger(__name__)

Handler: TypeAlias = grpc.RpcMethodHandler


async def _abort(context: grpc.aio.ServicerContext, error: LlamagateError) -> None:
    status = rpc_status.to_status(error.to_status())
    await context.abort(status.code, status.details, status.trailing_metadata)


def _internal(error: Exception) -> LlamagateError:
    """A bug, not a request error: logged with its traceback; the caller gets INTERNAL with
    ErrorInfo (grpc's own UNKNOWN would carry no details)."""
    log.error("unexpected error in a call", exc_info=error)
    return LlamagateError(f"internal error ({type(error).__name__}); it was logged on the server")


@dataclass(frozen=True)
class _Undecodable:
    """Stands in for a request whose bytes did not parse.

    grpc calls the deserializer outside the handler, where an exception becomes UNKNOWN with a
    traceback in the log; handing this marker to the handler lets the call end INVALID_ARGUMENT.
    """

    message_type: str
    reason: str

    def error(self) -> InvalidRequest:
        return InvalidRequest(
            f"the request is not a valid {self.message_type}: {self.reason} "
            "(send a message serialized from the llamagate.v1 protos; string fields must be UTF-8)",
            # The message as a whole: which field broke the parse is not known.
            [FieldViolation("", f"not a valid {self.message_type}: {self.reason}")],
            reason="UNDECODABLE_REQUEST",
        )


def _decoding(deserialize: Callable[[bytes], Any], method: str) -> Callable[[bytes], Any]:
    owner = getattr(deserialize, "__self__", None)
    descriptor = getattr(owner, "DESCRIPTOR", None)
    message_type = descriptor.full_name if descriptor is not None else f"request of {method}"

    def wrapper(raw: bytes) -> Any:
        try:
            return deserialize(raw)
        except DecodeError as error:
            # upb's text is "Error parsing message with type 'X': <reason>"; keep the reason.
            return _Undecodable(message_type, str(error).rsplit(": ", 1)[-1])

    return wrapper


def _check(request: Any) -> None:
    if isinstance(request, _Undecodable):
        raise request.error()
    reject_unknown_fields(request)


# How long a call that fails before reading its request stream waits for the first message.
_FIRST_MESSAGE_WAIT_S = 1.0


class _CheckedRequests:
    """A request stream whose messages are checked as they are read.

    It also knows whether any read began: grpc's asyncio client reports a status that arrives
    while its first write is still pending as INTERNAL "Failed execute_batch" instead of the
    server's (grpc/grpc#36066), so a call that fails before reading (refused while draining, a bad
    API key, a classifier not loaded yet) waits, bounded, for the first message before its status
    goes out. Otherwise a retryable UNAVAILABLE can reach the caller as an INTERNAL nobody retries.
    """

    def __init__(self, requests: AsyncIterator[Any]) -> None:
        self._requests = requests
        self._read_began = False

    def __aiter__(self) -> _CheckedRequests:
        return self

    async def __anext__(self) -> Any:
        self._read_began = True
        request = await anext(self._requests)
        _check(request)
        return request

    async def let_first_message_land(self) -> None:
        if self._read_began:
            return  # a read is under way or done: the client's first write has gone out or will
        # Whatever the read brings (a message, the end, an undecodable message, a timeout), the
        # call ends with the error already in hand.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.__anext__(), _FIRST_MESSAGE_WAIT_S)


async def _abort_after_first_message(
    context: grpc.aio.ServicerContext, error: LlamagateError, requests: _CheckedRequests | None
) -> None:
    if requests is not None:
        await requests.let_first_message_land()
    await _abort(context, error)


def _wrap_unary_response(behavior: Callable[..., Awaitable[Any]], streaming_request: bool) -> Callable:
    async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> Any:
        requests = _CheckedRequests(request) if streaming_request else None
        try:
            if requests is None:
                _check(request)
            return await behavior(request if requests is None else requests, context)
        except LlamagateError as error:
            await _abort_after_first_message(context, error, requests)
        except grpc.aio.AbortError:
            raise
        except Exception as error:
            await _abort_after_first_message(context, _internal(error), requests)

    return wrapper


def _wrap_stream_response(
    behavior: Callable[..., AsyncGenerator[Any, None] | Awaitable[None]], streaming_request: bool
) -> Callable:
    async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> AsyncGenerator[Any, None]:
        requests = _CheckedRequests(request) if streaming_request else None
        try:
            if requests is None:
                _check(request)
            responses = behavior(request if requests is None else requests, context)
            if not isinstance(responses, AsyncGenerator):
                # A handler that writes its responses itself (grpcio-health-checking's Watch).
                await responses
                return
            # Closed by the call's task (ClosingStreamsInterceptor), not here: the layer above may
            # drop this generator unclosed, and its finalizer runs in a task of its own.
            async for response in close_with_the_call(responses):
                yield response
        except LlamagateError as error:
            await _abort_after_first_message(context, error, requests)
        except grpc.aio.AbortError:
            raise
        except Exception as error:
            await _abort_after_first_message(context, _internal(error), requests)

    return wrapper


# (request streaming, response streaming) -> the handler's behaviour attribute and its factory.
_KINDS: dict[tuple[bool, bool], tuple[str, Callable[..., Handler]]] = {
    (False, False): ("unary_unary", grpc.unary_unary_rpc_method_handler),
    (True, False): ("stream_unary", grpc.stream_unary_rpc_method_handler),
    (False, True): ("unary_stream", grpc.unary_stream_rpc_method_handler),
    (True, True): ("stream_stream", grpc.stream_stream_rpc_method_handler),
}


def _kind(handler: Handler) -> tuple[str, Callable[..., Handler]]:
    return _KINDS[(handler.request_streaming, handler.response_streaming)]


def _checked(handler: Handler, method: str) -> Handler:
    attr, make_handler = _kind(handler)
    wrap = _wrap_stream_response if handler.response_streaming else _wrap_unary_response
    deserializer = handler.request_deserializer
    if deserializer is not None:
        deserializer = _decoding(deserializer, method)
    return make_handler(
        wrap(getattr(handler, attr), handler.request_streaming),
        request_deserializer=deserializer,
        response_serializer=handler.response_serializer,
    )


class ErrorInterceptor(grpc.aio.ServerInterceptor):
    """Rejects undecodable requests and unknown fields; maps LlamagateError subclasses to statuses."""

    def __init__(self) -> None:
        # Method -> the handler found for it and its checked wrapper, made once: the registered
        # handlers do not change, and a call's own handler (a refusal) simply replaces the entry.
        self._checked: dict[str, tuple[Handler, Handler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        found = self._checked.get(method)
        if found is not None and found[0] is handler:
            return found[1]
        checked = _checked(handler, method)
        self._checked[method] = (handler, checked)
        return checked


# The response streams of the call running in this task, for `ClosingStreamsInterceptor` to close.
_streams_to_close: ContextVar[list[AsyncGenerator[Any, None]] | None] = ContextVar(
    "llamagate_streams_to_close", default=None
)


def close_with_the_call(stream: AsyncGenerator[Any, None]) -> AsyncGenerator[Any, None]:
    """Have the call's `ClosingStreamsInterceptor` close `stream` in the call's task when it ends.

    For a stream iterated by a layer that does not close what it iterates (the tracing
    interceptor's `async for`): dropped there, it would be closed later by the finalizer, elsewhere.
    """
    streams = _streams_to_close.get()
    if streams is not None:
        streams.append(stream)
    return stream


def _written_in_its_own_task(behavior: Callable[..., AsyncGenerator[Any, None]]) -> Callable:
    async def handler(request: Any, context: grpc.aio.ServicerContext) -> None:
        streams: list[AsyncGenerator[Any, None]] = []
        token = _streams_to_close.set(streams)
        try:
            async with contextlib.aclosing(behavior(request, context)) as responses:
                async for response in responses:
                    await context.write(response)
        finally:
            for stream in streams:
                await stream.aclose()
            _streams_to_close.reset(token)

    return handler


class ClosingStreamsInterceptor(grpc.aio.ServerInterceptor):
    """Serves each response stream from a coroutine that writes what the handler's async generator
    yields, and closes that generator, and every stream handed to `close_with_the_call`, when the
    call ends, in the call's own task.

    grpc.aio iterates a generator handler itself: when the client cancels while a message is being
    sent, the generator is left suspended and closed later by the async generator finalizer, in a
    new task with a copy of the context. Every `with` inside it then exits in a foreign context:
    OpenTelemetry's server span fails to detach its context ("Failed to detach context", an ERROR
    with a traceback) and a context variable's reset raises ("created in a different Context").
    The tracing interceptor's own generator does the same to the one it iterates, hence the
    registry. Closed here, a cancel unwinds where it was entered. Register it first (outermost).
    """

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        handler = await continuation(handler_call_details)
        if handler is None or not handler.response_streaming:
            return handler
        if handler.request_streaming:
            return grpc.stream_stream_rpc_method_handler(
                _written_in_its_own_task(handler.stream_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return grpc.unary_stream_rpc_method_handler(
            _written_in_its_own_task(handler.unary_stream),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


# Health must keep answering (NOT_SERVING) while new calls are refused, and reflection is harmless.
_ALWAYS_SERVED = ("/grpc.health.", "/grpc.reflection.")
_DRAINING = "this server is shutting down: retry the call on another replica"


async def _refuse(request: Any, context: grpc.aio.ServicerContext) -> Any:
    raise Unavailable(_DRAINING, reason="SERVER_DRAINING")


async def _refuse_stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncGenerator[Any, None]:
    raise Unavailable(_DRAINING, reason="SERVER_DRAINING")
    yield  # a generator, as ErrorInterceptor expects of response streams


class RefusingInterceptor(grpc.aio.ServerInterceptor):
    """While `refusing()` is true, new calls (all but health and reflection) end UNAVAILABLE.

    A server that stops lets grpc core cancel every call that has arrived but not yet reached a
    handler, and that caller sees CANCELLED (grpc/grpc#41785), which clients do not retry. Refused
    here first, for a while before the stop, a caller that missed the NOT_SERVING health status
    gets a retryable UNAVAILABLE instead. Register it innermost, so ErrorInterceptor maps the error.
    """

    def __init__(self, refusing: Callable[[], bool]) -> None:
        self._refusing = refusing

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        handler = await continuation(handler_call_details)
        if handler is None or not self._refusing() or handler_call_details.method.startswith(_ALWAYS_SERVED):
            return handler
        _, make_handler = _kind(handler)
        return make_handler(
            _refuse_stream if handler.response_streaming else _refuse,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
