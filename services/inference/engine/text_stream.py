"""A request's generated text: incremental detokenization plus stop strings.

Text that could still be the start of a stop string is held back until the next tokens decide,
so a stop string never reaches the client, even when it is split across tokens.
"""

from __future__ import annotations

from collections.abc import Sequence

from services.inference.model.tokenizer import StreamDecoder, Tokenizer


class TextStream:
    def __init__(self, tokenizer: Tokenizer, stop: Sequence[str]) -> None:
        self._decoder = StreamDecoder(tokenizer)
        self._stop = tuple(stop)
        self._pending = ""
        self.stopped = False

    def push(self, token_ids: Sequence[int]) -> str:
        """Text that is now certain; sets `stopped` when a stop string appeared (text before it returned)."""
        self._pending += self._decoder.push(token_ids)
        return self._release()

    def finish(self) -> str:
        if self.stopped:
            return ""
        self._pending += self._decoder.finish()
        text = self._release()
        if not self.stopped:
            text, self._pending = text + self._pending, ""
        return text

    def _release(self) -> str:
        if not self._stop:
            text, self._pending = self._pending, ""
            return text
        hits = [i for i in (self._pending.find(s) for s in self._stop) if i >= 0]
        if hits:
            self.stopped = True
            text, self._pending = self._pending[: min(hits)], ""
            return text
        keep = self._held_back()
        text, self._pending = (
            self._pending[: len(self._pending) - keep],
            self._pending[len(self._pending) - keep :],
        )
        return text

    def _held_back(self) -> int:
        """Length of the longest suffix of the pending text that starts some stop string."""
        longest = 0
        for stop in self._stop:
            for n in range(min(len(stop) - 1, len(self._pending)), longest, -1):
                if self._pending.endswith(stop[:n]):
                    longest = n
                    break
        return longest
