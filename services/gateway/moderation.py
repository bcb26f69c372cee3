"""Output hold-back: generated text is cut into chunks, and each chunk is released only after the
output check has passed it in context.

A chunk ends at the first token delta after which the held text contains a sentence boundary
(".", "!" or "?" followed by whitespace, or a newline), or once it holds `chunk_tokens` tokens,
whichever comes first. Chunks are cut between token deltas, so every chunk carries the exact token
ids (and logprobs) behind its text. In "buffer" mode nothing is cut: the whole reply is one chunk,
judged once at the end.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

_SENTENCE_END = re.compile(r"[.!?][\s\"')\]]*\s|\n")


class ModerationMode(enum.StrEnum):
    SENTENCE = "sentence"
    BUFFER = "buffer"


@dataclass(frozen=True)
class ModerationConfig:
    mode: ModerationMode = ModerationMode.SENTENCE
    # Upper bound on the text held back when no sentence ends: the first tokens of a reply wait for
    # at most this many tokens plus one check.
    chunk_tokens: int = 16

    def __post_init__(self) -> None:
        if self.chunk_tokens < 1:
            raise ValueError(f"chunk_tokens must be >= 1, got {self.chunk_tokens}")


@dataclass
class Chunk:
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.text or self.token_ids)


class Chunker:
    """Accumulates token deltas and hands out complete chunks."""

    def __init__(self, config: ModerationConfig) -> None:
        self.config = config
        self._held = Chunk()

    def push(self, text: str, token_ids: Sequence[int], logprobs: Sequence[float] = ()) -> Chunk | None:
        """Add one delta; return the chunk it completes, if any."""
        self._held.text += text
        self._held.token_ids.extend(token_ids)
        self._held.logprobs.extend(logprobs)
        if self.config.mode is ModerationMode.BUFFER:
            return None
        if len(self._held.token_ids) >= self.config.chunk_tokens or _ends_sentence(self._held.text):
            return self._take()
        return None

    def flush(self) -> Chunk | None:
        """The held remainder at the end of generation (None when nothing is held)."""
        return self._take() if self._held else None

    def _take(self) -> Chunk:
        chunk, self._held = self._held, Chunk()
        return chunk


def _ends_sentence(text: str) -> bool:
    # The boundary must be followed by whitespace so "3.14" or "e.g" mid-word do not cut, except
    # at a newline, which always does.
    return _SENTENCE_END.search(text) is not None or text.endswith((".", "!", "?"))
