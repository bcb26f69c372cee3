"""Scripted stand-ins for the gateway's backends (the component under test is the gateway)."""

import asyncio
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field

from services.common.dialog import Message, Role
from services.common.errors import Unavailable
from services.common.verdicts import CategoryScore, Direction, Verdict
from services.gateway.backends import (
    FinishReason,
    GenerationDelta,
    GenerationDone,
    GenerationEvent,
    GenerationRequest,
    GenerationStarted,
)

USER = (Message(Role.USER, "tell me a story"),)


def verdict(text: str, direction: Direction) -> Verdict:
    bad = "bomb" in text
    return Verdict(
        safe=not bad,
        direction=direction,
        categories=(CategoryScore("O3", "Weapons", 0.9 if bad else 0.1, bad),),
        classifier_id="scripted",
        classifier_version="1",
        # As a segmenting classifier would report it: every word read, one row per sentence.
        judged_tokens=len(text.split()),
        judged_segments=max(1, text.count(".")),
    )


@dataclass
class ScriptedGeneration:
    deltas: list[str]
    hang_after: int | None = None  # stop producing after this many deltas (until cancelled)
    cancelled: bool = False
    closed: bool = False

    async def events(self) -> AsyncGenerator[GenerationEvent, None]:
        yield GenerationStarted("r", 7)
        for i, text in enumerate(self.deltas):
            if self.hang_after is not None and i >= self.hang_after:
                await asyncio.Event().wait()
            if self.cancelled:
                yield GenerationDone(FinishReason.CANCELLED, 7, i)
                return
            yield GenerationDelta(text, [100 + i], [])
        yield GenerationDone(FinishReason.STOP, 7, len(self.deltas))

    async def cancel(self) -> None:
        self.cancelled = True

    def close(self) -> None:
        self.closed = True


@dataclass
class ScriptedCall:
    inference: "ScriptedInference"
    closed: bool = False

    def start(self, request: GenerationRequest) -> ScriptedGeneration:
        assert not self.closed, "a closed call was started"
        return self.inference.begin(request)

    def close(self) -> None:
        self.closed = True


@dataclass
class ScriptedInference:
    """Every request gets a generation of the same script; `generation` is the first one's.
    `requests` lists what reached the model (started calls); `calls` every call opened."""

    generation: ScriptedGeneration
    requests: list[GenerationRequest] = field(default_factory=list)
    generations: list[ScriptedGeneration] = field(default_factory=list)
    calls: list[ScriptedCall] = field(default_factory=list)

    def open(self, timeout_s: float | None) -> ScriptedCall:
        call = ScriptedCall(self)
        self.calls.append(call)
        return call

    def begin(self, request: GenerationRequest) -> ScriptedGeneration:
        self.requests.append(request)
        script = self.generation
        generation = script if not self.generations else ScriptedGeneration(script.deltas, script.hang_after)
        self.generations.append(generation)
        return generation


@dataclass
class ScriptedOutputCheck:
    safety: "ScriptedSafety"
    so_far: str = ""

    async def check_chunk(self, text: str, timeout_s: float) -> Verdict:
        self.safety.chunks.append(text)
        if (
            self.safety.down_after_chunks is not None
            and len(self.safety.chunks) > self.safety.down_after_chunks
        ):
            raise Unavailable("the safety service failed with UNAVAILABLE")
        self.so_far += text
        return verdict(self.so_far, Direction.OUTPUT)

    def close(self) -> None:
        pass


@dataclass
class ScriptedSafety:
    down_after_chunks: int | None = None
    chunks: list[str] = field(default_factory=list)
    checks: list[tuple[Direction, str]] = field(default_factory=list)

    async def check(self, dialog: Sequence[Message], direction: Direction, timeout_s: float) -> Verdict:
        self.checks.append((direction, dialog[-1].content))
        return verdict(dialog[-1].content, direction)

    def output_check(self, context: Sequence[Message], timeout_s: float | None) -> ScriptedOutputCheck:
        return ScriptedOutputCheck(self)
