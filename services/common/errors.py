"""One error vocabulary for every service, and the one place that maps it to gRPC status codes.

Cores raise these domain exceptions; `ErrorInterceptor` (see interceptors.py) turns them into
statuses with rich details so callers learn what to change, by program as well as by eye:

- INVALID_ARGUMENT carries google.rpc.BadRequest, one field violation per field to fix, each named
  as the client spells it (`start.messages[2].content`, `turn.content`, `prompt`);
- every other status carries google.rpc.ErrorInfo: `reason` (UPPER_SNAKE_CASE, stable, one per
  kind of failure) in the domain `ERROR_DOMAIN`, and metadata with the numbers behind it;
- RESOURCE_EXHAUSTED also carries google.rpc.RetryInfo when waiting helps.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

# The google.rpc.ErrorInfo domain of every error llamagate reports.
ERROR_DOMAIN = "llamagate.dev"


def _pack(message: object) -> any_pb2.Any:
    detail = any_pb2.Any()
    detail.Pack(message)  # type: ignore[arg-type]
    return detail


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str


class LlamagateError(Exception):
    """Base of the domain errors; `code` is the gRPC status the caller receives."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    # The ErrorInfo reason when the raiser names none: the status code's own name.
    default_reason: str = "INTERNAL"

    def __init__(
        self, message: str, *, reason: str | None = None, metadata: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.metadata = dict(metadata or {})

    def error_info(self) -> error_details_pb2.ErrorInfo:
        return error_details_pb2.ErrorInfo(reason=self.reason, domain=ERROR_DOMAIN, metadata=self.metadata)

    def details(self) -> list[any_pb2.Any]:
        return [_pack(self.error_info())]

    def to_status(self) -> status_pb2.Status:
        status = status_pb2.Status(code=self.code.value[0], message=self.message)
        status.details.extend(self.details())
        return status


class InvalidRequest(LlamagateError):
    """The request is malformed; the message (and field violations) say what to fix."""

    code = grpc.StatusCode.INVALID_ARGUMENT
    default_reason = "INVALID_ARGUMENT"

    def __init__(
        self,
        message: str,
        violations: list[FieldViolation] | None = None,
        *,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message, reason=reason, metadata=metadata)
        self.violations = violations or []

    def details(self) -> list[any_pb2.Any]:
        bad = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
                for v in self.violations
            ]
        )
        return [_pack(bad), *super().details()]


class PromptTooLong(InvalidRequest):
    """The prompt does not fit the model's context. `field` is the client's field to shorten.

    The numbers travel in the ErrorInfo metadata too, so a server in front of the inference service
    can name its own client's field with them (see `PromptTooLong.from_error_info`).
    """

    REASON = "PROMPT_TOO_LONG"

    def __init__(
        self,
        field: str,
        prompt_tokens: int,
        max_prompt_tokens: int,
        advice: str,
        *,
        message: str | None = None,
    ) -> None:
        self.field = field
        self.prompt_tokens = prompt_tokens
        self.max_prompt_tokens = max_prompt_tokens
        description = (
            f"the prompt has {prompt_tokens} tokens; this model accepts at most {max_prompt_tokens} "
            "(its context, less one token to generate)"
        )
        super().__init__(
            message or f"{field}: {description}: {advice}",
            [FieldViolation(field, description)],
            reason=self.REASON,
            metadata={"prompt_tokens": str(prompt_tokens), "max_prompt_tokens": str(max_prompt_tokens)},
        )

    def named(self, field: str, advice: str) -> PromptTooLong:
        """The same numbers, told about the field of the caller's own request."""
        return PromptTooLong(field, self.prompt_tokens, self.max_prompt_tokens, advice)

    @staticmethod
    def numbers(info: error_details_pb2.ErrorInfo) -> tuple[int, int] | None:
        """(prompt_tokens, max_prompt_tokens) of a PROMPT_TOO_LONG ErrorInfo; None for any other."""
        if info.domain != ERROR_DOMAIN or info.reason != PromptTooLong.REASON:
            return None
        try:
            return int(info.metadata["prompt_tokens"]), int(info.metadata["max_prompt_tokens"])
        except (KeyError, ValueError):
            return None


class Overloaded(LlamagateError):
    """A queue, a rate limit or the KV cache is full; retry after `retry_after_s`."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    default_reason = "RESOURCE_EXHAUSTED"

    def __init__(
        self,
        message: str,
        retry_after_s: float | None = None,
        *,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message, reason=reason, metadata=metadata)
        self.retry_after_s = retry_after_s

    def details(self) -> list[any_pb2.Any]:
        if self.retry_after_s is None:
            return super().details()
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(int(self.retry_after_s * 1e9))
        return [*super().details(), _pack(error_details_pb2.RetryInfo(retry_delay=delay))]


class Unavailable(LlamagateError):
    """A dependency (safety, inference, a rank) is down; the call may be retried."""

    code = grpc.StatusCode.UNAVAILABLE
    default_reason = "UNAVAILABLE"


class Unauthenticated(LlamagateError):
    """Missing or wrong credentials."""

    code = grpc.StatusCode.UNAUTHENTICATED
    default_reason = "UNAUTHENTICATED"


class DeadlineExceeded(LlamagateError):
    """The request's deadline passed before it finished."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED
    default_reason = "DEADLINE_EXCEEDED"


class FailedPrecondition(LlamagateError):
    """The request is valid but not in this state (e.g. a turn while a reply streams)."""

    code = grpc.StatusCode.FAILED_PRECONDITION
    default_reason = "FAILED_PRECONDITION"


# Sanity: our codes and google.rpc's numeric codes must agree (both follow the gRPC spec).
assert grpc.StatusCode.INVALID_ARGUMENT.value[0] == code_pb2.INVALID_ARGUMENT
