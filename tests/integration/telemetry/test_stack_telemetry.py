"""Acceptance: the three real services on loopback export one trace per chat turn (collected over
OTLP by a test collector), serve Prometheus metrics matching the traffic, and write JSON logs that
carry trace and request ids but no prompt text.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from llamagate.v1 import chat_service_pb2 as chat_pb
from llamagate.v1 import chat_service_pb2_grpc as chat_grpc
from llamagate.v1 import types_pb2 as types_pb
from services.gateway.tracing import SAFETY_INPUT_SPAN, SAFETY_OUTPUT_SPAN, TURN_SPAN
from services.inference.tracing import (
    DECODE_SPAN,
    FINISH_EVENT,
    FIRST_TOKEN_EVENT,
    GENERATE_SPAN,
    PREFILL_SPAN,
    QUEUE_WAIT_SPAN,
)
from tests.integration.telemetry.otlp_collector import ExportedSpan, OtlpCollector
from tests.support.processes import free_port
from tests.support.stack import Stack, StackConfig, running_stack

SERVICES = ("inference", "safety", "gateway")
# service.name of each process (the name passed to telemetry_config_from_args).
GATEWAY, INFERENCE, SAFETY = "llamagate-gateway", "llamagate-inference", "llamagate-safety"
# A marker that must never reach a log: the services run without --log-prompts.
PROMPT_MARKER = "zebra-quartz-lantern"
TURNS = 2
CHECK_STREAM = "/llamagate.v1.SafetyService/CheckStream"
SAMPLING = types_pb.SamplingParams(temperature=0.0, max_gen_len=12)
# A tenant whose limit (half a request per minute) refuses its first request.
TIGHT_KEY = "tight-tenant-key"
TIGHT_TENANT = {"tight": {"requests_per_minute": 0.5, "keys": [{"plain": TIGHT_KEY}]}}

pytestmark = pytest.mark.slow


@dataclass
class TracedStack:
    stack: Stack
    collector: OtlpCollector
    metrics_ports: dict[str, int]
    dones: list[chat_pb.Done]
    request_ids: list[str]
    rate_limited: grpc.StatusCode


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TracedStack]:
    collector = OtlpCollector().start()
    ports = {service: free_port() for service in SERVICES}
    with pytest.MonkeyPatch.context() as env:
        # The services read these themselves (ServiceProcess passes the environment on).
        env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint)
        env.setenv("OTEL_TRACES_EXPORTER", "otlp")
        env.setenv("OTEL_METRICS_EXPORTER", "none")
        env.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
        env.delenv("OTEL_SDK_DISABLED", raising=False)
        config = StackConfig(
            inference_args=(
                *StackConfig().inference_args,
                *("--metrics-port", str(ports["inference"]), "--log-format", "json"),
            ),
            safety_args=("--metrics-port", str(ports["safety"]), "--log-format", "json"),
            gateway_args=("--metrics-port", str(ports["gateway"]), "--log-format", "json"),
            tenants=TIGHT_TENANT,
        )
        with running_stack(tmp_path_factory.mktemp("traced-stack"), config) as stack:
            dones, request_ids = _chat(stack)
            yield TracedStack(stack, collector, ports, dones, request_ids, _over_the_limit(stack))
    collector.stop()


def _chat(stack: Stack) -> tuple[list[chat_pb.Done], list[str]]:
    """One Chat stream with TURNS turns, each waiting for the previous reply's Done."""
    contents = [f"Tell me about {PROMPT_MARKER} number {i}" for i in range(TURNS)]
    first = chat_pb.ChatRequest(
        start=chat_pb.ChatStart(
            messages=[types_pb.Message(role=types_pb.ROLE_USER, content=contents[0])], sampling=SAMPLING
        )
    )
    following = [
        chat_pb.ChatRequest(turn=chat_pb.ChatTurn(content=c, sampling=SAMPLING)) for c in contents[1:]
    ]
    dones: list[chat_pb.Done] = []
    request_ids: list[str] = []
    with stack.gateway_channel() as channel:
        stub = chat_grpc.ChatServiceStub(channel)
        responses = stub.Chat(_paced(first, following, dones), metadata=stack.metadata)
        for response in responses:
            kind = response.WhichOneof("event")
            if kind == "accepted":
                request_ids.append(response.accepted.request_id)
            elif kind == "done":
                dones.append(response.done)
                if len(dones) == TURNS:
                    break
    assert len(dones) == TURNS, f"got {len(dones)} done events"
    return dones, request_ids


