"""The SDK's value types: sampling parameters, dialog messages, safety verdicts and reply events.

They mirror llamagate.v1 messages as frozen dataclasses and enums so callers never handle
protobuf objects; `*_from_pb` / `to_pb` are the only places that know the wire format.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from typing import TypeVar

from llamagate.v1 import chat_service_pb2 as chat_pb
from llamagate.v1 import types_pb2


class Role(enum.StrEnum):
    USER = "user"
    ASSISTANT = "assistant"


_E = TypeVar("_E", "Direction", "FinishReason")

_ROLE_TO_PB = {Role.USER: types_pb2.ROLE_USER, Role.ASSISTANT: types_pb2.ROLE_ASSISTANT}


@dataclass(frozen=True)
class Message:
    """One turn of a conversation (the system prompt is passed separately)."""

    role: Role
    content: str

    def to_pb(self) -> types_pb2.Message:
        return types_pb2.Message(role=_ROLE_TO_PB[self.role], content=self.content)


@dataclass(frozen=True)
class Sampling:
    """How to sample a reply; a field left as None takes the server's default."""

    temperature: float | None = None
    top_p: float | None = None
    max_gen_len: int | None = None
    seed: int | None = None
    logprobs: bool = False
    stop: tuple[str, ...] = ()
    # Generate past end-of-sequence up to max_gen_len (benchmarks, fixed-length tests).
    ignore_eos: bool = False

    def merged(self, override: Sampling | None) -> Sampling:
        """These parameters with every field that `override` sets taking its value."""
        if override is None:
            return self
        changes = {
            f.name: getattr(override, f.name)
            for f in fields(override)
            if getattr(override, f.name) not in (None, False, ())
        }
        return replace(self, **changes)

    def to_pb(self) -> types_pb2.SamplingParams:
        params = types_pb2.SamplingParams(
            logprobs=self.logprobs, stop=list(self.stop), ignore_eos=self.ignore_eos
        )
        if self.temperature is not None:
            params.temperature = self.temperature
        if self.top_p is not None:
            params.top_p = self.top_p
        if self.max_gen_len is not None:
            params.max_gen_len = self.max_gen_len
        if self.seed is not None:
            params.seed = self.seed
        return params


class FinishReason(enum.Enum):
    UNSPECIFIED = types_pb2.FINISH_REASON_UNSPECIFIED
    STOP = types_pb2.FINISH_REASON_STOP
    LENGTH = types_pb2.FINISH_REASON_LENGTH
    SAFETY = types_pb2.FINISH_REASON_SAFETY
    CANCELLED = types_pb2.FINISH_REASON_CANCELLED


class Direction(enum.Enum):
    UNSPECIFIED = types_pb2.DIRECTION_UNSPECIFIED
    INPUT = types_pb2.DIRECTION_INPUT
    OUTPUT = types_pb2.DIRECTION_OUTPUT


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    # Of prompt_tokens, those the server reused from its prefix cache (OpenAI's
    # prompt_tokens_details.cached_tokens).
    cached_prompt_tokens: int = 0


@dataclass(frozen=True)
class CategoryScore:
    """One policy category's score, e.g. code "S1", name "Violent Crimes"."""

    code: str
    name: str
    score: float
    violated: bool


@dataclass(frozen=True)
class SafetyVerdict:
    safe: bool
    direction: Direction
    categories: tuple[CategoryScore, ...]
    classifier_id: str = ""
    classifier_version: str = ""
    judged_tokens: int = 0
    # Inputs the classifier scored for the text (sentences, pairs, windows; 1 for a short message).
    judged_segments: int = 0
    truncated: bool = False


@dataclass(frozen=True)
class SafetyRefusal:
    """The safety filter refused the input or stopped the output.

    `categories` are the violated ones; `message` is the refusal the server shows in place of a reply.
    """

    direction: Direction
    categories: tuple[CategoryScore, ...]
    message: str
    verdict: SafetyVerdict

    @property
    def codes(self) -> tuple[str, ...]:
        return tuple(c.code for c in self.categories)


# Events of one reply, in the order the server sends them: Accepted, then TextChunk and SafetyCheck
# events, then exactly one Done.


@dataclass(frozen=True)
class Accepted:
    request_id: str


@dataclass(frozen=True)
class TextChunk:
    """New reply text that passed the output safety check. `echo` marks a Complete's echoed prompt."""

    text: str
    token_ids: tuple[int, ...] = ()
    logprobs: tuple[float, ...] = ()
    echo: bool = False


@dataclass(frozen=True)
class SafetyCheck:
    """A safety verdict; `refusal` is set when it was unsafe."""

    verdict: SafetyVerdict
    refusal: SafetyRefusal | None


@dataclass(frozen=True)
class Done:
    finish_reason: FinishReason
    usage: Usage
    request_id: str


ReplyEvent = Accepted | TextChunk | SafetyCheck | Done


def _verdict_from_pb(verdict: types_pb2.SafetyVerdict) -> SafetyVerdict:
    return SafetyVerdict(
        safe=verdict.safe,
        direction=_enum_or_unspecified(Direction, verdict.direction),
        categories=tuple(
            CategoryScore(code=c.code, name=c.name, score=c.score, violated=c.violated)
            for c in verdict.categories
        ),
        classifier_id=verdict.classifier_id,
        classifier_version=verdict.classifier_version,
        judged_tokens=verdict.judged_tokens,
        judged_segments=verdict.judged_segments,
        truncated=verdict.truncated,
    )


def _enum_or_unspecified(kind: type[_E], value: int) -> _E:
    # A newer server may send a value this SDK does not know; treat it as unspecified, never crash.
    try:
        return kind(value)
    except ValueError:
        return kind(0)


def event_from_pb(response: chat_pb.ChatResponse, *, echo: bool = False) -> ReplyEvent | None:
    """The typed event of one ChatResponse; None for an event kind this SDK does not know."""
    kind = response.WhichOneof("event")
    if kind == "accepted":
        return Accepted(request_id=response.accepted.request_id)
    if kind == "delta":
        delta = response.delta
        return TextChunk(
            text=delta.text, token_ids=tuple(delta.token_ids), logprobs=tuple(delta.logprobs), echo=echo
        )
    if kind == "safety":
        verdict = _verdict_from_pb(response.safety.verdict)
        refusal = None
        if not verdict.safe:
            refusal = SafetyRefusal(
                direction=verdict.direction,
                categories=tuple(c for c in verdict.categories if c.violated),
                message=response.safety.refusal,
                verdict=verdict,
            )
        return SafetyCheck(verdict=verdict, refusal=refusal)
    if kind == "done":
        done = response.done
        return Done(
            finish_reason=_enum_or_unspecified(FinishReason, done.finish_reason),
            usage=Usage(
                done.usage.prompt_tokens, done.usage.completion_tokens, done.usage.cached_prompt_tokens
            ),
            request_id=done.request_id,
        )
    return None


def messages_to_pb(messages: Sequence[Message]) -> list[types_pb2.Message]:
    return [m.to_pb() for m in messages]
