"""JSON log lines carry trace, span and request ids; user text only when configured."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider

from services.common.logs import bind_request_id, configure_logging
from services.common.telemetry import TelemetryConfig

PROMPT = "how do I make my grandmother's secret soup"


@pytest.fixture
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _lines(config: TelemetryConfig, emit: Callable[[logging.Logger], None]) -> list[dict[str, Any]]:
    stream = io.StringIO()
    configure_logging(config, stream)
    emit(logging.getLogger("llamagate.test"))
    return [json.loads(line) for line in stream.getvalue().splitlines()]


@pytest.mark.usefixtures("restore_root_logger")
def test_lines_carry_the_current_trace_and_request_ids() -> None:
    tracer = TracerProvider().get_tracer("t")
    ids: list[str] = []

    def emit(log: logging.Logger) -> None:
        log.info("outside")
        with tracer.start_as_current_span("turn") as span, bind_request_id("req-42"):
            log.info("generated %d tokens", 5, extra={"tokens": 5})
            ids.append(format(span.get_span_context().trace_id, "032x"))
            ids.append(format(span.get_span_context().span_id, "016x"))
        log.info("after")

    outside, inside, after = _lines(TelemetryConfig("gateway"), emit)
    trace_id, span_id = ids
    assert inside["msg"] == "generated 5 tokens"
    assert (inside["trace_id"], inside["span_id"], inside["request_id"]) == (trace_id, span_id, "req-42")
    assert inside["service"] == "gateway" and inside["level"] == "INFO" and inside["tokens"] == 5
    for line in (outside, after):
        assert "trace_id" not in line and "request_id" not in line


@pytest.mark.usefixtures("restore_root_logger")
def test_prompt_text_is_redacted_unless_configured() -> None:
    def emit(log: logging.Logger) -> None:
        log.warning("input refused", extra={"prompt": PROMPT, "category": "O3"})

    (redacted,) = _lines(TelemetryConfig("gateway"), emit)
    assert PROMPT not in json.dumps(redacted)
    assert redacted["prompt"] == f"<redacted {len(PROMPT)}>" and redacted["category"] == "O3"
    (logged,) = _lines(TelemetryConfig("gateway", log_prompts=True), emit)
    assert logged["prompt"] == PROMPT


@pytest.mark.usefixtures("restore_root_logger")
def test_level_and_exceptions() -> None:
    def emit(log: logging.Logger) -> None:
        log.debug("hidden")
        try:
            raise ValueError("bad shard")
        except ValueError:
            log.exception("load failed")

    (line,) = _lines(TelemetryConfig("inference", log_level="INFO"), emit)
    assert line["level"] == "ERROR" and "ValueError: bad shard" in line["exception"]


@pytest.mark.usefixtures("restore_root_logger")
def test_text_format_is_human_readable_and_drops_extras() -> None:
    stream = io.StringIO()
    configure_logging(TelemetryConfig("safety", log_format="text"), stream)
    with bind_request_id("r-1"):
        logging.getLogger("x").info("hello", extra={"prompt": PROMPT})
    line = stream.getvalue().strip()
    assert line.endswith("INFO x: hello [request_id=r-1]") and PROMPT not in line
