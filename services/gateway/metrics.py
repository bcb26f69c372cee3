"""The gateway's metrics: what the public API looks like from outside, per tenant, safety included."""

from __future__ import annotations

from dataclasses import dataclass

from opentelemetry.metrics import Counter, Histogram, Meter

from services.common.metrics import REQUEST_BUCKETS_S, STAGE_BUCKETS_S, TTFT_BUCKETS_S, seconds_histogram


@dataclass(frozen=True)
class GatewayMetrics:
    """What the public API looks like from outside: per tenant, safety included."""

    ttft: Histogram
    request_duration: Histogram
    requests: Counter
    rate_limited: Counter
    tenant_tokens: Counter
    safety_blocks: Counter
    stages: Histogram

    @classmethod
    def create(cls, meter: Meter) -> GatewayMetrics:
        return cls(
            ttft=seconds_histogram(
                meter,
                "llamagate_gateway_ttft_seconds",
                "Time from a turn's arrival to its first text delta sent to the client",
                TTFT_BUCKETS_S,
            ),
            request_duration=seconds_histogram(
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
            stages=seconds_histogram(
                meter,
                "llamagate_gateway_stage_seconds",
                "Where a reply's time goes: each safety check, each audit write, generation to its first token",
                STAGE_BUCKETS_S,
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

    def record_stage(self, stage: str, seconds: float) -> None:
        """`stage`: input_check, first_chunk_check, chunk_check (the later chunks), final_check
        (each a safety call, round trip included), audit_write (one verdict made durable),
        first_token (GenerateStart sent -> the first generated token at the gateway)."""
        self.stages.record(seconds, {"stage": stage})
