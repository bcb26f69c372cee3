"""Backend errors become the gateway's domain errors; verdicts survive the protobuf round trip."""

import grpc
import pytest
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2

from services.common.convert import verdict_from_pb, verdict_to_pb
from services.common.errors import DeadlineExceeded, InvalidRequest, Overloaded, Unavailable
from services.common.verdicts import CategoryScore, Direction, Verdict
from services.gateway.grpc_backends import _inference_error, _safety_error


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
