"""The HTTP edge's server span and request metrics, as one ASGI middleware.

The span continues the caller's W3C trace (`traceparent`), and the reply's `llamagate.chat.turn`
span, with its safety spans and backend calls, is its child: an HTTP request's trace has the same
tree as a gRPC Complete's (services/common/tracing.py), under `POST /v1/...` instead of the RPC
span. The span covers the whole response, a stream included. Health probes are counted, not traced.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from opentelemetry import propagate, trace
from opentelemetry.metrics import Counter, Histogram, Meter
from opentelemetry.trace import SpanKind, Status, StatusCode
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.common.metrics import REQUEST_BUCKETS_S, seconds_histogram

ROUTES = frozenset({"/v1/chat/completions", "/v1/completions", "/v1/models", "/healthz", "/readyz"})
UNTRACED = frozenset({"/healthz", "/readyz"})


@dataclass(frozen=True)
class HttpMetrics:
    requests: Counter
    duration: Histogram

    @classmethod
    def create(cls, meter: Meter) -> HttpMetrics:
        return cls(
            requests=meter.create_counter(
                "llamagate_http_requests_total",
                unit="{request}",
                description="HTTP requests to the OpenAI-compatible API, by route and status",
            ),
            duration=seconds_histogram(
                meter,
                "llamagate_http_request_duration_seconds",
                "Time from an HTTP request's arrival to the end of its response (streams included)",
                REQUEST_BUCKETS_S,
            ),
        )


class HttpTelemetry:
    def __init__(self, app: ASGIApp, tracer: trace.Tracer, metrics: HttpMetrics | None) -> None:
        self._app = app
        self._tracer = tracer
        self._metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        # Unknown paths share one label: a scanner cannot grow the metric's series.
        route = scope["path"] if scope["path"] in ROUTES else "other"
        method = scope["method"]
        status = 500
        counted = False
        started = time.monotonic()
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        tracer = trace.NoOpTracer() if route in UNTRACED else self._tracer
        labels = {"route": route, "method": method}

        def count() -> None:
            # At the response's start, before its first byte: a client that has its answer
            # always finds its request counted.
            nonlocal counted
            counted = True
            if self._metrics is not None:
                self._metrics.requests.add(1, {**labels, "status": str(status)})

        with tracer.start_as_current_span(
            f"{method} {route}",
            context=propagate.extract(headers),
            kind=SpanKind.SERVER,
            attributes={"http.request.method": method, "http.route": route, "url.path": scope["path"]},
        ) as span:

            async def send_status(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                    span.set_attribute("http.response.status_code", status)
                    if status >= 500:
                        span.set_status(Status(StatusCode.ERROR))
                    count()
                await send(message)

            try:
                await self._app(scope, receive, send_status)
            finally:
                if not counted:
                    count()
                if self._metrics is not None:
                    self._metrics.duration.record(
                        time.monotonic() - started, {**labels, "status": str(status)}
                    )
