"""TelemetryConfig is built once from flags plus the standard OTEL_* environment."""

from __future__ import annotations

import argparse

import pytest
from opentelemetry import trace

from services.common.server import add_server_arguments
from services.common.telemetry import (
    TelemetryConfig,
    add_telemetry_arguments,
    setup_telemetry,
    telemetry_config_from_args,
)
from tests.support.processes import free_port


def _config(argv: list[str], env: dict[str, str]) -> TelemetryConfig:
    parser = argparse.ArgumentParser()
    add_server_arguments(parser, default_port=50053)
    add_telemetry_arguments(parser, default_metrics_port=9103)
    return telemetry_config_from_args(parser.parse_args(argv), "safety", env)


def test_defaults_export_nothing_and_serve_metrics_on_the_service_port() -> None:
    config = _config([], {})
    assert config.service_name == "safety"
    assert config.metrics_port == 9103
    assert config.metrics_host == "127.0.0.1"
    assert config.traces_exporters == ()
    assert config.metrics_exporters == ()
    assert not config.sdk_disabled
    assert config.log_format == "json"
    assert not config.log_prompts


def test_metrics_host_follows_the_grpc_host_unless_given() -> None:
    assert _config(["--host", "0.0.0.0"], {}).metrics_host == "0.0.0.0"
    assert _config(["--host", "0.0.0.0", "--metrics-host", "10.0.0.1"], {}).metrics_host == "10.0.0.1"


def test_an_otlp_endpoint_turns_otlp_export_on() -> None:
    config = _config([], {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"})
    assert config.traces_exporters == ("otlp",)
    assert config.metrics_exporters == ("otlp",)
    only_traces = _config([], {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4317"})
    assert only_traces.traces_exporters == ("otlp",)
    assert only_traces.metrics_exporters == ()


def test_explicit_exporter_lists_win_over_the_endpoint() -> None:
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317",
        "OTEL_TRACES_EXPORTER": "console, otlp",
        "OTEL_METRICS_EXPORTER": "none",
    }
    config = _config([], env)
    assert config.traces_exporters == ("console", "otlp")
    assert config.metrics_exporters == ()
    # "prometheus" is the pull endpoint, governed by --metrics-port, so nothing is pushed for it.
    assert _config([], {"OTEL_METRICS_EXPORTER": "prometheus"}).metrics_exporters == ()


def test_unknown_exporter_or_protocol_is_refused_with_the_choices() -> None:
    with pytest.raises(SystemExit, match=r"OTEL_TRACES_EXPORTER='jaeger'.*console"):
        _config([], {"OTEL_TRACES_EXPORTER": "jaeger"})
    with pytest.raises(SystemExit, match="use 'grpc'"):
        _config([], {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"})
    with pytest.raises(SystemExit, match="--metrics-port must be >= 0"):
        _config(["--metrics-port", "-1"], {})
    with pytest.raises(SystemExit):  # argparse: "invalid choice: 'LOUD'"
        _config(["--log-level", "loud"], {})


def test_service_name_and_resource_attributes_come_from_the_standard_variables() -> None:
    env = {"OTEL_SERVICE_NAME": "safety-eu", "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=prod,k=v"}
    config = _config(["--log-format", "text", "--log-level", "debug", "--log-prompts"], env)
    assert config.service_name == "safety-eu"
    assert config.resource_attributes == {"deployment.environment": "prod", "k": "v"}
    assert (config.log_format, config.log_level, config.log_prompts) == ("text", "DEBUG", True)


def test_sdk_disabled_gives_no_op_providers_and_no_metrics_endpoint() -> None:
    port = free_port()
    config = _config(["--metrics-port", str(port)], {"OTEL_SDK_DISABLED": "true"})
    telemetry = setup_telemetry(config)
    try:
        assert telemetry.metrics_port == 0
        assert telemetry.metrics_registry is None
        with telemetry.tracer.start_as_current_span("x") as span:
            assert not span.get_span_context().is_valid
        assert isinstance(telemetry.tracer_provider, trace.NoOpTracerProvider)
    finally:
        telemetry.shutdown()


def test_an_occupied_metrics_port_fails_loudly() -> None:
    first = setup_telemetry(TelemetryConfig("a", metrics_port=free_port()))
    try:
        with pytest.raises(OSError):
            setup_telemetry(TelemetryConfig("b", metrics_port=first.metrics_port))
    finally:
        first.shutdown()


def test_shutdown_is_idempotent_and_frees_the_metrics_port() -> None:
    port = free_port()
    telemetry = setup_telemetry(TelemetryConfig("a", metrics_port=port))
    assert telemetry.metrics_port == port
    telemetry.shutdown()
    telemetry.shutdown()
    again = setup_telemetry(TelemetryConfig("b", metrics_port=port))
    assert again.metrics_port == port
    again.shutdown()


def test_without_an_exporter_only_a_sampled_callers_trace_is_recorded_and_the_trace_id_travels() -> None:
    telemetry = setup_telemetry(TelemetryConfig("gateway"), start_metrics_server=False)
    tracer = telemetry.tracer
    with tracer.start_as_current_span("root") as root:
        assert not root.is_recording()  # nobody would receive it
        assert root.get_span_context().is_valid  # but the id still goes out with each call
    caller = trace.SpanContext(
        trace_id=0xABC, span_id=0x123, is_remote=True, trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED)
    )
    with tracer.start_as_current_span(
        "rpc", context=trace.set_span_in_context(trace.NonRecordingSpan(caller))
    ) as span:
        assert span.is_recording() and span.get_span_context().trace_id == 0xABC
    telemetry.shutdown()


def test_the_sampler_variable_is_left_to_the_sdk() -> None:
    assert _config([], {"OTEL_TRACES_SAMPLER": "always_on"}).sampler_from_env
    telemetry = setup_telemetry(TelemetryConfig("gateway", sampler_from_env=True), start_metrics_server=False)
    with telemetry.tracer.start_as_current_span("root") as root:
        assert root.is_recording()  # the SDK's default (or the variable's) sampler, not ours
    telemetry.shutdown()
