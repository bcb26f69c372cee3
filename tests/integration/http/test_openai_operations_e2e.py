"""The HTTP port in operation: its traces join the caller's and the gRPC path's, its metrics are on
the gateway's Prometheus endpoint, it drains on SIGTERM, and it fails closed with a 503.
The tests run in file order: the last ones stop the gateway (then restart it) and the safety service.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from services.gateway.tracing import SAFETY_INPUT_SPAN, SAFETY_OUTPUT_SPAN, TURN_SPAN
from services.inference.tracing import GENERATE_SPAN
from tests.integration.telemetry.otlp_collector import ExportedSpan, OtlpCollector
from tests.support.processes import free_port
from tests.support.stack import Stack, StackConfig, running_stack

pytestmark = pytest.mark.slow

MODEL = "llama-2-chat"
GATEWAY, INFERENCE = "llamagate-gateway", "llamagate-inference"
CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


@dataclass
class Operated:
    stack: Stack
    collector: OtlpCollector
    metrics_port: int


@pytest.fixture(scope="module")
def operated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operated]:
    collector = OtlpCollector().start()
    metrics_port = free_port()
    with pytest.MonkeyPatch.context() as env:
        # The services read these themselves (ServiceProcess passes the environment on).
        env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint)
        env.setenv("OTEL_TRACES_EXPORTER", "otlp")
        env.setenv("OTEL_METRICS_EXPORTER", "none")
        env.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
        env.delenv("OTEL_SDK_DISABLED", raising=False)
        # A long safety timeout, as in the reliability suite: on a busy 2-core box one check of the
        # drained stream's many chunks can queue past the 2 s default, and the reply would then (by
        # design) fail closed. A killed safety service still fails fast: its connection drops.
        config = StackConfig(
            gateway_args=("--metrics-port", str(metrics_port), "--grace-s", "60", "--safety-timeout-s", "15")
        )
        with running_stack(tmp_path_factory.mktemp("http-operations-stack"), config) as stack:
            yield Operated(stack, collector, metrics_port)
    collector.stop()


def client(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.http_base_url, api_key=stack.api_key, max_retries=0, timeout=120)


def test_a_request_is_one_trace_from_the_caller_through_the_backends(operated: Operated):
    traceparent = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"
    completion = client(operated.stack).chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Tell me a story about a garden."}],
        temperature=0,
        max_tokens=12,
        extra_headers={"traceparent": traceparent},
    )
    assert completion.choices[0].finish_reason in ("stop", "length")

    def spans(c: OtlpCollector) -> list[ExportedSpan]:
        return [s for s in c.spans if s.trace_id == CALLER_TRACE]

    def complete(c: OtlpCollector) -> bool:
        names = {(s.service, s.name) for s in spans(c)}
        return {
            (GATEWAY, "POST /v1/chat/completions"),
            (GATEWAY, TURN_SPAN),
            (INFERENCE, GENERATE_SPAN),
        } <= names

    assert operated.collector.wait_for(complete, timeout_s=60), [
        (s.service, s.name) for s in operated.collector.spans
    ]
    trace = spans(operated.collector)
    [server] = [s for s in trace if s.name == "POST /v1/chat/completions"]
    assert server.parent_span_id == CALLER_SPAN
    [turn] = [s for s in trace if s.name == TURN_SPAN]
    assert turn.parent_span_id == server.span_id
    for name in (SAFETY_INPUT_SPAN, SAFETY_OUTPUT_SPAN, "/llamagate.v1.InferenceService/Generate"):
        assert any(s.name == name and s.parent_span_id == turn.span_id for s in trace), name


def _scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    reply = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    reply.raise_for_status()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(reply.text)
        for sample in family.samples
    }


def test_http_requests_are_on_the_gateway_metrics(operated: Operated):
    def count(samples: dict, name: str, **labels: str) -> float:
        return samples.get((name, frozenset(labels.items())), 0.0)

    before = _scrape(operated.metrics_port)
    client(operated.stack).completions.create(model=MODEL, prompt="Once upon a time", max_tokens=3)
    after = _scrape(operated.metrics_port)
    route = {"route": "/v1/completions", "method": "POST", "status": "200"}
    assert (
        count(after, "llamagate_http_requests_total", **route)
        == count(before, "llamagate_http_requests_total", **route) + 1
    )
    # The reply itself is counted with the gRPC path's per-tenant metrics.
    finished = sum(
        v
        for (name, labels), v in after.items()
        if name == "llamagate_requests_total" and ("tenant", "dev") in labels
    )
    finished_before = sum(
        v
        for (name, labels), v in before.items()
        if name == "llamagate_requests_total" and ("tenant", "dev") in labels
    )
    assert finished == finished_before + 1


def test_sigterm_drains_a_stream_in_flight_then_stops(operated: Operated):
    stack = operated.stack
    stream = client(stack).chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Tell me a very long story."}],
        temperature=0,
        max_tokens=400,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"ignore_eos": True},
    )
    chunks = iter(stream)
    while not (first := next(chunks)).choices[0].delta.content:
        pass
    exit_code: list[int | None] = []
    stopping = threading.Thread(target=lambda: exit_code.append(stack.gateway.terminate(timeout_s=60)))
    stopping.start()
    rest = list(chunks)
    stopping.join(90)
    # The stream in flight finished in full; the gateway then exited cleanly.
    assert [c.choices[0].finish_reason for c in rest if c.choices and c.choices[0].finish_reason] == [
        "length"
    ]
    assert rest[-1].usage is not None and rest[-1].usage.completion_tokens == 400
    assert first.id == rest[-1].id
    assert exit_code == [0]
    # The stop came while the reply was streaming: the server waited for its connection.
    assert "Waiting for connections to close" in stack.gateway.log_tail(20000)
    with pytest.raises(openai.APIConnectionError):
        client(stack).models.list()
    stack.gateway.start()  # back, on the same ports, for the tests that follow
    assert [m.id for m in client(stack).models.list()] == [MODEL]


def test_safety_service_down_is_503_before_the_stream_starts(operated: Operated):
    stack = operated.stack
    stack.safety.kill()
    with pytest.raises(openai.InternalServerError) as error:
        client(stack).chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Tell me a story."}], stream=True
        )
    assert error.value.status_code == 503
    assert error.value.code == "service_unavailable"
