"""OpenTelemetry set-up shared by every service: one config, one call, one object to pass around.

`telemetry_config_from_args` is the only place that reads the standard `OTEL_*` environment; the
returned `Telemetry` carries the tracer, the meter, the gRPC interceptors and the Prometheus
endpoint of one process. Nothing here is global: a service's `__main__` builds it once and passes
it down (tests build several side by side).

Exporter choice (OpenTelemetry's own variables, with one deliberate difference for safety in tests
and laptops: with nothing configured we export nothing rather than dial localhost:4317):
- traces:  OTEL_TRACES_EXPORTER=otlp|console|none (comma-separated); unset means "otlp" when
  OTEL_EXPORTER_OTLP_ENDPOINT (or ..._TRACES_ENDPOINT) is set, otherwise none.
- metrics: OTEL_METRICS_EXPORTER likewise (push); the Prometheus pull endpoint is `--metrics-port`.
- OTEL_SDK_DISABLED=true turns all of it off, Prometheus endpoint included.
Endpoint, headers, TLS, timeouts, batching and sampling are read by the OpenTelemetry exporters and
SDK themselves from their documented variables; we do not re-implement them.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from opentelemetry import context, metrics, propagate, trace
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.instrumentation.grpc import (
    _aio_client,
    aio_client_interceptors,
    aio_server_interceptor,
    filters,
)
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricReader,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased
from prometheus_client import CollectorRegistry, start_http_server

log = logging.getLogger(__name__)

INSTRUMENTATION_NAME = "llamagate"
LOG_FORMATS = ("json", "text")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
_PUSH_EXPORTERS = ("otlp", "console")


@dataclass(frozen=True)
class TelemetryConfig:
    service_name: str
    # Prometheus text endpoint (http://metrics_host:metrics_port/metrics); 0 turns it off.
    metrics_port: int = 0
    metrics_host: str = "127.0.0.1"
    traces_exporters: tuple[str, ...] = ()
    metrics_exporters: tuple[str, ...] = ()
    sdk_disabled: bool = False
    log_format: str = "json"
    log_level: str = "INFO"
    # Prompt and completion text is redacted from logs unless this is set (it is user data).
    log_prompts: bool = False
    resource_attributes: Mapping[str, str] = field(default_factory=dict)
    # OTEL_TRACES_SAMPLER is set: the SDK's sampler from the environment, whatever is exported.
    sampler_from_env: bool = False


def add_telemetry_arguments(parser: argparse.ArgumentParser, default_metrics_port: int) -> None:
    group = parser.add_argument_group("telemetry (tracing/metrics exporters: standard OTEL_* variables)")
    group.add_argument(
        "--metrics-port",
        type=int,
        default=default_metrics_port,
        help="Prometheus /metrics port (0 = off)",
    )
    group.add_argument("--metrics-host", help="address for the metrics endpoint (default: --host)")
    group.add_argument("--log-format", choices=LOG_FORMATS, default="json")
    group.add_argument("--log-level", type=str.upper, choices=LOG_LEVELS, default="INFO")
    group.add_argument(
        "--log-prompts",
        action="store_true",
        help="include prompt and completion text in logs (off: it is user data)",
    )


def _exporters(env: Mapping[str, str], variable: str, signal: str, allowed: Sequence[str]) -> tuple[str, ...]:
    raw = env.get(variable, "").strip().lower()
    if not raw:
        endpoint_set = env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get(
            f"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT"
        )
        return ("otlp",) if endpoint_set else ()
    names = [name.strip() for name in raw.split(",") if name.strip()]
    unknown = sorted(set(names) - {*allowed, "none"})
    if unknown:
        raise SystemExit(f"{variable}={raw!r}: unsupported {unknown}; use a list of {[*allowed, 'none']}")
    return tuple(name for name in dict.fromkeys(names) if name in _PUSH_EXPORTERS)


def _resource_attributes(raw: str) -> dict[str, str]:
    pairs = (item.split("=", 1) for item in raw.split(",") if "=" in item)
    return {key.strip(): value.strip() for key, value in pairs}


def telemetry_config_from_args(
    args: argparse.Namespace, service_name: str, env: Mapping[str, str] | None = None
) -> TelemetryConfig:
    """Flags plus the standard OTEL_* environment, read here and nowhere else."""
    env = os.environ if env is None else env
    protocol = env.get("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc").strip().lower()
    if protocol != "grpc":
        # Only the gRPC OTLP exporter is installed; say so instead of silently exporting nothing.
        raise SystemExit(f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r} is not supported; use 'grpc'")
    if args.metrics_port < 0:
        raise SystemExit(f"--metrics-port must be >= 0 (0 turns the endpoint off), got {args.metrics_port}")
    return TelemetryConfig(
        service_name=env.get("OTEL_SERVICE_NAME") or service_name,
        metrics_port=args.metrics_port,
        metrics_host=args.metrics_host or getattr(args, "host", None) or "127.0.0.1",
        traces_exporters=_exporters(env, "OTEL_TRACES_EXPORTER", "TRACES", ("otlp", "console")),
        metrics_exporters=_exporters(
            env, "OTEL_METRICS_EXPORTER", "METRICS", ("otlp", "console", "prometheus")
        ),
        sdk_disabled=env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true",
        log_format=args.log_format,
        log_level=args.log_level,
        log_prompts=args.log_prompts,
        resource_attributes=_resource_attributes(env.get("OTEL_RESOURCE_ATTRIBUTES", "")),
        sampler_from_env=bool(env.get("OTEL_TRACES_SAMPLER", "").strip()),
    )


def _not_health_or_reflection() -> Any:
    # Load balancers probe health every few seconds; those spans would drown the real traffic.
    return filters.negate(filters.any_of(filters.health_check(), filters.service_prefix("grpc.reflection")))


def _end_if_cancelled(span: trace.Span, call: grpc.aio.Call) -> None:
    if call.cancelled() and span.is_recording():
        span.set_attribute("rpc.grpc.status_code", grpc.StatusCode.CANCELLED.value[0])
        span.end()


class _EndsWhenCancelled:
    """Ends a streaming call's client span when the caller cancels the call.

    The stock interceptor ends it only once the response stream has been read to its end. A caller
    that cancels after its last expected message (the gateway closing an output CheckStream when
    the turn is over) would leave the span open until the call object is garbage-collected, and the
    exported trace would lack the parent of the server's span until then.
    """

    add_error_details_to_span: Any

    async def _wrap_stream_response(self, span: trace.Span, call: grpc.aio.Call) -> AsyncIterator[Any]:
        call.add_done_callback(functools.partial(_end_if_cancelled, span))
        try:
            async for response in call:
                yield response
        except Exception as error:
            if span.is_recording():
                self.add_error_details_to_span(span, error)
            raise
        finally:
            if span.is_recording():
                span.end()


class _UnaryStreamClientInterceptor(_EndsWhenCancelled, _aio_client.UnaryStreamAioClientInterceptor):
    pass


class _StreamStreamClientInterceptor(_EndsWhenCancelled, _aio_client.StreamStreamAioClientInterceptor):
    pass


def _span_exporter(name: str) -> SpanExporter:
    if name == "console":
        # stdout as of now, not as of import time (the library's default binds it at import).
        return ConsoleSpanExporter(out=sys.stdout)
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


def _metric_reader(name: str) -> MetricReader:
    if name == "console":
        return PeriodicExportingMetricReader(ConsoleMetricExporter(out=sys.stdout))
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

    return PeriodicExportingMetricReader(OTLPMetricExporter())


class _CallerTraceInterceptor(grpc.aio.ServerInterceptor):
    """Continues the caller's trace (W3C traceparent, baggage) in each call, without a span.

    For a process that exports no spans: the instrumentation's server span would be made and then
    dropped, at about 0.1 ms a call (a safety Check with the service on one busy core, a fifth of
    what the service added beyond the gRPC round trip). The caller's context alone still gives the
    call's log lines, and the spans and calls it makes, the caller's trace id.
    """

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        carrier = dict(handler_call_details.invocation_metadata or ())
        # grpc.aio serves each call in a task of its own, interceptors included, and a task runs in
        # its own copy of the context: what is attached here is the call's alone and ends with it.
        context.attach(propagate.extract(carrier))
        return await continuation(handler_call_details)


class Telemetry:
    """Tracer, meter and gRPC interceptors of one process; `shutdown()` flushes and stops them."""

    def __init__(
        self,
        config: TelemetryConfig,
        tracer_provider: trace.TracerProvider,
        meter_provider: metrics.MeterProvider,
        metrics_registry: CollectorRegistry | None,
        spans_exported: bool = False,
    ) -> None:
        self.config = config
        # Some exporter receives this process's spans (else the gRPC server makes none).
        self.spans_exported = spans_exported
        self.tracer_provider = tracer_provider
        self.meter_provider = meter_provider
        self.tracer = tracer_provider.get_tracer(INSTRUMENTATION_NAME)
        self.meter = meter_provider.get_meter(INSTRUMENTATION_NAME)
        self.metrics_registry = metrics_registry
        self.metrics_port = 0
        self._metrics_server: Any = None
        self._metrics_thread: threading.Thread | None = None
        self._shut_down = False

    def server_interceptors(self) -> list[grpc.aio.ServerInterceptor]:
        """For `ServerConfig.extra_interceptors`: continues the caller's trace (W3C traceparent), in
        a server span of each call when spans are exported."""
        if not self.spans_exported:
            return [_CallerTraceInterceptor()]
        return [
            aio_server_interceptor(tracer_provider=self.tracer_provider, filter_=_not_health_or_reflection())
        ]

    def client_interceptors(self) -> list[grpc.aio.ClientInterceptor]:
        """For `grpc.aio.*_channel(..., interceptors=...)`: sends the current trace context along."""
        unary_unary, _, stream_unary, _ = aio_client_interceptors(
            tracer_provider=self.tracer_provider, filter_=_not_health_or_reflection()
        )
        # The same tracer the stock interceptors use, so every client span has one scope.
        tracer = unary_unary._tracer
        return [
            unary_unary,
            _UnaryStreamClientInterceptor(tracer, filter_=_not_health_or_reflection()),
            stream_unary,
            _StreamStreamClientInterceptor(tracer, filter_=_not_health_or_reflection()),
        ]

    def start_metrics_server(self) -> int:
        """Serve /metrics on the configured port; returns the bound port (0 when off)."""
        if self.metrics_registry is None or self.config.metrics_port == 0:
            return 0
        # A port that cannot be bound raises OSError: a missing metrics endpoint must not go unnoticed.
        self._metrics_server, self._metrics_thread = start_http_server(
            self.config.metrics_port, addr=self.config.metrics_host, registry=self.metrics_registry
        )
        self.metrics_port = self._metrics_server.server_port
        log.info("metrics endpoint on http://%s:%d/metrics", self.config.metrics_host, self.metrics_port)
        return self.metrics_port

    def shutdown(self) -> None:
        """Idempotent, so both a `finally:` and a signal path may call it."""
        if self._shut_down:
            return
        self._shut_down = True
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()
            if self._metrics_thread is not None:
                self._metrics_thread.join(timeout=5)
            self._metrics_server = None
        # Flushes batched spans and a final metrics export before the process exits.
        if isinstance(self.tracer_provider, TracerProvider):
            self.tracer_provider.shutdown()
        if isinstance(self.meter_provider, MeterProvider):
            self.meter_provider.shutdown()


def setup_telemetry(
    config: TelemetryConfig,
    *,
    span_exporters: Sequence[SpanExporter] = (),
    metric_readers: Sequence[MetricReader] = (),
    start_metrics_server: bool = True,
) -> Telemetry:
    """Build the providers for `config`. `span_exporters`/`metric_readers` are added to the configured
    ones (tests pass in-memory ones; they are exported synchronously so tests need not wait)."""
    if config.sdk_disabled:
        log.info("OTEL_SDK_DISABLED=true: no traces, no metrics")
        return Telemetry(config, trace.NoOpTracerProvider(), metrics.NoOpMeterProvider(), None)

    resource = Resource.create({**config.resource_attributes, SERVICE_NAME: config.service_name})
    # With nothing to export this process's spans to, a span is recorded only when the caller's
    # trace is sampled; the trace id still travels to the backends. Recording every call's spans
    # for nobody cost about 0.3 ms per safety check on the gateway's path (client and server side).
    exported = bool(config.traces_exporters or span_exporters)
    sampler = None if exported or config.sampler_from_env else ParentBased(root=ALWAYS_OFF)
    tracer_provider = TracerProvider(resource=resource, sampler=sampler)
    for name in config.traces_exporters:
        tracer_provider.add_span_processor(BatchSpanProcessor(_span_exporter(name)))
    for exporter in span_exporters:
        tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))

    registry = CollectorRegistry(auto_describe=True)
    readers: list[MetricReader] = [
        # target_info and scope labels would repeat on every series; service is the scrape job.
        PrometheusMetricReader(disable_target_info=True, scope_info_enabled=False, registry=registry),
        *(_metric_reader(name) for name in config.metrics_exporters),
        *metric_readers,
    ]
    meter_provider = MeterProvider(metric_readers=readers, resource=resource)

    telemetry = Telemetry(config, tracer_provider, meter_provider, registry, spans_exported=exported)
    if start_metrics_server:
        try:
            telemetry.start_metrics_server()
        except OSError:
            telemetry.shutdown()
            raise
    return telemetry
