"""What every reply the gateway serves goes through, in Chat and Complete alike: admission by the
rate limiter, the pipeline, its turn span, and the accounting once it is done."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from opentelemetry import trace

from services.common.errors import Overloaded
from services.gateway.auth import Tenant
from services.gateway.metrics import GatewayMetrics
from services.gateway.pipeline import Done, ReplyEvent, ReplyPipeline, SafetyNotice, Text
from services.gateway.ratelimit import RateLimiter

# The reply line keeps the logger it was always logged under: log queries select on its name.
log = logging.getLogger("services.gateway.servicer")


@dataclass
class TurnMeter:
    """Feeds one turn's events to the gateway metrics (TTFT as the client sees it, blocks, totals)."""

    metrics: GatewayMetrics | None
    tenant: str
    started: float = field(default_factory=time.monotonic)
    first_text: bool = False

    def observe(self, event: ReplyEvent) -> None:
        if self.metrics is None:
            return
        if isinstance(event, Text) and not event.echo and not self.first_text:
            self.first_text = True
            self.metrics.record_first_token(self.tenant, time.monotonic() - self.started)
        elif isinstance(event, SafetyNotice) and not event.verdict.safe:
            self.metrics.record_safety_block(self.tenant, str(event.verdict.direction))
        elif isinstance(event, Done):
            self.metrics.record_finished(
                self.tenant,
                str(event.finish_reason),
                time.monotonic() - self.started,
                event.prompt_tokens,
                event.completion_tokens,
            )


@dataclass(frozen=True)
class Replies:
    pipeline: ReplyPipeline
    limiter: RateLimiter
    metrics: GatewayMetrics | None
    tracer: trace.Tracer

    def admit(self, tenant: Tenant) -> None:
        try:
            self.limiter.admit(tenant)
        except Overloaded:
            if self.metrics is not None:
                self.metrics.record_rate_limited(tenant.name)
            raise

    def meter(self, tenant: Tenant) -> TurnMeter:
        return TurnMeter(self.metrics, tenant.name)

    def finished(self, tenant: Tenant, done: Done) -> None:
        self.limiter.charge_tokens(tenant, done.prompt_tokens + done.completion_tokens)
        log.info(
            "reply request_id=%s tenant=%s finish=%s prompt_tokens=%d completion_tokens=%d",
            done.request_id,
            tenant.name,
            done.finish_reason,
            done.prompt_tokens,
            done.completion_tokens,
            # Chat logs this in the stream's handler, outside the turn's bind_request_id.
            extra={"request_id": done.request_id},
        )
