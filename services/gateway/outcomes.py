"""The outcomes of a reply's stages (pipeline.py): each stage returns how it ended, and
`ReplyPipeline._ending` turns the way a reply ended into its last events.

    input check ── Refused | Admitted
    streaming   ── GenerationEnded | Stopped | Cancelled   (after the released text)
    whole reply ── ReplyEnded | Stopped
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from services.common.verdicts import Verdict
from services.gateway.backends import FinishReason
from services.gateway.moderation import Chunk


@dataclass(frozen=True)
class Progress:
    """What a reply has produced so far: token counts as the backend reports them, released text."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    # Everything released as reply text (not echo).
    released: str = ""
    # Of prompt_tokens, those the model took from its prefix cache.
    cached_prompt_tokens: int = 0


@dataclass(frozen=True)
class Refused:
    """The input check found the request unsafe: nothing is generated."""

    verdict: Verdict


@dataclass(frozen=True)
class Admitted:
    """The input may be answered. `durable` is the (started) write of its verdict's audit record."""

    verdict: Verdict | None  # None: unchecked under fail-open
    durable: asyncio.Future[None]


@dataclass(frozen=True)
class GenerationEnded:
    """The model finished and every streamed chunk passed; the whole reply is judged next."""

    finish_reason: FinishReason
    progress: Progress
    # Buffer mode: the reply's text, released only once the whole reply is judged safe.
    held: Chunk | None = None


@dataclass(frozen=True)
class ReplyEnded:
    """The whole reply was judged safe (or unchecked under fail-open): it ends as the model ended it."""

    finish_reason: FinishReason
    progress: Progress
    verdict: Verdict | None
    held: Chunk | None = None


@dataclass(frozen=True)
class Stopped:
    """Part of the reply was judged unsafe: the generation is cancelled and the unsafe text dropped."""

    verdict: Verdict
    progress: Progress


@dataclass(frozen=True)
class Cancelled:
    """The client cancelled the reply."""

    progress: Progress


StreamOutcome = GenerationEnded | Stopped | Cancelled
Ending = Refused | ReplyEnded | Stopped | Cancelled
