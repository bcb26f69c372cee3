"""Backend errors become the gateway's domain errors; verdicts survive the protobuf round trip; a
cancel is never lost on the way to a backend."""

import asyncio
from collections.abc import Awaitable, Callable
from typing import cast

import grpc
import pytest
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2

from llamagate.v1 import safety_service_pb2 as safety_pb
from llamagate.v1 import safety_service_pb2_grpc as safety_grpc
from services.common.convert import verdict_from_pb, verdict_to_pb
from services.common.dialog import Message, Role
from services.common.errors import DeadlineExceeded, InvalidRequest, Overloaded, Unavailable
from services.common.verdicts import CategoryScore, Direction, Verdict
from services.gateway.grpc_backends import GrpcOutputCheck, GrpcSafety, _inference_error, _safety_error


def aio_error(code: grpc.StatusCode, details: str, retry_s: float | None = None) -> grpc.aio.AioRpcError:
    trailing = grpc.aio.Metadata()
    if retry_s is not None:
        detail = any_pb2.Any()
        detail.Pack(error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=int(retry_s))))
        status = status_pb2.Status(code=code.value[0], message=details, details=[detail])
        trailing.add("grpc-status-details-bin", status.SerializeToString())
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), trailing, details)


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, InvalidRequest),
        (grpc.StatusCode.DEADLINE_EXCEEDED, DeadlineExceeded),
        (grpc.StatusCode.UNAVAILABLE, Unavailable),
        (grpc.StatusCode.INTERNAL, Unavailable),
        # The server dropping a call is not the client cancelling: the client may retry.
        (grpc.StatusCode.CANCELLED, Unavailable),
    ],
)
def test_inference_errors_map_to_domain_errors(code, kind):
    assert isinstance(_inference_error(aio_error(code, "x")), kind)


def test_overload_passes_the_backends_retry_delay_on():
    error = _inference_error(aio_error(grpc.StatusCode.RESOURCE_EXHAUSTED, "queue full", retry_s=7))
    assert isinstance(error, Overloaded) and error.retry_after_s == 7


def test_any_safety_failure_is_unavailable_and_says_nothing_was_released():
    for error in (aio_error(grpc.StatusCode.INVALID_ARGUMENT, "bad"), TimeoutError()):
        mapped = _safety_error(error, 2.0)
        assert isinstance(mapped, Unavailable) and "no unchecked text was released" in mapped.message


def test_verdict_round_trip():
    verdict = Verdict(
        safe=False,
        direction=Direction.OUTPUT,
        categories=(CategoryScore("O1", "Violence and Hate", 0.75, True),),
        classifier_id="embedded-minilm",
        classifier_version="head-1",
        judged_tokens=12,
        judged_segments=5,
        truncated=True,
    )
    assert verdict_from_pb(verdict_to_pb(verdict)) == verdict


# A cancel that lands in the same turn of the event loop as a safety answer must still cancel the
# caller. On Python 3.11 asyncio.wait_for returned the answer and dropped such a cancel, and a
# Chat reply whose client had left ran on to its last token, its chunks checked for nobody.


class _AnsweringStub:
    """A SafetyService stub whose answers cancel the task that waits for them as they arrive."""

    def __init__(self) -> None:
        self.waiter: asyncio.Task[object] | None = None

    def _answer(self, reply: object) -> object:
        assert self.waiter is not None
        self.waiter.cancel()
        return reply

    def CheckStream(self, requests: object, timeout: float | None) -> object:
        return object()

    def Check(self, request: object, timeout: float | None) -> Awaitable[safety_pb.CheckResponse]:
        async def answer() -> safety_pb.CheckResponse:
            reply = safety_pb.CheckResponse(verdicts=[verdict_to_pb(SAFE)])
            return cast(safety_pb.CheckResponse, self._answer(reply))

        return answer()


SAFE = Verdict(
    safe=True, direction=Direction.OUTPUT, categories=(), classifier_id="c", classifier_version="v"
)


async def _cancelled_as_answered(stub: _AnsweringStub, call: Callable[[], Awaitable[Verdict]]) -> bool:
    async def caller() -> None:
        await call()
        await asyncio.sleep(0)  # where a cancel that was kept is raised

    stub.waiter = asyncio.create_task(caller())
    try:
        await stub.waiter
    except asyncio.CancelledError:
        return True
    return False


async def test_a_cancel_that_lands_as_a_chunk_is_answered_is_kept() -> None:
    stub = _AnsweringStub()
    check = GrpcOutputCheck(cast(safety_grpc.SafetyServiceStub, stub), [], timeout_s=None)

    async def exchange(text: str) -> safety_pb.CheckStreamResponse:
        reply = safety_pb.CheckStreamResponse(chunk_index=0, verdict=verdict_to_pb(SAFE))
        return cast(safety_pb.CheckStreamResponse, stub._answer(reply))

    check._exchange = exchange  # type: ignore[method-assign]
    assert await _cancelled_as_answered(stub, lambda: check.check_chunk("Once upon a time", 2.0))


async def test_a_cancel_that_lands_as_a_check_is_answered_is_kept() -> None:
    stub = _AnsweringStub()
    safety = GrpcSafety.__new__(GrpcSafety)
    safety._stub = cast(safety_grpc.SafetyServiceStub, stub)
    dialog = [Message(Role.USER, "hi")]
    assert await _cancelled_as_answered(stub, lambda: safety.check(dialog, Direction.INPUT, 2.0))
