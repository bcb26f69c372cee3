"""The spans of a chat turn, named in one place.

A turn's trace, as a tree (the gRPC spans come from the OpenTelemetry interceptors that `Telemetry`
installs; the rest from the helpers below):

    llamagate.chat.turn                         gateway (one trace per turn)
      llamagate.safety.input                    gateway
        /llamagate.v1.SafetyService/Check       gateway client span -> safety server span
      /llamagate.v1.InferenceService/Generate   gateway client span -> inference server span
        llamagate.generate                      inference; events "first_token", "finish"
          llamagate.queue_wait / llamagate.prefill / llamagate.decode
      llamagate.safety.output  (one per chunk)  gateway, around each CheckStream chunk

Span attributes carry ids, counts and reasons, never prompt or completion text.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Link, Span, Tracer

from services.common.metrics import InferenceMetrics

TURN_SPAN = "llamagate.chat.turn"
SAFETY_INPUT_SPAN = "llamagate.safety.input"
SAFETY_OUTPUT_SPAN = "llamagate.safety.output"
GENERATE_SPAN = "llamagate.generate"
QUEUE_WAIT_SPAN = "llamagate.queue_wait"
PREFILL_SPAN = "llamagate.prefill"
DECODE_SPAN = "llamagate.decode"
FIRST_TOKEN_EVENT = "first_token"
FINISH_EVENT = "finish"

REQUEST_ID = "llamagate.request_id"
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


class GenerationTrace:
    """Spans and latency metrics of one generate request: queue wait, prefill, decode.

    Create it where the request is submitted (inside the Generate RPC, so the server span is the
    parent) and report the engine's progress as it arrives: `admitted()`, `tokens(n)` for every
    delta, `finish(...)` once. Timestamps default to "now"; pass `at_ns` (time.time_ns()) when the
    engine measured them itself. Not thread-safe: call it from one task.
    """

    def __init__(
        self,
        tracer: Tracer,
        metrics: InferenceMetrics | None,
        request_id: str,
        submitted_ns: int | None = None,
    ) -> None:
        self._tracer = tracer
        self._metrics = metrics
        self.submitted_ns = submitted_ns or time.time_ns()
        self.span = tracer.start_span(
            GENERATE_SPAN, attributes={REQUEST_ID: request_id}, start_time=self.submitted_ns
        )
        self._parent = trace.set_span_in_context(self.span)
        self._phase = tracer.start_span(QUEUE_WAIT_SPAN, context=self._parent, start_time=self.submitted_ns)
        self._phase_name = QUEUE_WAIT_SPAN
        self._last_token_ns: int | None = None
        self._finished = False

    def _next_phase(self, name: str, at_ns: int) -> None:
        self._phase.end(end_time=at_ns)
        self._phase = self._tracer.start_span(name, context=self._parent, start_time=at_ns)
        self._phase_name = name

    def admitted(self, at_ns: int | None = None) -> None:
        """The scheduler took the request into the running batch; prefill starts."""
        at_ns = at_ns or time.time_ns()
        if self._phase_name != QUEUE_WAIT_SPAN:
            return
        self._next_phase(PREFILL_SPAN, at_ns)
        if self._metrics is not None:
            self._metrics.record_admitted((at_ns - self.submitted_ns) / 1e9)

    def tokens(self, count: int = 1, at_ns: int | None = None) -> None:
        """`count` new tokens were generated (one streamed delta)."""
        if count <= 0:
            return
        at_ns = at_ns or time.time_ns()
        if self._last_token_ns is None:
            if self._phase_name == QUEUE_WAIT_SPAN:
                self.admitted(at_ns)
            self._next_phase(DECODE_SPAN, at_ns)
            self.span.add_event(FIRST_TOKEN_EVENT, timestamp=at_ns)
            if self._metrics is not None:
                self._metrics.record_first_token((at_ns - self.submitted_ns) / 1e9)
                # The first token closes prefill; later tokens of the same delta are decode steps.
                if count > 1:
                    self._metrics.record_inter_token(0.0, count - 1)
        elif self._metrics is not None:
            self._metrics.record_inter_token((at_ns - self._last_token_ns) / 1e9, count)
        self._last_token_ns = at_ns

    def finish(
        self,
        finish_reason: str,
        prompt_tokens: int,
        generated_tokens: int,
        at_ns: int | None = None,
        error: BaseException | None = None,
    ) -> None:
        """End every span; idempotent, so a `finally:` may call it after a normal finish."""
        if self._finished:
            return
        self._finished = True
        at_ns = at_ns or time.time_ns()
        self._phase.end(end_time=at_ns)
        self.span.set_attributes(
            {
                "llamagate.finish_reason": finish_reason,
                "llamagate.prompt_tokens": prompt_tokens,
                "llamagate.generated_tokens": generated_tokens,
            }
        )
        self.span.add_event(FINISH_EVENT, {"llamagate.finish_reason": finish_reason}, timestamp=at_ns)
        if error is not None:
            self.span.record_exception(error)
            self.span.set_status(trace.Status(trace.StatusCode.ERROR, type(error).__name__))
        self.span.end(end_time=at_ns)
        if self._metrics is not None:
            self._metrics.record_finished(
                (at_ns - self.submitted_ns) / 1e9, prompt_tokens, generated_tokens, finish_reason
            )
