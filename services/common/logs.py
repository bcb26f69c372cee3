"""Structured logs: one JSON object per line, joined to traces by trace_id/span_id and to a request
by request_id.

Prompt and completion text is user data. Pass it only as a named extra
(`log.info("refused", extra={"prompt": text})`), never inside the message; those keys are replaced by
their length unless the service runs with `--log-prompts`.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, TextIO

from opentelemetry import trace

from services.common.telemetry import TelemetryConfig

# The id of the request being served in this asyncio task (contextvars follow tasks, so concurrent
# requests do not see each other's ids). Set it with `bind_request_id`.
request_id_var: ContextVar[str | None] = ContextVar("llamagate_request_id", default=None)

# Extras that may hold user text; redacted unless prompt logging is configured.
SENSITIVE_KEYS = frozenset({"prompt", "completion", "content", "text", "dialog", "messages", "chunk"})

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_RECORD_ATTRIBUTES = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


@contextmanager
def bind_request_id(request_id: str) -> Iterator[None]:
    token = request_id_var.set(request_id)
    try:
        yield
    finally:
        request_id_var.reset(token)


def _redacted(value: Any) -> str:
    return f"<redacted {len(value) if isinstance(value, str | list | tuple) else '?'}>"


class JsonFormatter(logging.Formatter):
    def __init__(self, service_name: str, log_prompts: bool = False) -> None:
        super().__init__()
        self.service_name = service_name
        self.log_prompts = log_prompts

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "service": self.service_name,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        span_context = trace.get_current_span().get_span_context()
        if span_context.is_valid:
            entry["trace_id"] = trace.format_trace_id(span_context.trace_id)
            entry["span_id"] = trace.format_span_id(span_context.span_id)
        request_id = request_id_var.get()
        if request_id is not None:
            entry["request_id"] = request_id
        for key, value in vars(record).items():
            if key in _RECORD_ATTRIBUTES or key in entry:
                continue
            entry[key] = value if self.log_prompts or key not in SENSITIVE_KEYS else _redacted(value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """Human-readable lines for development; extras are not shown, so nothing needs redacting."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        request_id = request_id_var.get()
        return f"{line} [request_id={request_id}]" if request_id else line


def configure_logging(config: TelemetryConfig, stream: TextIO | None = None) -> logging.Handler:
    """Route the root logger to one handler on `stream` (stderr); for `__main__` only."""
    handler = logging.StreamHandler(stream or sys.stderr)
    if config.log_format == "json":
        handler.setFormatter(JsonFormatter(config.service_name, config.log_prompts))
    else:
        handler.setFormatter(TextFormatter())
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(config.log_level)
    return handler
