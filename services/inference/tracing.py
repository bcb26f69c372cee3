"""The inference service's spans of one generate request: queue wait, prefill, decode.

Where they sit in a turn's whole trace: services/common/tracing.py.
"""

from __future__ import annotations

import time

from opentelemetry import trace
from opentelemetry.trace import Tracer

from services.common.tracing import REQUEST_ID
from services.inference.metrics import InferenceMetrics

GENERATE_SPAN = "llamagate.generate"
QUEUE_WAIT_SPAN = "llamagate.queue_wait"
PREFILL_SPAN = "llamagate.prefill"
DECODE_SPAN = "llamagate.decode"
FIRST_TOKEN_EVENT = "first_token"
FINISH_EVENT = "finish"


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
