"""What the gateway needs from its two backends, as small interfaces over domain types.

The reply pipeline is written against these Protocols; grpc_backends.py implements them over the
InferenceService and SafetyService stubs. Keeping gRPC out of the pipeline keeps its logic
(hold-back, cancellation, fail-closed) readable on its own.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from services.common.dialog import Message
from services.common.verdicts import Direction, Verdict
from services.gateway.sampling import SamplingParams


class FinishReason(enum.StrEnum):
    STOP = "stop"
    LENGTH = "length"
    SAFETY = "safety"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class GenerationRequest:
    """Exactly one of `dialog` (chat) and `prompt` (text completion) is set."""

    request_id: str
    sampling: SamplingParams
    dialog: tuple[Message, ...] | None = None
    prompt: str | None = None
    echo: bool = False


@dataclass(frozen=True)
class GenerationStarted:
    request_id: str
    prompt_tokens: int


@dataclass(frozen=True)
class GenerationDelta:
    text: str
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    echo: bool = False


@dataclass(frozen=True)
class GenerationDone:
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    # Of prompt_tokens, those the model took from its prefix cache.
    cached_prompt_tokens: int = 0


GenerationEvent = GenerationStarted | GenerationDelta | GenerationDone


class Generation(Protocol):
    """One generation in flight: iterate its events; cancel() asks the backend to stop it."""

    def events(self) -> AsyncGenerator[GenerationEvent, None]: ...

    async def cancel(self) -> None: ...

    def close(self) -> None:
        """Drop the call (also stops the generation if it still runs). Idempotent."""


class OpenCall(Protocol):
    """A generation call opened before its request is known; nothing reaches the model until start()."""

    def start(self, request: GenerationRequest) -> Generation: ...

    def close(self) -> None:
        """Drop the call unstarted (or stop the generation start() began). Idempotent."""


class InferenceBackend(Protocol):
    def open(self, timeout_s: float | None) -> OpenCall:
        """Open a call now, so its setup overlaps the input check; the request follows in start()."""


class OutputCheck(Protocol):
    """Moderates one output chunk by chunk; each verdict covers the whole output so far, in context."""

    async def check_chunk(self, text: str, timeout_s: float) -> Verdict: ...

    def close(self) -> None: ...


class SafetyBackend(Protocol):
    async def check(self, dialog: Sequence[Message], direction: Direction, timeout_s: float) -> Verdict: ...

    def output_check(self, context: Sequence[Message], timeout_s: float | None) -> OutputCheck: ...
