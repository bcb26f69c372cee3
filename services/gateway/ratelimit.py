"""Per-tenant rate limits: requests and tokens per minute, each a token bucket.

Tokens are only known after a reply, so a request is admitted while the tenant's token bucket is
not in debt, and the reply's tokens are charged afterwards (the bucket may go negative; the next
requests then wait until it refills). Requests are charged up front.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from services.common.errors import Overloaded
from services.gateway.auth import Tenant


@dataclass
class TokenBucket:
    """`capacity` units, refilled at `rate_per_s`; `level` may go negative (debt)."""

    capacity: float
    rate_per_s: float
    level: float
    updated: float

    def refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.updated) * self.rate_per_s)
        self.updated = now

    def seconds_until(self, amount: float) -> float:
        return max(0.0, (amount - self.level) / self.rate_per_s)


def _bucket(per_minute: float | None, now: float) -> TokenBucket | None:
    if per_minute is None:
        return None
    return TokenBucket(capacity=per_minute, rate_per_s=per_minute / 60.0, level=per_minute, updated=now)


@dataclass
class _TenantBuckets:
    requests: TokenBucket | None
    tokens: TokenBucket | None


@dataclass
class RateLimiter:
    """Buckets per tenant, created on first use. Event-loop confined: no locking needed."""

    clock: Callable[[], float] = time.monotonic
    _tenants: dict[str, _TenantBuckets] = field(default_factory=dict)

    def _buckets(self, tenant: Tenant) -> _TenantBuckets:
        buckets = self._tenants.get(tenant.name)
        if buckets is None:
            now = self.clock()
            buckets = _TenantBuckets(
                _bucket(tenant.requests_per_minute, now), _bucket(tenant.tokens_per_minute, now)
            )
            self._tenants[tenant.name] = buckets
        return buckets

    def admit(self, tenant: Tenant) -> None:
        """Take one request; Overloaded with the wait when the tenant is over a limit."""
        buckets = self._buckets(tenant)
        now = self.clock()
        if buckets.tokens is not None:
            buckets.tokens.refill(now)
            if buckets.tokens.level <= 0:
                wait = buckets.tokens.seconds_until(1.0)
                raise Overloaded(
                    f"tenant {tenant.name} is over its limit of {tenant.tokens_per_minute:g} tokens per minute; "
                    f"retry in {wait:.1f}s",
                    retry_after_s=wait,
                )
        if buckets.requests is not None:
            buckets.requests.refill(now)
            if buckets.requests.level < 1.0:
                wait = buckets.requests.seconds_until(1.0)
                raise Overloaded(
                    f"tenant {tenant.name} is over its limit of {tenant.requests_per_minute:g} requests per "
                    f"minute; retry in {wait:.1f}s",
                    retry_after_s=wait,
                )
            buckets.requests.level -= 1.0

    def charge_tokens(self, tenant: Tenant, tokens: int) -> None:
        buckets = self._buckets(tenant)
        if buckets.tokens is not None and tokens > 0:
            buckets.tokens.refill(self.clock())
            buckets.tokens.level -= tokens
