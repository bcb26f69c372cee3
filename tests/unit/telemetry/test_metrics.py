"""Each metric method records what it is called with, under the documented names and labels."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from services.common.metrics import TTFT_BUCKETS_S
from services.common.telemetry import TelemetryConfig, setup_telemetry
from services.gateway.metrics import GatewayMetrics
from services.inference.metrics import InferenceMetrics, SchedulerSnapshot
from services.safety.metrics import SafetyMetrics
from tests.unit.telemetry.readings import collect, labels


@pytest.fixture
def reader() -> InMemoryMetricReader:
    return InMemoryMetricReader()


@pytest.fixture
def provider(reader: InMemoryMetricReader) -> MeterProvider:
    return MeterProvider(metric_readers=[reader])


def test_inference_metrics_record_latencies_tokens_and_scheduler_state(
    provider: MeterProvider, reader: InMemoryMetricReader
) -> None:
    states = iter([SchedulerSnapshot(3, 2, 0.25), SchedulerSnapshot(1, 4, 0.5)])
    state = next(states)
    metrics = InferenceMetrics.create(provider.get_meter("t"), lambda: state)
    metrics.record_admitted(0.02)
    metrics.record_first_token(0.3)
    metrics.record_inter_token(0.03)
    metrics.record_inter_token(0.06, tokens=3)
    metrics.record_finished(1.5, prompt_tokens=12, generated_tokens=4, finish_reason="stop")
    metrics.record_finished(0.5, prompt_tokens=8, generated_tokens=0, finish_reason="cancelled")
    got = collect(reader)
    assert got["llamagate_queue_depth"][labels()].value == 3
    state = next(states)
    got = collect(reader)
    assert got["llamagate_queue_wait_seconds"][labels()].total == pytest.approx(0.02)
    ttft = got["llamagate_ttft_seconds"][labels()]
    assert (ttft.value, ttft.total, ttft.bounds) == (1, pytest.approx(0.3), TTFT_BUCKETS_S)
    itl = got["llamagate_inter_token_latency_seconds"][labels()]
    assert itl.value == 4 and itl.total == pytest.approx(0.03 + 0.06)
    assert got["llamagate_request_duration_seconds"][labels(finish_reason="stop")].total == 1.5
    assert got["llamagate_prompt_tokens_total"][labels()].value == 20
    assert got["llamagate_generated_tokens_total"][labels()].value == 4
    assert got["llamagate_generate_requests_total"][labels(finish_reason="cancelled")].value == 1
    # The gauges are read from the scheduler when collected.
    assert got["llamagate_queue_depth"][labels()].value == 1
    assert got["llamagate_running_batch_size"][labels()].value == 4
    assert got["llamagate_kv_cache_utilization"][labels()].value == 0.5


def test_safety_verdicts_count_once_per_violated_category(
    provider: MeterProvider, reader: InMemoryMetricReader
) -> None:
    metrics = SafetyMetrics.create(provider.get_meter("t"))
    metrics.record_verdict("input", [], duration_s=0.01, judged_tokens=10)
    metrics.record_verdict("input", ["O1", "O3"], duration_s=0.02, judged_tokens=5)
    metrics.record_verdict("output", ["O3"], duration_s=0.005, judged_tokens=7, mode="stream")

    verdicts = collect(reader)["llamagate_safety_verdicts_total"]
    assert set(verdicts) == {
        labels(direction="input", category="none", verdict="safe"),
        labels(direction="input", category="O1", verdict="unsafe"),
        labels(direction="input", category="O3", verdict="unsafe"),
        labels(direction="output", category="O3", verdict="unsafe"),
    }
    assert all(point.value == 1 for point in verdicts.values())
    got = collect(reader)
    assert got["llamagate_safety_check_seconds"][labels(direction="input", mode="unary")].value == 2
    assert got["llamagate_safety_check_seconds"][labels(direction="output", mode="stream")].value == 1
    assert got["llamagate_safety_judged_tokens_total"][labels(direction="input")].value == 15


def test_gateway_metrics_are_per_tenant(provider: MeterProvider, reader: InMemoryMetricReader) -> None:
    metrics = GatewayMetrics.create(provider.get_meter("t"))
    metrics.record_first_token("acme", 0.4)
    metrics.record_finished("acme", "stop", 2.0, prompt_tokens=30, generated_tokens=9)
    metrics.record_finished("acme", "safety", 0.1, prompt_tokens=5, generated_tokens=0)
    metrics.record_finished("globex", "length", 3.0, prompt_tokens=7, generated_tokens=64)
    metrics.record_rate_limited("globex")
    metrics.record_rate_limited("globex")
    metrics.record_safety_block("acme", "input")

    got = collect(reader)
    assert got["llamagate_requests_total"][labels(tenant="acme", finish_reason="stop")].value == 1
    assert got["llamagate_requests_total"][labels(tenant="globex", finish_reason="length")].value == 1
    assert got["llamagate_tenant_tokens_total"][labels(tenant="acme", kind="prompt")].value == 35
    assert got["llamagate_tenant_tokens_total"][labels(tenant="globex", kind="generated")].value == 64
    assert got["llamagate_rate_limited_total"][labels(tenant="globex")].value == 2
    assert labels(tenant="acme") not in got["llamagate_rate_limited_total"]
    assert got["llamagate_gateway_ttft_seconds"][labels(tenant="acme")].total == pytest.approx(0.4)
    assert got["llamagate_safety_blocks_total"][labels(tenant="acme", direction="input")].value == 1


def test_prometheus_registry_exposes_the_same_numbers_with_buckets() -> None:
    telemetry = setup_telemetry(TelemetryConfig("inference"))  # port 0: registry only, no server
    try:
        assert telemetry.metrics_registry is not None
        metrics = InferenceMetrics.create(telemetry.meter, lambda: SchedulerSnapshot(0, 0, 0.0))
        for ttft in (0.004, 0.2, 0.2, 40.0):
            metrics.record_first_token(ttft)
        metrics.record_finished(1.0, prompt_tokens=5, generated_tokens=6, finish_reason="stop")
        families = {
            f.name: f
            for f in text_string_to_metric_families(generate_latest(telemetry.metrics_registry).decode())
        }
        buckets = {
            s.labels["le"]: s.value
            for s in families["llamagate_ttft_seconds"].samples
            if s.name.endswith("_bucket")
        }
        assert buckets["0.01"] == 1 and buckets["0.25"] == 3 and buckets["30.0"] == 3 and buckets["+Inf"] == 4
        # prometheus_client strips "_total" from counter family names; the samples keep it.
        (sample,) = families["llamagate_generated_tokens"].samples
        assert (sample.name, sample.value) == ("llamagate_generated_tokens_total", 6)
    finally:
        telemetry.shutdown()
