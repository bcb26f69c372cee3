"""A minimal OTLP/gRPC collector for tests: receives spans and metrics the way a real collector
would, so exporters are tested over the wire (also across processes)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2


@dataclass(frozen=True)
class ExportedSpan:
    service: str
    span: trace_pb2.Span

    @property
    def name(self) -> str:
        return self.span.name

    @property
    def trace_id(self) -> str:
        return self.span.trace_id.hex()

    @property
    def span_id(self) -> str:
        return self.span.span_id.hex()

    @property
    def parent_span_id(self) -> str:
        return self.span.parent_span_id.hex()


def _service_name(resource: Any) -> str:
    for attribute in resource.attributes:
        if attribute.key == "service.name":
            return str(attribute.value.string_value)
    return ""


class OtlpCollector(
    trace_service_pb2_grpc.TraceServiceServicer, metrics_service_pb2_grpc.MetricsServiceServicer
):
    def __init__(self) -> None:
        self._changed = threading.Condition()
        self.spans: list[ExportedSpan] = []
        self.metric_names: dict[str, set[str]] = {}
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self, self._server)
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(self, self._server)
        self.port = self._server.add_insecure_port("127.0.0.1:0")

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> OtlpCollector:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop(grace=None)

    def Export(self, request: Any, context: grpc.ServicerContext) -> Any:
        with self._changed:
            if isinstance(request, trace_service_pb2.ExportTraceServiceRequest):
                for resource_spans in request.resource_spans:
                    service = _service_name(resource_spans.resource)
                    for scope_spans in resource_spans.scope_spans:
                        self.spans.extend(ExportedSpan(service, span) for span in scope_spans.spans)
                reply: Any = trace_service_pb2.ExportTraceServiceResponse()
            else:
                for resource_metrics in request.resource_metrics:
                    names = self.metric_names.setdefault(_service_name(resource_metrics.resource), set())
                    for scope_metrics in resource_metrics.scope_metrics:
                        names.update(metric.name for metric in scope_metrics.metrics)
                reply = metrics_service_pb2.ExportMetricsServiceResponse()
            self._changed.notify_all()
        return reply

    def wait_for(self, condition: Callable[[OtlpCollector], bool], timeout_s: float = 30.0) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: condition(self), timeout=timeout_s)
