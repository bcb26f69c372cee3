"""Errors as OpenAI error objects with the matching HTTP status: the one place that maps them.

    {"error": {"message": ..., "type": ..., "param": ..., "code": ...}}

The domain errors are the gRPC path's (services/common/errors.py); each gets the status OpenAI
clients act on (the `openai` SDK retries 429 and 503, honouring Retry-After, and raises
BadRequestError, AuthenticationError, NotFoundError... by status).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass

from pydantic import ValidationError
from starlette.requests import ClientDisconnect

from services.common.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    InvalidRequest,
    LlamagateError,
    Overloaded,
    PromptTooLong,
    Unauthenticated,
    Unavailable,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HttpError:
    status: int
    message: str
    type: str
    code: str | None = None
    param: str | None = None
    retry_after_s: float | None = None

    def body(self) -> dict[str, object]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def headers(self) -> dict[str, str]:
        if self.retry_after_s is None:
            return {}
        # Whole seconds (RFC 9110), rounded up so a client that waits exactly that long is admitted.
        return {"retry-after": str(max(1, math.ceil(self.retry_after_s)))}


class ModelNotFound(Exception):
    """The request names a model this gateway does not serve."""

    def __init__(self, model: str, served: str) -> None:
        super().__init__(f"the model {model!r} does not exist: this gateway serves {served!r}")


def not_found(message: str, code: str) -> HttpError:
    return HttpError(404, message, "invalid_request_error", code)


def _from_validation(error: ValidationError) -> HttpError:
    first = error.errors(include_url=False)[0]
    param = ".".join(str(part) for part in first["loc"]) or None
    message = first["msg"].removeprefix("Value error, ")
    return HttpError(400, f"{param}: {message}" if param else message, "invalid_request_error", None, param)


def from_exception(error: BaseException) -> HttpError:
    """The HTTP error for anything a handler raised; unexpected errors are logged, not described."""
    match error:
        case ValidationError():
            return _from_validation(error)
        case json.JSONDecodeError() | UnicodeDecodeError():
            return HttpError(400, f"the request body is not valid JSON: {error}", "invalid_request_error")
        case ClientDisconnect():
            # Gone before its body was read: nothing started, and nobody reads the answer
            # (499 as in proxies' logs, for the request metrics).
            return HttpError(499, "the client closed the request", "client_closed_request")
        case ModelNotFound():
            return HttpError(404, str(error), "invalid_request_error", "model_not_found", "model")
        case PromptTooLong(field=field):
            # OpenAI's code for a prompt beyond the model's context.
            return HttpError(400, error.message, "invalid_request_error", "context_length_exceeded", field)
        case InvalidRequest(violations=violations):
            param = violations[0].field if violations else None
            return HttpError(400, error.message, "invalid_request_error", "invalid_value", param)
        case FailedPrecondition():
            return HttpError(400, error.message, "invalid_request_error", "failed_precondition")
        case Unauthenticated():
            return HttpError(401, error.message, "authentication_error", "invalid_api_key")
        case Overloaded(retry_after_s=retry_after_s):
            return HttpError(
                429, error.message, "rate_limit_error", "rate_limit_exceeded", None, retry_after_s
            )
        case Unavailable():
            return HttpError(503, error.message, "service_unavailable", "service_unavailable")
        case DeadlineExceeded():
            return HttpError(504, error.message, "timeout", "deadline_exceeded")
        case LlamagateError():
            return HttpError(500, error.message, "server_error", "internal_error")
    log.exception("unexpected error in an HTTP request", exc_info=error)
    return HttpError(500, "internal error in the gateway", "server_error", "internal_error")
