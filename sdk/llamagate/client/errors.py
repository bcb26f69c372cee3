"""One exception type per gRPC status code, built from a failed call and its rich status details.

The gateway attaches google.rpc details to its errors (BadRequest field violations for bad input,
ErrorInfo with a stable reason on every error, RetryInfo when it is overloaded); `error_from_rpc`
decodes them with grpcio-status so callers can
write `except RateLimitedError as e: time.sleep(e.retry_after or 1)`.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status


@dataclass(frozen=True)
class FieldViolation:
    """Which request field was wrong and why (from google.rpc.BadRequest)."""

    field: str
    description: str


class ApiError(Exception):
    """A llamagate call failed. `code` is the gRPC status; `message` says what to change.

    `retry_after` is the server's suggested delay in seconds (google.rpc.RetryInfo), when it sent one.
    `reason` is the server's stable name for the failure (google.rpc.ErrorInfo, UPPER_SNAKE_CASE,
    e.g. "PROMPT_TOO_LONG" or "TURN_QUEUE_FULL"), with its numbers in `metadata`; "" when none came.
    `details` holds every google.rpc detail message the server attached, already unpacked.
    """

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(
        self,
        message: str,
        *,
        details: tuple[object, ...] = (),
        retry_after: float | None = None,
        field_violations: tuple[FieldViolation, ...] = (),
        reason: str = "",
        metadata: dict[str, str] | None = None,
    ) -> None:
        super().__init__(f"{self.code.name}: {message}")
        self.message = message
        self.details = details
        self.retry_after = retry_after
        self.field_violations = field_violations
        self.reason = reason
        self.metadata = dict(metadata or {})


class CancelledError(ApiError):
    """The call was cancelled. The SDK's own calls never raise it: see `error_from_call`."""

    code = grpc.StatusCode.CANCELLED


class UnknownError(ApiError):
    code = grpc.StatusCode.UNKNOWN


class InvalidArgumentError(ApiError):
    """The request is malformed; `field_violations` names the fields to fix."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class DeadlineExceededError(ApiError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class NotFoundError(ApiError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExistsError(ApiError):
    code = grpc.StatusCode.ALREADY_EXISTS


class PermissionDeniedError(ApiError):
    code = grpc.StatusCode.PERMISSION_DENIED


class RateLimitedError(ApiError):
    """RESOURCE_EXHAUSTED: a rate limit or the server's capacity; wait `retry_after` seconds."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class FailedPreconditionError(ApiError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class AbortedError(ApiError):
    code = grpc.StatusCode.ABORTED


class OutOfRangeError(ApiError):
    code = grpc.StatusCode.OUT_OF_RANGE


class UnimplementedError(ApiError):
    code = grpc.StatusCode.UNIMPLEMENTED


class InternalError(ApiError):
    code = grpc.StatusCode.INTERNAL


class UnavailableError(ApiError):
    """The gateway or one of its backends is down; the SDK has already retried (see RetryPolicy)."""

    code = grpc.StatusCode.UNAVAILABLE


class DataLossError(ApiError):
    code = grpc.StatusCode.DATA_LOSS


class UnauthenticatedError(ApiError):
    """Missing or invalid API key: pass `api_key=` (CLI: --api-key or LLAMAGATE_API_KEY)."""

    code = grpc.StatusCode.UNAUTHENTICATED


ERROR_TYPES: dict[grpc.StatusCode, type[ApiError]] = {
    cls.code: cls
    for cls in (
        CancelledError,
        UnknownError,
        InvalidArgumentError,
        DeadlineExceededError,
        NotFoundError,
        AlreadyExistsError,
        PermissionDeniedError,
        RateLimitedError,
        FailedPreconditionError,
        AbortedError,
        OutOfRangeError,
        UnimplementedError,
        InternalError,
        UnavailableError,
        DataLossError,
        UnauthenticatedError,
    )
}

# Detail messages this SDK unpacks; others are kept packed as google.protobuf.Any.
_DETAIL_TYPES = (
    error_details_pb2.RetryInfo,
    error_details_pb2.BadRequest,
    error_details_pb2.ErrorInfo,
    error_details_pb2.QuotaFailure,
    error_details_pb2.PreconditionFailure,
    error_details_pb2.DebugInfo,
    error_details_pb2.ResourceInfo,
    error_details_pb2.Help,
    error_details_pb2.LocalizedMessage,
    error_details_pb2.RequestInfo,
)


def _unpack(detail: any_pb2.Any) -> object:
    for detail_type in _DETAIL_TYPES:
        if detail.Is(detail_type.DESCRIPTOR):
            message = detail_type()
            detail.Unpack(message)
            return message
    return detail


def error_from_status(code: grpc.StatusCode, message: str, status: status_pb2.Status | None) -> ApiError:
    """The typed error for `code`, with RetryInfo and BadRequest details decoded from `status`."""
    details = tuple(_unpack(d) for d in status.details) if status is not None else ()
    retry_after = None
    violations: list[FieldViolation] = []
    info = error_details_pb2.ErrorInfo()
    for detail in details:
        if isinstance(detail, error_details_pb2.RetryInfo):
            retry_after = detail.retry_delay.ToNanoseconds() / 1e9
        elif isinstance(detail, error_details_pb2.BadRequest):
            violations.extend(FieldViolation(v.field, v.description) for v in detail.field_violations)
        elif isinstance(detail, error_details_pb2.ErrorInfo):
            info = detail
    error_type = ERROR_TYPES.get(code, UnknownError)
    return error_type(
        message or code.name.lower(),
        details=details,
        retry_after=retry_after,
        field_violations=tuple(violations),
        reason=info.reason,
        metadata=dict(info.metadata),
    )


def error_from_rpc(error: grpc.RpcError) -> ApiError:
    """Convert a failed call (sync `grpc.RpcError` or `grpc.aio.AioRpcError`) to its ApiError."""
    code = error.code()
    message = error.details() or ""
    try:
        status = rpc_status.from_call(error)
    except ValueError:
        # The details trailer disagrees with the call's status: trust the status, drop the details.
        status = None
    return error_from_status(code, message, status)


def error_from_call(error: grpc.RpcError) -> ApiError:
    """`error_from_rpc` for a reply the SDK reads, called before it looks at its own cancel flag.

    A call that reaches a server just as it shuts down is cancelled by grpc itself (status
    CANCELLED, details "CANCELLED"), though this client cancelled nothing. So a CANCELLED here is
    the gateway going away: UnavailableError, which the retry policy retries like any other.
    """
    converted = error_from_rpc(error)
    if isinstance(converted, CancelledError):
        return UnavailableError(
            f"the gateway dropped the call ({converted.message}); it may be restarting",
            details=converted.details,
        )
    return converted
