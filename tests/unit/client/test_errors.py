"""Status code + google.rpc details -> the SDK's typed exceptions."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2

from llamagate.client import ChatClient, InvalidArgumentError, RateLimitedError, UnavailableError
from llamagate.client.errors import ERROR_TYPES, ApiError, UnknownError, error_from_status
from services.common.errors import FieldViolation, InvalidRequest, Overloaded
from tests.support.fake_gateway import FakeChatService, serve_in_thread


def _packed(message: object) -> any_pb2.Any:
    detail = any_pb2.Any()
    detail.Pack(message)  # type: ignore[arg-type]
    return detail


def test_every_status_code_but_ok_has_its_own_error_type() -> None:
    codes = set(grpc.StatusCode) - {grpc.StatusCode.OK}
    assert set(ERROR_TYPES) == codes
    assert len(set(ERROR_TYPES.values())) == len(codes)
    for code, error_type in ERROR_TYPES.items():
        error = error_from_status(code, "boom", None)
        assert type(error) is error_type and error.code is code and error.message == "boom"
        assert isinstance(error, ApiError)


def test_retry_info_becomes_retry_after_seconds() -> None:
    delay = duration_pb2.Duration(seconds=2, nanos=500_000_000)
    status = status_pb2.Status(code=8, message="slow down")
    status.details.append(_packed(error_details_pb2.RetryInfo(retry_delay=delay)))
    error = error_from_status(grpc.StatusCode.RESOURCE_EXHAUSTED, "slow down", status)
    assert isinstance(error, RateLimitedError)
    assert error.retry_after == pytest.approx(2.5)
    assert isinstance(error.details[0], error_details_pb2.RetryInfo)


def test_bad_request_becomes_field_violations_and_unknown_details_stay_packed() -> None:
    bad = error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field="turn.content", description="empty")
        ]
    )
    strange = _packed(duration_pb2.Duration(seconds=1))
    status = status_pb2.Status(code=3, message="turn.content is empty")
    status.details.extend([_packed(bad), strange])
    error = error_from_status(grpc.StatusCode.INVALID_ARGUMENT, "turn.content is empty", status)
    assert isinstance(error, InvalidArgumentError)
    assert [(v.field, v.description) for v in error.field_violations] == [("turn.content", "empty")]
    assert error.retry_after is None
    assert error.details[1] == strange
    assert str(error) == "INVALID_ARGUMENT: turn.content is empty"


def test_unknown_code_falls_back_to_unknown_error() -> None:
    error = error_from_status(grpc.StatusCode.OK, "", None)
    assert isinstance(error, UnknownError)
    assert error.message == "ok"


def test_details_from_the_real_error_interceptor_reach_the_caller() -> None:
    """End to end through services.common's ErrorInterceptor: what the gateway sends is what we parse."""
    service = FakeChatService()
    rejections = iter(
        [
            Overloaded("tenant acme is over 60 requests per minute", retry_after_s=1.25),
            InvalidRequest(
                "sampling.top_p is 2: must be in (0, 1]", [FieldViolation("sampling.top_p", "(0, 1]")]
            ),
            Overloaded("still full"),
        ]
    )

    async def complete_script(request: object, call: object) -> None:
        raise next(rejections)

    service.complete_script = complete_script
    with serve_in_thread(service) as target, ChatClient(target, api_key="k") as client:
        with pytest.raises(RateLimitedError) as limited:
            client.complete("hi").wait()
        assert limited.value.retry_after == pytest.approx(1.25)
        assert "60 requests per minute" in limited.value.message
        with pytest.raises(InvalidArgumentError) as invalid:
            client.complete("hi").wait()
        assert invalid.value.field_violations[0].field == "sampling.top_p"
        with pytest.raises(RateLimitedError) as no_hint:
            client.complete("hi").wait()
        assert no_hint.value.retry_after is None


def test_nothing_listening_is_unavailable_after_the_retries() -> None:
    from llamagate.client import RetryPolicy
    from tests.support.processes import free_port

    policy = RetryPolicy(max_attempts=2, initial_backoff_s=0.01, max_backoff_s=0.01)
    with ChatClient(f"127.0.0.1:{free_port()}", retry=policy) as client, pytest.raises(UnavailableError):
        client.complete("hi").wait()


def test_error_info_becomes_reason_and_metadata() -> None:
    info = error_details_pb2.ErrorInfo(
        reason="PROMPT_TOO_LONG",
        domain="llamagate.dev",
        metadata={"prompt_tokens": "5000", "max_prompt_tokens": "4095"},
    )
    status = status_pb2.Status(code=3, message="too long")
    status.details.append(_packed(info))
    error = error_from_status(grpc.StatusCode.INVALID_ARGUMENT, "too long", status)
    assert error.reason == "PROMPT_TOO_LONG"
    assert error.metadata == {"prompt_tokens": "5000", "max_prompt_tokens": "4095"}
    assert error_from_status(grpc.StatusCode.INTERNAL, "x", None).reason == ""
