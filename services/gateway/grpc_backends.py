"""The backends over gRPC: channels with client-side round robin and TLS, errors mapped to the
domain vocabulary (a failing safety service is always Unavailable: the gateway fails closed)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, Sequence
from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2

from llamagate.v1 import (
    inference_service_pb2 as inf_pb,
)
from llamagate.v1 import (
    inference_service_pb2_grpc as inf_grpc,
)
from llamagate.v1 import (
    safety_service_pb2 as safety_pb,
)
from llamagate.v1 import (
    safety_service_pb2_grpc as safety_grpc,
)
from llamagate.v1 import (
    types_pb2,
)
from services.common.convert import direction_to_pb, messages_to_pb, verdict_from_pb
from services.common.dialog import Message
from services.common.errors import (
    DeadlineExceeded,
    InvalidRequest,
    LlamagateError,
    Overloaded,
    PromptTooLong,
    Unavailable,
)
from services.common.tls import ClientTls, channel_credentials, channel_options
from services.common.verdicts import Direction, Verdict
from services.gateway.backends import (
    FinishReason,
    GenerationDelta,
    GenerationDone,
    GenerationEvent,
    GenerationRequest,
    GenerationStarted,
)

# Several replicas behind one DNS name: resolve all addresses and spread calls over them.
_ROUND_ROBIN = json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})
_FINISH_FROM_PB = {
    types_pb2.FINISH_REASON_STOP: FinishReason.STOP,
    types_pb2.FINISH_REASON_LENGTH: FinishReason.LENGTH,
    types_pb2.FINISH_REASON_SAFETY: FinishReason.SAFETY,
    types_pb2.FINISH_REASON_CANCELLED: FinishReason.CANCELLED,
}


def open_channel(
    target: str, tls: ClientTls | None, interceptors: Sequence[grpc.aio.ClientInterceptor] = ()
) -> grpc.aio.Channel:
    options: list[tuple[str, str | int]] = [
        ("grpc.service_config", _ROUND_ROBIN),
        ("grpc.lb_policy_name", "round_robin"),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        *channel_options(tls),
    ]
    if tls is None:
        return grpc.aio.insecure_channel(target, options=options, interceptors=interceptors)
    return grpc.aio.secure_channel(
        target, channel_credentials(tls), options=options, interceptors=interceptors
    )


def _safety_error(error: grpc.aio.AioRpcError | asyncio.TimeoutError, timeout_s: float | None) -> Unavailable:
    if isinstance(error, asyncio.TimeoutError):
        reason = f"did not answer within {timeout_s:g}s"
    else:
        reason = f"failed with {error.code().name}: {error.details()}"
    return Unavailable(f"the safety service {reason}; no unchecked text was released, retry later")


def _status_details(error: grpc.aio.AioRpcError) -> list[Any]:
    """The google.rpc.Status details the backend attached (packed Any messages)."""
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            return list(status_pb2.Status.FromString(value).details)
    return []


def _retry_after(error: grpc.aio.AioRpcError, default_s: float = 1.0) -> float:
    """The backend's RetryInfo delay, passed on to the client (default when it sent none)."""
    for detail in _status_details(error):
        info = error_details_pb2.RetryInfo()
        if detail.Unpack(info):
            return info.retry_delay.ToTimedelta().total_seconds()
    return default_s


def _prompt_too_long(error: grpc.aio.AioRpcError) -> PromptTooLong | None:
    """The inference service's PROMPT_TOO_LONG with its numbers; the caller names its own field."""
    for detail in _status_details(error):
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info) and (numbers := PromptTooLong.numbers(info)) is not None:
            return PromptTooLong("prompt", *numbers, "shorten the prompt")
    return None


def _inference_error(error: grpc.aio.AioRpcError) -> LlamagateError:
    code, details = error.code(), error.details() or ""
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return _prompt_too_long(error) or InvalidRequest(details)
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return Overloaded(
            f"the inference service is overloaded: {details}", retry_after_s=_retry_after(error)
        )
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return DeadlineExceeded(f"the request's deadline passed during generation: {details}")
    if code == grpc.StatusCode.CANCELLED:
        # The gateway cancels with a GenerateCancel message (the reply then ends with a done
        # event) or by abandoning the call (nobody reads this then), so a CANCELLED status here
        # means the server dropped the call, e.g. while shutting down. To the client that is a
        # backend going away, retryable; CANCELLED is reserved for the client's own cancel.
        return Unavailable(f"the inference service dropped the generation ({details}); retry")
    return Unavailable(f"the inference service failed with {code.name}: {details}")


class _RequestStream:
    """Requests of one client-streaming call, fed from a queue.

    The call consumes this iterator in grpc's own task; `end()` finishes it, so that task ends
    with the call whether the server or the gateway ended the call first.
    """

    def __init__(self) -> None:
        self._queue: asyncio.Queue[Any] = asyncio.Queue()

    def send(self, request: Any) -> None:
        self._queue.put_nowait(request)

    def end(self) -> None:
        self._queue.put_nowait(None)

    async def __aiter__(self) -> AsyncGenerator[Any, None]:
        while (request := await self._queue.get()) is not None:
            yield request


