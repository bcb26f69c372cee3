"""The inference service's metrics: per-request latencies and token counts, the scheduler's state."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from opentelemetry.metrics import (
    CallbackOptions,
    Counter,
    Histogram,
    Meter,
    ObservableCounter,
    ObservableGauge,
    Observation,
)

from services.common.metrics import REQUEST_BUCKETS_S, TTFT_BUCKETS_S, seconds_histogram
from services.inference.engine.scheduler import SchedulerStats

# Inter-token latency is one decode step (sub-ms to ~1 s).
INTER_TOKEN_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28)


@dataclass(frozen=True)
class SchedulerSnapshot:
    queue_depth: int
    running_batch_size: int
    kv_cache_utilization: float  # fraction of KV-cache blocks in use, 0..1
    # The prefix cache: blocks cached now, and running totals since the engine started.
    prefix_cache_blocks: int = 0
    prefix_cache_evictions: int = 0
    prefix_cache_lookup_tokens: int = 0
    prefix_cache_hit_tokens: int = 0


def snapshot_of(stats: SchedulerStats) -> SchedulerSnapshot:
    # Unreferenced cached blocks count as free: any allocation may evict them.
    in_use = 1.0 - stats.free_blocks / max(stats.total_blocks, 1)
    return SchedulerSnapshot(
        stats.waiting,
        stats.prefilling + stats.decoding,
        in_use,
        prefix_cache_blocks=stats.cached_blocks,
        prefix_cache_evictions=stats.evictions,
        prefix_cache_lookup_tokens=stats.prompt_tokens_looked_up,
        prefix_cache_hit_tokens=stats.prompt_tokens_cached,
    )


@dataclass(frozen=True)
class InferenceMetrics:
    """Per-request latencies and token counts of the engine, plus the scheduler's state.

    The scheduler gauges are observed when metrics are collected (a scrape or an OTLP export), by
    calling `scheduler_state`: the engine needs no metrics code in its loop, and the values are
    current at collection time. The callback runs on the exporter's thread, so it must be
    thread-safe (e.g. `Engine.stats()`, which copies under a lock).
    """

    queue_wait: Histogram
    ttft: Histogram
    inter_token: Histogram
    request_duration: Histogram
    prompt_tokens: Counter
    generated_tokens: Counter
    requests: Counter
    queue_depth: ObservableGauge
    running_batch_size: ObservableGauge
    kv_cache_utilization: ObservableGauge
    prefix_cache_blocks: ObservableGauge
    prefix_cache_evictions: ObservableCounter
    prefix_cache_lookup_tokens: ObservableCounter
    prefix_cache_hit_tokens: ObservableCounter

    @classmethod
    def create(cls, meter: Meter, scheduler_state: Callable[[], SchedulerSnapshot]) -> InferenceMetrics:
        def observe(field: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
            return lambda options: [Observation(getattr(scheduler_state(), field))]

        return cls(
            queue_wait=seconds_histogram(
                meter, "llamagate_queue_wait_seconds", "Time from submission to admission", TTFT_BUCKETS_S
            ),
            ttft=seconds_histogram(
                meter, "llamagate_ttft_seconds", "Time from submission to the first token", TTFT_BUCKETS_S
            ),
            inter_token=seconds_histogram(
                meter,
                "llamagate_inter_token_latency_seconds",
                "Time between consecutive generated tokens of one request",
                INTER_TOKEN_BUCKETS_S,
            ),
            request_duration=seconds_histogram(
                meter,
                "llamagate_request_duration_seconds",
                "Time from submission to the end of generation",
                REQUEST_BUCKETS_S,
            ),
            prompt_tokens=meter.create_counter(
                "llamagate_prompt_tokens_total", unit="{token}", description="Prompt tokens prefilled"
            ),
            generated_tokens=meter.create_counter(
                "llamagate_generated_tokens_total", unit="{token}", description="Tokens generated"
            ),
            requests=meter.create_counter(
                "llamagate_generate_requests_total",
                unit="{request}",
                description="Finished generate requests by finish reason",
            ),
            queue_depth=meter.create_observable_gauge(
                "llamagate_queue_depth",
                [observe("queue_depth")],
                unit="{request}",
                description="Requests waiting for admission",
            ),
            running_batch_size=meter.create_observable_gauge(
                "llamagate_running_batch_size",
                [observe("running_batch_size")],
                unit="{request}",
                description="Requests being prefilled or decoded",
            ),
            kv_cache_utilization=meter.create_observable_gauge(
                "llamagate_kv_cache_utilization",
                [observe("kv_cache_utilization")],
                unit="1",
                description="Fraction of KV-cache blocks in use",
            ),
            prefix_cache_blocks=meter.create_observable_gauge(
                "llamagate_prefix_cache_blocks",
                [observe("prefix_cache_blocks")],
                unit="{block}",
                description="KV-cache blocks in the prefix cache (shared, or free until evicted)",
            ),
            prefix_cache_evictions=meter.create_observable_counter(
                "llamagate_prefix_cache_evictions_total",
                [observe("prefix_cache_evictions")],
                unit="{block}",
                description="Cached blocks evicted to make room",
            ),
            # hit tokens / lookup tokens is the prefix cache's hit rate.
            prefix_cache_lookup_tokens=meter.create_observable_counter(
                "llamagate_prefix_cache_lookup_tokens_total",
                [observe("prefix_cache_lookup_tokens")],
                unit="{token}",
                description="Prompt tokens of admitted requests looked up in the prefix cache",
            ),
            prefix_cache_hit_tokens=meter.create_observable_counter(
                "llamagate_prefix_cache_hit_tokens_total",
                [observe("prefix_cache_hit_tokens")],
                unit="{token}",
                description="Prompt tokens served from the prefix cache instead of prefilled",
            ),
        )

    def record_admitted(self, queue_wait_s: float) -> None:
        self.queue_wait.record(queue_wait_s)

    def record_first_token(self, ttft_s: float) -> None:
        self.ttft.record(ttft_s)

    def record_inter_token(self, latency_s: float, tokens: int = 1) -> None:
        """`tokens` > 1 when several tokens arrive together: each gets the mean gap."""
        for _ in range(tokens):
            self.inter_token.record(latency_s / tokens)

    def record_finished(
        self, duration_s: float, prompt_tokens: int, generated_tokens: int, finish_reason: str
    ) -> None:
        self.request_duration.record(duration_s, {"finish_reason": finish_reason})
        self.prompt_tokens.add(prompt_tokens)
        self.generated_tokens.add(generated_tokens)
        self.requests.add(1, {"finish_reason": finish_reason})
