"""The metrics each service exports: names, units, buckets and labels in one place.

One dataclass per service, built from a `Meter` (`Telemetry.meter`); services call its methods,
never the instruments directly, so a label or bucket change happens here only. The same instruments
are scraped from the service's /metrics endpoint and pushed over OTLP when that is configured.
Label values are bounded sets (directions, category codes, finish reasons, configured tenants):
never put request ids or text in a label.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from opentelemetry.metrics import CallbackOptions, Counter, Histogram, Meter, ObservableGauge, Observation

# Latency buckets in seconds. TTFT spans queueing + prefill (ms to tens of s on a busy GPU);
# inter-token latency is one decode step (sub-ms to ~1 s); end-to-end covers long generations.
TTFT_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
INTER_TOKEN_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28)
REQUEST_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 320.0)
SAFETY_CHECK_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

# The category label of a verdict that violated nothing.
NO_CATEGORY = "none"


def _seconds(meter: Meter, name: str, description: str, buckets: tuple[float, ...]) -> Histogram:
    return meter.create_histogram(
        name, unit="s", description=description, explicit_bucket_boundaries_advisory=buckets
    )


@dataclass(frozen=True)
class SchedulerSnapshot:
    queue_depth: int
    running_batch_size: int
    kv_cache_utilization: float  # fraction of KV-cache blocks in use, 0..1


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

    @classmethod
    def create(cls, meter: Meter, scheduler_state: Callable[[], SchedulerSnapshot]) -> InferenceMetrics:
        def observe(field: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
            return lambda options: [Observation(getattr(scheduler_state(), field))]

        return cls(
            queue_wait=_seconds(
                meter, "llamagate_queue_wait_seconds", "Time from submission to admission", TTFT_BUCKETS_S
            ),
            ttft=_seconds(
                meter, "llamagate_ttft_seconds", "Time from submission to the first token", TTFT_BUCKETS_S
            ),
            inter_token=_seconds(
                meter,
                "llamagate_inter_token_latency_seconds",
                "Time between consecutive generated tokens of one request",
                INTER_TOKEN_BUCKETS_S,
            ),
            request_duration=_seconds(
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


@dataclass(frozen=True)
class SafetyMetrics:
    verdicts: Counter
    check_duration: Histogram
    judged_tokens: Counter

    @classmethod
    def create(cls, meter: Meter) -> SafetyMetrics:
        return cls(
            verdicts=meter.create_counter(
                "llamagate_safety_verdicts_total",
                unit="{verdict}",
                description="Safety verdicts by direction, violated category and outcome",
            ),
            check_duration=_seconds(
                meter,
                "llamagate_safety_check_seconds",
                "Time to judge one item or stream chunk",
                SAFETY_CHECK_BUCKETS_S,
            ),
            judged_tokens=meter.create_counter(
                "llamagate_safety_judged_tokens_total", unit="{token}", description="Tokens classified"
            ),
        )

    def record_verdict(
        self,
        direction: str,
        violated_categories: Iterable[str],
        duration_s: float,
        judged_tokens: int = 0,
        mode: str = "unary",
    ) -> None:
        """One judged item. `direction` is "input" or "output"; `mode` is "unary" or "stream".

        A safe verdict counts once under category "none"; an unsafe one counts once per violated
        category, so a breakdown by category sums to the violations of that category.
        """
        violated = list(violated_categories)
        if violated:
            for category in violated:
                self.verdicts.add(1, {"direction": direction, "category": category, "verdict": "unsafe"})
        else:
            self.verdicts.add(1, {"direction": direction, "category": NO_CATEGORY, "verdict": "safe"})
        self.check_duration.record(duration_s, {"direction": direction, "mode": mode})
        self.judged_tokens.add(judged_tokens, {"direction": direction})


@dataclass(frozen=True)
class GatewayMetrics:
    """What the public API looks like from outside: per tenant, safety included."""

    ttft: Histogram
    request_duration: Histogram
    requests: Counter
    rate_limited: Counter
    tenant_tokens: Counter
    safety_blocks: Counter

    @classmethod
    def create(cls, meter: Meter) -> GatewayMetrics:
        return cls(
            ttft=_seconds(
                meter,
                "llamagate_gateway_ttft_seconds",
                "Time from a turn's arrival to its first text delta sent to the client",
                TTFT_BUCKETS_S,
            ),
            request_duration=_seconds(
                meter,
                "llamagate_gateway_request_duration_seconds",
                "Time from a turn's arrival to its Done event",
                REQUEST_BUCKETS_S,
            ),
            requests=meter.create_counter(
                "llamagate_requests_total", unit="{request}", description="Chat turns and completions"
            ),
            rate_limited=meter.create_counter(
                "llamagate_rate_limited_total",
                unit="{request}",
                description="Requests refused by rate limits",
            ),
            tenant_tokens=meter.create_counter(
                "llamagate_tenant_tokens_total", unit="{token}", description="Tokens by tenant and kind"
            ),
            safety_blocks=meter.create_counter(
                "llamagate_safety_blocks_total",
                unit="{request}",
                description="Turns refused by the safety filter, by direction",
            ),
        )

    def record_first_token(self, tenant: str, ttft_s: float) -> None:
        self.ttft.record(ttft_s, {"tenant": tenant})

    def record_finished(
        self,
        tenant: str,
        finish_reason: str,
        duration_s: float,
        prompt_tokens: int,
        generated_tokens: int,
    ) -> None:
        self.requests.add(1, {"tenant": tenant, "finish_reason": finish_reason})
        self.request_duration.record(duration_s, {"tenant": tenant, "finish_reason": finish_reason})
        self.tenant_tokens.add(prompt_tokens, {"tenant": tenant, "kind": "prompt"})
        self.tenant_tokens.add(generated_tokens, {"tenant": tenant, "kind": "generated"})

    def record_rate_limited(self, tenant: str) -> None:
        self.rate_limited.add(1, {"tenant": tenant})

    def record_safety_block(self, tenant: str, direction: str) -> None:
        self.safety_blocks.add(1, {"tenant": tenant, "direction": direction})
