"""When to retry a reply and how long to wait first: exponential backoff with full jitter.

Why not gRPC's built-in retry (service config)? It can only replay a call until the first
response arrives. A chat session lives on one long stream: when the gateway restarts between
turns, the next turn fails on a stream that is long committed, and only the SDK can resume it by
opening a new stream with the conversation so far. One policy here covers both cases.

The rule that matters: a reply that already streamed text is never retried, since a second
attempt would show the caller different text after what they already saw.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import grpc

from llamagate.client.errors import ApiError


@dataclass(frozen=True)
class RetryPolicy:
    """`max_attempts` counts the first try; backoff n waits uniform(0, min(max, initial * multiplier**n)).

    A server's RetryInfo (`ApiError.retry_after`) is honoured as a lower bound on the wait.
    """

    max_attempts: int = 5
    initial_backoff_s: float = 0.2
    max_backoff_s: float = 5.0
    multiplier: float = 2.0
    retryable_codes: frozenset[grpc.StatusCode] = field(
        default_factory=lambda: frozenset({grpc.StatusCode.UNAVAILABLE})
    )

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if self.initial_backoff_s < 0 or self.max_backoff_s < self.initial_backoff_s:
            raise ValueError("need 0 <= initial_backoff_s <= max_backoff_s")
        if self.multiplier < 1:
            raise ValueError(f"multiplier must be >= 1, got {self.multiplier}")

    def should_retry(self, error: ApiError, attempt: int, *, streamed_text: bool) -> bool:
        """Whether to try again after `attempt` (1-based) failed with `error`."""
        return not streamed_text and attempt < self.max_attempts and error.code in self.retryable_codes

    def backoff_s(self, attempt: int, rng: random.Random, retry_after: float | None = None) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based)."""
        ceiling = min(self.max_backoff_s, self.initial_backoff_s * self.multiplier ** (attempt - 1))
        wait = rng.uniform(0.0, ceiling)
        return max(wait, retry_after) if retry_after is not None else wait


NO_RETRY = RetryPolicy(max_attempts=1)
