"""The spans of a generate request and of a chat turn have the documented shape and timing."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from services.gateway.tracing import SAFETY_OUTPUT_SPAN, TURN_SPAN, safety_span, turn_span
from services.inference.metrics import InferenceMetrics, SchedulerSnapshot
from services.inference.tracing import (
    DECODE_SPAN,
    GENERATE_SPAN,
    PREFILL_SPAN,
    QUEUE_WAIT_SPAN,
    GenerationTrace,
)
from tests.unit.telemetry.readings import collect, labels

MS = 1_000_000


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def tracer(exporter: InMemorySpanExporter) -> trace.Tracer:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider.get_tracer("t")


def _by_name(exporter: InMemorySpanExporter) -> dict[str, ReadableSpan]:
    spans = exporter.get_finished_spans()
    assert len({s.name for s in spans}) == len(spans), [s.name for s in spans]
    return {s.name: s for s in spans}


def test_generation_phases_are_children_of_generate_under_the_rpc_span(
    tracer: trace.Tracer, exporter: InMemorySpanExporter
) -> None:
    reader = InMemoryMetricReader()
    metrics = InferenceMetrics.create(
        MeterProvider(metric_readers=[reader]).get_meter("t"), lambda: SchedulerSnapshot(0, 0, 0.0)
    )
    t0 = 1_700_000_000_000 * MS
    with tracer.start_as_current_span("rpc") as rpc:
        timeline = GenerationTrace(tracer, metrics, "req-1", submitted_ns=t0)
    timeline.admitted(at_ns=t0 + 5 * MS)
    timeline.tokens(1, at_ns=t0 + 25 * MS)
    timeline.tokens(2, at_ns=t0 + 45 * MS)
    timeline.tokens(1, at_ns=t0 + 55 * MS)
    timeline.finish("length", prompt_tokens=7, generated_tokens=4, at_ns=t0 + 60 * MS)
    timeline.finish("stop", prompt_tokens=0, generated_tokens=0)  # a finally: after the real finish

    spans = _by_name(exporter)
    generate = spans[GENERATE_SPAN]
    assert generate.parent is not None and generate.parent.span_id == rpc.get_span_context().span_id
    assert (generate.start_time, generate.end_time) == (t0, t0 + 60 * MS)
    assert generate.attributes is not None
    assert generate.attributes["llamagate.request_id"] == "req-1"
    assert generate.attributes["llamagate.finish_reason"] == "length"
    assert generate.attributes["llamagate.generated_tokens"] == 4
    phases = [(QUEUE_WAIT_SPAN, 0, 5), (PREFILL_SPAN, 5, 25), (DECODE_SPAN, 25, 60)]
    for name, start_ms, end_ms in phases:
        span = spans[name]
        assert span.parent is not None and span.parent.span_id == generate.context.span_id
        assert (span.start_time, span.end_time) == (t0 + start_ms * MS, t0 + end_ms * MS), name
    assert [(e.name, e.timestamp) for e in generate.events] == [
        ("first_token", t0 + 25 * MS),
        ("finish", t0 + 60 * MS),
    ]

    got = collect(reader)
    assert got["llamagate_queue_wait_seconds"][labels()].total == pytest.approx(0.005)
    assert got["llamagate_ttft_seconds"][labels()].total == pytest.approx(0.025)
    itl = got["llamagate_inter_token_latency_seconds"][labels()]
    assert itl.value == 3 and itl.total == pytest.approx(0.030)
    assert got["llamagate_request_duration_seconds"][labels(finish_reason="length")].total == pytest.approx(
        0.06
    )
    assert got["llamagate_generate_requests_total"][labels(finish_reason="length")].value == 1
    assert labels(finish_reason="stop") not in got["llamagate_generate_requests_total"]


def test_a_request_cancelled_in_the_queue_has_only_a_queue_wait_phase(
    tracer: trace.Tracer, exporter: InMemorySpanExporter
) -> None:
    timeline = GenerationTrace(tracer, None, "req-2")
    error = RuntimeError("client went away")
    timeline.finish("cancelled", prompt_tokens=3, generated_tokens=0, error=error)
    spans = _by_name(exporter)
    assert set(spans) == {GENERATE_SPAN, QUEUE_WAIT_SPAN}
    assert spans[GENERATE_SPAN].status.status_code == trace.StatusCode.ERROR
    assert [e.name for e in spans[GENERATE_SPAN].events] == ["finish", "exception"]


def test_first_token_without_an_admission_report_still_gets_a_prefill_phase(
    tracer: trace.Tracer, exporter: InMemorySpanExporter
) -> None:
    timeline = GenerationTrace(tracer, None, "req-3", submitted_ns=10 * MS)
    timeline.tokens(1, at_ns=20 * MS)
    timeline.finish("stop", 1, 1, at_ns=30 * MS)
    spans = _by_name(exporter)
    assert set(spans) == {GENERATE_SPAN, QUEUE_WAIT_SPAN, PREFILL_SPAN, DECODE_SPAN}
    assert spans[PREFILL_SPAN].start_time == spans[PREFILL_SPAN].end_time == 20 * MS


def test_each_chat_turn_is_its_own_trace_linked_to_the_stream(
    tracer: trace.Tracer, exporter: InMemorySpanExporter
) -> None:
    with tracer.start_as_current_span("rpc") as rpc:
        for index in range(2):
            with turn_span(tracer, f"turn-{index}", tenant="acme"), safety_span(tracer, "output", index):
                pass
        with turn_span(tracer, "complete", new_trace=False):
            pass
    spans = exporter.get_finished_spans()
    turns = [s for s in spans if s.name == TURN_SPAN]
    rpc_context = rpc.get_span_context()
    new_traces = [t for t in turns if t.context.trace_id != rpc_context.trace_id]
    assert len(new_traces) == 2 and new_traces[0].context.trace_id != new_traces[1].context.trace_id
    for turn in new_traces:
        assert turn.parent is None
        assert [link.context.span_id for link in turn.links] == [rpc_context.span_id]
        assert turn.attributes is not None and turn.attributes["llamagate.tenant"] == "acme"
    (same_trace,) = [t for t in turns if t.context.trace_id == rpc_context.trace_id]
    assert same_trace.parent is not None and same_trace.parent.span_id == rpc_context.span_id
    chunks = [s for s in spans if s.name == SAFETY_OUTPUT_SPAN]
    assert [c.attributes["llamagate.safety.chunk_index"] for c in chunks if c.attributes] == [0, 1]
    assert {c.parent.span_id for c in chunks if c.parent} == {t.context.span_id for t in new_traces}
