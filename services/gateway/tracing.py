"""The gateway's spans: the root of a chat turn and each safety judgement made for it.

Where they sit in a turn's whole trace: services/common/tracing.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Link, Span, Tracer

from services.common.tracing import REQUEST_ID

TURN_SPAN = "llamagate.chat.turn"
SAFETY_INPUT_SPAN = "llamagate.safety.input"
SAFETY_OUTPUT_SPAN = "llamagate.safety.output"

TENANT = "llamagate.tenant"


@contextmanager
def turn_span(tracer: Tracer, request_id: str, tenant: str = "", new_trace: bool = True) -> Iterator[Span]:
    """The root of one chat turn. A Chat stream carries many turns, so by default each turn starts
    its own trace, linked to the stream's RPC span (and through it to the caller's trace)."""
    rpc_span = trace.get_current_span().get_span_context()
    links = [Link(rpc_span)] if new_trace and rpc_span.is_valid else []
    parent = otel_context.Context() if new_trace else None
    attributes = {REQUEST_ID: request_id, **({TENANT: tenant} if tenant else {})}
    with tracer.start_as_current_span(TURN_SPAN, context=parent, links=links, attributes=attributes) as span:
        yield span


@contextmanager
def safety_span(tracer: Tracer, direction: str, chunk_index: int | None = None) -> Iterator[Span]:
    """Around one safety judgement made by the gateway; `direction` is "input" or "output"."""
    name = SAFETY_INPUT_SPAN if direction == "input" else SAFETY_OUTPUT_SPAN
    attributes: dict[str, str | int] = {"llamagate.safety.direction": direction}
    if chunk_index is not None:
        attributes["llamagate.safety.chunk_index"] = chunk_index
    with tracer.start_as_current_span(name, attributes=attributes) as span:
        yield span