def _over_the_limit(stack: Stack) -> grpc.StatusCode:
    """The status of a Complete call by the tight tenant (refused before any turn starts)."""
    with stack.gateway_channel() as channel:
        stub = chat_grpc.ChatServiceStub(channel)
        try:
            for _ in stub.Complete(
                chat_pb.CompleteRequest(prompt="hello"), metadata=(("authorization", f"Bearer {TIGHT_KEY}"),)
            ):
                pass
        except grpc.RpcError as error:
            return error.code()
    return grpc.StatusCode.OK


def _paced(
    first: chat_pb.ChatRequest, following: list[chat_pb.ChatRequest], dones: list[chat_pb.Done]
) -> Iterator[chat_pb.ChatRequest]:
    """The request stream of a sync Chat call (consumed on gRPC's own thread): each turn is sent
    once the previous reply's Done has arrived, as the contract asks."""
    yield first
    for index, request in enumerate(following, start=1):
        deadline = time.monotonic() + 120
        while len(dones) < index and time.monotonic() < deadline:
            time.sleep(0.05)
        yield request


def _spans_of_trace(collector: OtlpCollector, trace_id: str) -> list[ExportedSpan]:
    return [s for s in collector.spans if s.trace_id == trace_id]


def _one(spans: list[ExportedSpan], name: str, service: str) -> ExportedSpan:
    found = [s for s in spans if s.name == name and s.service == service]
    assert len(found) == 1, f"{service}/{name}: {[(s.service, s.name) for s in spans]}"
    return found[0]


def _child_named(spans: list[ExportedSpan], parent: ExportedSpan, name: str) -> ExportedSpan:
    found = [s for s in spans if s.name == name and s.parent_span_id == parent.span_id]
    assert len(found) == 1, (
        f"{name} under {parent.service}/{parent.name}: {[(s.service, s.name) for s in spans]}"
    )
    return found[0]


def _child(child: ExportedSpan, parent: ExportedSpan) -> None:
    assert child.trace_id == parent.trace_id
    assert child.parent_span_id == parent.span_id, f"{child.service}/{child.name} not under {parent.name}"


def test_each_turn_is_one_trace_across_the_three_services(traced: TracedStack) -> None:
    collector = traced.collector

    def complete(c: OtlpCollector) -> bool:
        # The CheckStream spans end last: when the gateway closes the stream after the turn's Done.
        turns = [s for s in c.spans if s.name == TURN_SPAN]
        generates = {s.trace_id for s in c.spans if s.name == GENERATE_SPAN}
        streams = [{s.trace_id for s in c.spans if s.name == CHECK_STREAM and s.service == service}
                   for service in (GATEWAY, SAFETY)]  # fmt: skip
        return len(turns) >= TURNS and all(
            t.trace_id in generates and all(t.trace_id in ids for ids in streams) for t in turns
        )

    assert collector.wait_for(complete, timeout_s=60), [(s.service, s.name) for s in collector.spans]
    turns = [s for s in collector.spans if s.name == TURN_SPAN]
    assert len({t.trace_id for t in turns}) == TURNS
    for turn in turns:
        spans = _spans_of_trace(collector, turn.trace_id)
        assert {s.service for s in spans} == {GATEWAY, INFERENCE, SAFETY}
        assert turn.service == GATEWAY and turn.parent_span_id == ""
        safety_input = _one(spans, SAFETY_INPUT_SPAN, GATEWAY)
        _child(safety_input, turn)
        check_client = _child_named(spans, safety_input, "/llamagate.v1.SafetyService/Check")
        assert check_client.service == GATEWAY
        assert _child_named(spans, check_client, "/llamagate.v1.SafetyService/Check").service == SAFETY

        generate_client = _child_named(spans, turn, "/llamagate.v1.InferenceService/Generate")
        generate_server = _child_named(spans, generate_client, "/llamagate.v1.InferenceService/Generate")
        assert generate_server.service == INFERENCE
        generate = _child_named(spans, generate_server, GENERATE_SPAN)
        for phase in (QUEUE_WAIT_SPAN, PREFILL_SPAN, DECODE_SPAN):
            _child_named(spans, generate, phase)
        assert [e.name for e in generate.span.events] == [FIRST_TOKEN_EVENT, FINISH_EVENT]

        # Output checks: chunk by chunk over CheckStream while generating, then the whole reply.
        outputs = [s for s in spans if s.name == SAFETY_OUTPUT_SPAN]
        assert outputs and all(o.service == GATEWAY and o.parent_span_id == turn.span_id for o in outputs)
        stream_client = _one(spans, CHECK_STREAM, GATEWAY)
        # One CheckStream per reply, opened with the generation (before the first chunk): the turn's child.
        assert stream_client.parent_span_id == turn.span_id, "CheckStream not under the turn"
        assert _child_named(spans, stream_client, CHECK_STREAM).service == SAFETY