class GrpcGeneration:
    """One Generate call: opened at once (headers sent, the server's handler set up), its
    GenerateStart sent by start(). The call's deadline is set when it opens."""

    def __init__(self, stub: inf_grpc.InferenceServiceStub, timeout_s: float | None) -> None:
        # The request stream stays open until close(): per the contract, closing it cancels.
        self._requests = _RequestStream()
        self._call = stub.Generate(self._requests, timeout=timeout_s)

    def start(self, request: GenerationRequest) -> GrpcGeneration:
        start = inf_pb.GenerateStart(
            request_id=request.request_id, sampling=request.sampling.to_pb(), echo=request.echo
        )
        if request.dialog is not None:
            start.dialog.messages.extend(messages_to_pb(request.dialog))
        else:
            start.prompt = request.prompt or ""
        self._requests.send(inf_pb.GenerateRequest(start=start))
        return self

    async def events(self) -> AsyncGenerator[GenerationEvent, None]:
        try:
            while True:
                message = await self._call.read()
                if message is grpc.aio.EOF:
                    raise Unavailable("the inference service ended the generation without a done event")
                kind = message.WhichOneof("event")
                if kind == "started":
                    yield GenerationStarted(message.started.request_id, message.started.prompt_tokens)
                elif kind == "delta":
                    d = message.delta
                    yield GenerationDelta(d.text, list(d.token_ids), list(d.logprobs), d.echo)
                elif kind == "done":
                    reason = _FINISH_FROM_PB.get(message.done.finish_reason, FinishReason.STOP)
                    usage = message.done.usage
                    # The server ends the stream right after done; reading that end closes the
                    # call's client trace span now rather than when the call is collected.
                    await self._call.read()
                    yield GenerationDone(
                        reason, usage.prompt_tokens, usage.completion_tokens, usage.cached_prompt_tokens
                    )
                    return
        except grpc.aio.AioRpcError as error:
            raise _inference_error(error) from None

    async def cancel(self) -> None:
        if not self._call.done():
            self._requests.send(inf_pb.GenerateRequest(cancel=inf_pb.GenerateCancel()))

    def close(self) -> None:
        self._requests.end()
        self._call.cancel()


class GrpcInference:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = inf_grpc.InferenceServiceStub(channel)

    def open(self, timeout_s: float | None) -> GrpcGeneration:
        return GrpcGeneration(self._stub, timeout_s)


class GrpcOutputCheck:
    def __init__(
        self, stub: safety_grpc.SafetyServiceStub, context: Sequence[Message], timeout_s: float | None
    ) -> None:
        self._stub = stub
        self._context = types_pb2.Dialog(messages=messages_to_pb(context))
        self._timeout_s = timeout_s
        self._requests = _RequestStream()
        # Opened now (the pipeline asks for it once the input is judged safe), so the stream and
        # its context are in place before the first chunk: one round trip less on the first token.
        self._requests.send(safety_pb.CheckStreamRequest(context=self._context))
        self._call: grpc.aio.StreamStreamCall = self._stub.CheckStream(
            self._requests, timeout=self._timeout_s
        )
        self._index = 0

    async def _exchange(self, text: str) -> safety_pb.CheckStreamResponse:
        self._requests.send(safety_pb.CheckStreamRequest(chunk=text))
        reply = await self._call.read()
        if reply is grpc.aio.EOF:
            raise Unavailable(
                "the safety service closed the output check stream; nothing unchecked was released"
            )
        return reply

    async def check_chunk(self, text: str, timeout_s: float) -> Verdict:
        try:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for loses a cancel that lands as the
            # exchange completes, and a reply whose client left then ran on to its last token.
            async with asyncio.timeout(timeout_s):
                reply = await self._exchange(text)
        except (TimeoutError, grpc.aio.AioRpcError) as error:
            raise _safety_error(error, timeout_s) from None
        if reply.chunk_index != self._index:
            raise Unavailable(
                f"the safety service answered chunk {reply.chunk_index}, expected {self._index}"
            )
        self._index += 1
        return verdict_from_pb(reply.verdict)

    def close(self) -> None:
        self._requests.end()
        self._call.cancel()


class GrpcSafety:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = safety_grpc.SafetyServiceStub(channel)

    async def check(self, dialog: Sequence[Message], direction: Direction, timeout_s: float) -> Verdict:
        item = safety_pb.CheckItem(
            dialog=types_pb2.Dialog(messages=messages_to_pb(dialog)), direction=direction_to_pb(direction)
        )
        try:
            # The deadline travels to the safety service; the local timeout also bounds connection
            # setup (asyncio.timeout, which keeps a cancel that wait_for can lose: check_chunk).
            call = self._stub.Check(safety_pb.CheckRequest(items=[item]), timeout=timeout_s)
            async with asyncio.timeout(timeout_s):
                reply = await call
        except (TimeoutError, grpc.aio.AioRpcError) as error:
            raise _safety_error(error, timeout_s) from None
        if len(reply.verdicts) != 1:
            raise Unavailable(f"the safety service returned {len(reply.verdicts)} verdicts for 1 dialog")
        return verdict_from_pb(reply.verdicts[0])

    def output_check(self, context: Sequence[Message], timeout_s: float | None) -> GrpcOutputCheck:
        return GrpcOutputCheck(self._stub, context, timeout_s)
