"""Fitting a dialog into Llama Guard's context window without leaving any of the judged turn unread.

Earlier turns are context: when the prompt would not fit, they are left out, oldest first. The
judged turn (the last one) is never cut. When it does not fit on its own, it is judged in
consecutive overlapping pieces, each its own prompt with as much of the context as fits beside
it; the caller takes the worst answer over the pieces. The overlap keeps a sentence that straddles
a cut whole in at least one piece.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from services.common.dialog import Message, Role

# A window that leaves less room than this for the judged text is a configuration mistake.
MIN_PIECE_TOKENS = 32


class Codec(Protocol):
    def prompt_ids(self, text: str) -> list[int]: ...

    def text_ids(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...


Build = Callable[[Sequence[Message]], str]


@dataclass(frozen=True)
class Plan:
    """The prompts (token ids, each within the window) that together judge one item."""

    prompts: list[list[int]]
    # Some earlier turn is in none of the prompts (the judged turn is always read whole).
    context_dropped: bool


def pieces(ids: Sequence[int], length: int, overlap: int) -> list[list[int]]:
    """Consecutive windows of `length` tokens covering `ids`, neighbours sharing >= `overlap`."""
    if len(ids) <= length:
        return [list(ids)]
    stride = length - overlap
    starts = [*range(0, len(ids) - length, stride), len(ids) - length]
    return [list(ids[s : s + length]) for s in starts]


def _with_context(
    context: Sequence[Message], judged: Message, build: Build, codec: Codec, window: int
) -> tuple[list[int], int]:
    """The prompt ids with as many of the latest context turns as fit, and how many were kept."""
    while True:
        ids = codec.prompt_ids(build([*context, judged]))
        if len(ids) <= window or not context:
            return ids, len(context)
        # Drop a user/assistant pair so the conversation still starts with the user.
        context = context[1:] if context[0].role is Role.ASSISTANT or len(context) == 1 else context[2:]


def plan_prompts(dialog: Sequence[Message], build: Build, codec: Codec, window: int, overlap: int) -> Plan:
    turns = [m for m in dialog if m.role is not Role.SYSTEM]
    context, judged = turns[:-1], turns[-1]
    ids, kept = _with_context(context, judged, build, codec, window)
    if len(ids) <= window:
        return Plan([ids], kept < len(context))

    text = codec.text_ids(judged.content.strip())
    empty = Message(judged.role, "")
    base = len(codec.prompt_ids(build([empty])))
    room = window - base
    context_cost = len(codec.prompt_ids(build([*context, empty]))) - base
    # Leave up to half of the room to context, so each piece is judged in its conversation.
    length = room - min(context_cost, room // 2)
    while True:
        if length < MIN_PIECE_TOKENS:
            raise ValueError(
                f"a {window}-token window leaves no room to judge text in the Llama Guard prompt"
            )
        prompts, most_kept, excess = [], 0, 0
        for piece in pieces(text, length, min(overlap, length // 4)):
            ids, kept = _with_context(
                context, Message(judged.role, codec.decode(piece)), build, codec, window
            )
            excess = max(excess, len(ids) - window)
            most_kept = max(most_kept, kept)
            prompts.append(ids)
        if excess <= 0:
            return Plan(prompts, most_kept < len(context))
        # A decoded piece can tokenize a little longer than it was cut (merges at its edges).
        length -= excess
