"""The exporters chosen by the standard OTEL_* variables really export: OTLP over gRPC, console."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator

import pytest

from services.common.telemetry import add_telemetry_arguments, setup_telemetry, telemetry_config_from_args
from services.inference.metrics import InferenceMetrics, SchedulerSnapshot
from tests.integration.telemetry.otlp_collector import OtlpCollector


def _args() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_telemetry_arguments(parser, default_metrics_port=0)
    return parser.parse_args([])


@pytest.fixture
def collector() -> Iterator[OtlpCollector]:
    collector = OtlpCollector().start()
    yield collector
    collector.stop()


def test_otlp_endpoint_exports_spans_and_metrics(
    collector: OtlpCollector, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The exporter reads the endpoint itself (OpenTelemetry's contract), so it goes in the environment.
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint)
    config = telemetry_config_from_args(_args(), "inference")
    assert config.traces_exporters == ("otlp",) and config.metrics_exporters == ("otlp",)
    telemetry = setup_telemetry(config)
    with telemetry.tracer.start_as_current_span("outer"), telemetry.tracer.start_as_current_span("inner"):
        InferenceMetrics.create(telemetry.meter, lambda: SchedulerSnapshot(0, 0, 0.0)).record_first_token(0.2)
    telemetry.shutdown()  # flushes the batch processor and the periodic reader

    assert collector.wait_for(lambda c: len(c.spans) == 2 and "inference" in c.metric_names)
    inner, outer = collector.spans
    assert (inner.name, outer.name) == ("inner", "outer")
    assert inner.parent_span_id == outer.span_id and inner.trace_id == outer.trace_id
    assert {s.service for s in collector.spans} == {"inference"}
    assert "llamagate_ttft_seconds" in collector.metric_names["inference"]


def test_console_exporter_prints_spans(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    telemetry = setup_telemetry(telemetry_config_from_args(_args(), "safety"))
    with telemetry.tracer.start_as_current_span("llamagate.safety.input"):
        pass
    telemetry.shutdown()
    printed = capsys.readouterr().out
    span = json.loads(printed[printed.index("{") :])
    assert span["name"] == "llamagate.safety.input"
    assert span["resource"]["attributes"]["service.name"] == "safety"


def test_nothing_is_exported_by_default(collector: OtlpCollector, capsys: pytest.CaptureFixture[str]) -> None:
    telemetry = setup_telemetry(telemetry_config_from_args(_args(), "gateway", env={}))
    with telemetry.tracer.start_as_current_span("quiet") as span:
        assert span.get_span_context().is_valid  # still traced: ids reach logs and downstream services
    telemetry.shutdown()
    assert capsys.readouterr().out == ""
    assert collector.spans == []