def _scrape(port: int) -> dict[str, list[tuple[dict[str, str], float]]]:
    reply = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    reply.raise_for_status()
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(reply.text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def _total(samples: dict[str, list[tuple[dict[str, str], float]]], name: str, **match: str) -> float:
    return sum(v for labels, v in samples.get(name, []) if all(labels.get(k) == m for k, m in match.items()))


def test_each_service_serves_metrics_matching_the_traffic(traced: TracedStack) -> None:
    inference = _scrape(traced.metrics_ports["inference"])
    safety = _scrape(traced.metrics_ports["safety"])
    gateway = _scrape(traced.metrics_ports["gateway"])
    completion_tokens = sum(d.usage.completion_tokens for d in traced.dones)
    prompt_tokens = sum(d.usage.prompt_tokens for d in traced.dones)

    assert _total(inference, "llamagate_generate_requests_total") == TURNS
    assert _total(inference, "llamagate_ttft_seconds_count") == TURNS
    assert _total(inference, "llamagate_prompt_tokens_total") == prompt_tokens
    assert _total(inference, "llamagate_generated_tokens_total") >= completion_tokens
    for gauge in ("llamagate_queue_depth", "llamagate_running_batch_size", "llamagate_kv_cache_utilization"):
        assert gauge in inference, gauge

    assert _total(safety, "llamagate_safety_verdicts_total", direction="input") == TURNS
    assert _total(safety, "llamagate_safety_verdicts_total", direction="output") >= TURNS
    assert _total(safety, "llamagate_safety_check_seconds_count") >= 2 * TURNS

    assert _total(gateway, "llamagate_requests_total", tenant="dev") == TURNS
    assert (
        _total(gateway, "llamagate_tenant_tokens_total", tenant="dev", kind="generated") == completion_tokens
    )
    assert _total(gateway, "llamagate_gateway_request_duration_seconds_count") == TURNS
    assert traced.rate_limited == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert _total(gateway, "llamagate_rate_limited_total", tenant="tight") == 1
    assert _total(gateway, "llamagate_rate_limited_total", tenant="dev") == 0
    assert _total(gateway, "llamagate_requests_total", tenant="tight") == 0


def test_json_logs_carry_trace_and_request_ids_and_no_prompt(traced: TracedStack) -> None:
    for process in traced.stack.processes():
        text = process.log_path.read_text(errors="replace")
        assert PROMPT_MARKER not in text, f"{process.name} logged prompt text"
        lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
        assert lines, f"{process.name} wrote no JSON log lines"
        assert all({"ts", "level", "service", "msg"} <= set(line) for line in lines)
    # Gateway lines written while serving the chat belong to a turn's trace or to the Chat stream's.
    known_traces = {s.trace_id for s in traced.collector.spans if s.service == GATEWAY}
    text = traced.stack.gateway.log_path.read_text(errors="replace")
    gateway_lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    traced_lines = [line for line in gateway_lines if "trace_id" in line]
    assert traced_lines, "no gateway log line carries a trace id"
    assert {line["trace_id"] for line in traced_lines} <= known_traces
    logged_requests = {line.get("request_id") for line in gateway_lines}
    assert set(traced.request_ids) <= logged_requests, "a turn's request id is missing from the gateway log"
