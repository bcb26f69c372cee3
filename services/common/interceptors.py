"""Server interceptors shared by all services.

`ErrorInterceptor` is the one place where domain exceptions become gRPC statuses, and where every
incoming message is checked for fields the contract does not know and for bytes that do not parse.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeAlias

import grpc
from google.protobuf.message import DecodeError
from grpc_status import rpc_status

from services.common.errors import FieldViolation, InvalidRequest, LlamagateError
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


async def _checked_requests(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async for request in requests:
        _check(request)
        yield request


def _wrap_unary_response(behavior: Callable[..., Awaitable[Any]], streaming_request: bool) -> Callable:
    async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            if streaming_request:
                request = _checked_requests(request)
            else:
                _check(request)
            return await behavior(request, context)
        except LlamagateError as error:
            await _abort(context, error)
        except grpc.aio.AbortError:
            raise
        except Exception as error:
            await _abort(context, _internal(error))

    return wrapper


def _wrap_stream_response(behavior: Callable[..., AsyncIterator[Any]], streaming_request: bool) -> Callable:
    async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        try:
            if streaming_request:
                request = _checked_requests(request)
            else:
                _check(request)
            async for response in behavior(request, context):
                yield response
        except LlamagateError as error:
            await _abort(context, error)
        except grpc.aio.AbortError:
            raise
        except Exception as error:
            await _abort(context, _internal(error))

    return wrapper


class ErrorInterceptor(grpc.aio.ServerInterceptor):
    """Rejects undecodable requests and unknown fields; maps LlamagateError subclasses to statuses."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        kinds: dict[tuple[bool, bool], tuple[str, Callable[..., Handler], Callable[..., Callable]]] = {
            (False, False): ("unary_unary", grpc.unary_unary_rpc_method_handler, _wrap_unary_response),
            (True, False): ("stream_unary", grpc.stream_unary_rpc_method_handler, _wrap_unary_response),
            (False, True): ("unary_stream", grpc.unary_stream_rpc_method_handler, _wrap_stream_response),
            (True, True): ("stream_stream", grpc.stream_stream_rpc_method_handler, _wrap_stream_response),
        }
        attr, make_handler, wrap = kinds[(handler.request_streaming, handler.response_streaming)]
        behavior = getattr(handler, attr)
        deserializer = handler.request_deserializer
        if deserializer is not None:
            deserializer = _decoding(deserializer, handler_call_details.method)
        return make_handler(
            wrap(behavior, handler.request_streaming),
            request_deserializer=deserializer,
            response_serializer=handler.response_serializer,
        )
