"""One error vocabulary for every service, and the one place that maps it to gRPC status codes.

Cores raise these domain exceptions; `ErrorInterceptor` (see interceptors.py) turns them into
statuses with rich details (google.rpc BadRequest / RetryInfo) so callers learn what to change.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str


class LlamagateError(Exception):
    """Base of the domain errors; `code` is the gRPC status the caller receives."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def details(self) -> list[any_pb2.Any]:
        return []

    def to_status(self) -> status_pb2.Status:
        status = status_pb2.Status(code=self.code.value[0], message=self.message)
        status.details.extend(self.details())
        return status


class InvalidRequest(LlamagateError):
    """The request is malformed; the message (and field violations) say what to fix."""

    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, message: str, violations: list[FieldViolation] | None = None) -> None:
        super().__init__(message)
        self.violations = violations or []

    def details(self) -> list[any_pb2.Any]:
        if not self.violations:
            return []
        bad = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
                for v in self.violations
            ]
        )
        detail = any_pb2.Any()
        detail.Pack(bad)
        return [detail]


class Overloaded(LlamagateError):
    """A queue, a rate limit or the KV cache is full; retry after `retry_after_s`."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    def details(self) -> list[any_pb2.Any]:
        if self.retry_after_s is None:
            return []
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(int(self.retry_after_s * 1e9))
        detail = any_pb2.Any()
        detail.Pack(error_details_pb2.RetryInfo(retry_delay=delay))
        return [detail]


class Unavailable(LlamagateError):
    """A dependency (safety, inference, a rank) is down; the call may be retried."""

    code = grpc.StatusCode.UNAVAILABLE


class Unauthenticated(LlamagateError):
    """Missing or wrong credentials."""

    code = grpc.StatusCode.UNAUTHENTICATED


class DeadlineExceeded(LlamagateError):
    """The request's deadline passed before it finished."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


class FailedPrecondition(LlamagateError):
    """The request is valid but not in this state (e.g. a turn while a reply streams)."""

    code = grpc.StatusCode.FAILED_PRECONDITION


# Sanity: our codes and google.rpc's numeric codes must agree (both follow the gRPC spec).
assert grpc.StatusCode.INVALID_ARGUMENT.value[0] == code_pb2.INVALID_ARGUMENT
