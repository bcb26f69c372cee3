"""Server interceptors shared by all services.

`ErrorInterceptor` is the one place where domain exceptions become gRPC statuses, and where every
incoming message is checked for fields the contract does not know.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeAlias

import grpc
from grpc_status import rpc_status

from services.common.errors import LlamagateError
from services.common.validation import reject_unknown_fields

log = logging.getLogger(__name__)

Handler: TypeAlias = grpc.RpcMethodHandler


async def _abort(context: grpc.aio.ServicerContext, error: LlamagateError) -> None:
    status = rpc_status.to_status(error.to_status())
    await context.abort(status.code, status.details, status.trailing_metadata)


async def _checked_requests(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async for request in requests:
        reject_unknown_fields(request)
        yield request


def _wrap_unary_response(behavior: Callable[..., Awaitable[Any]], streaming_request: bool) -> Callable:
    async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            if streaming_request:
                request = _checked_requests(request)
            else:
                reject_unknown_fields(request)
            return await behavior(request, context)
        except LlamagateError as error:
            await _abort(context, error)

    return wrapper


def _wrap_stream_response(behavior: Callable[..., AsyncIterator[Any]], streaming_request: bool) -> Callable:
    async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        try:
            if streaming_request:
                request = _checked_requests(request)
            else:
                reject_unknown_fields(request)
            async for response in behavior(request, context):
                yield response
        except LlamagateError as error:
            await _abort(context, error)

    return wrapper


class ErrorInterceptor(grpc.aio.ServerInterceptor):
    """Rejects unknown fields and maps LlamagateError subclasses to their status codes."""

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
        return make_handler(
            wrap(behavior, handler.request_streaming),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
