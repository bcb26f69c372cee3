"""What operators see of the prefix cache: the flag that turns it off, and its metrics (hit rate as
two token counters, cached blocks, evictions) read from the scheduler's stats."""

from __future__ import annotations

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from services.inference.config import parse_config
from services.inference.metrics import InferenceMetrics, snapshot_of
from tests.unit.engine.conversations import Chat, run_chats
from tests.unit.engine.test_prefix_cache import scheduler

REQUIRED = ["--ckpt-dir", "ckpt", "--tokenizer-path", "tok.model", "--device", "cpu"]


def test_prefix_caching_is_on_unless_turned_off() -> None:
    assert parse_config(REQUIRED).engine.prefix_caching
    assert not parse_config([*REQUIRED, "--no-prefix-caching"]).engine.prefix_caching
    assert parse_config([*REQUIRED, "--prefix-caching"]).engine.prefix_caching


def values(reader: InMemoryMetricReader) -> dict[str, float]:
    data = reader.get_metrics_data()
    assert data is not None
    return {
        metric.name: point.value  # type: ignore[union-attr]
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        for point in metric.data.data_points
    }


def test_hit_rate_cached_blocks_and_evictions_are_exported() -> None:
    s = scheduler(num_blocks=6)  # 5 usable blocks of 4 tokens
    # Turn 2 reuses turn 1's 2 full blocks; the second chat then needs room and evicts.
    run_chats(s, None, [Chat([[1, 2, 3, 4, 5, 6], [7, 8]], max_gen_len=4)])
    run_chats(s, None, [Chat([list(range(20, 36))], max_gen_len=2)])
    reader = InMemoryMetricReader()
    InferenceMetrics.create(
        MeterProvider(metric_readers=[reader]).get_meter("t"), lambda: snapshot_of(s.stats())
    )
    got = values(reader)
    assert got["llamagate_prefix_cache_lookup_tokens_total"] == 6 + 12 + 16  # turn 2: 6 + 4 generated + 2
    assert got["llamagate_prefix_cache_hit_tokens_total"] == 8
    assert got["llamagate_prefix_cache_evictions_total"] == s.allocator.evictions > 0
    assert got["llamagate_prefix_cache_blocks"] == s.allocator.num_cached > 0
    assert got["llamagate_kv_cache_utilization"] == 0.0  # cached but unreferenced blocks are free
