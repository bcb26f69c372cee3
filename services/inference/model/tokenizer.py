"""The Llama sentencepiece tokenizer (bos 1, eos 2, as the reference) and streaming detokenization."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from sentencepiece import SentencePieceProcessor

REPLACEMENT_CHAR = "\ufffd"


class Tokenizer:
    def __init__(self, model_path: Path) -> None:
        if not Path(model_path).is_file():
            raise FileNotFoundError(f"tokenizer model not found: {model_path} (pass --tokenizer-path)")
        self.model_path = Path(model_path)
        self.sp = SentencePieceProcessor(model_file=str(model_path))
        self.n_words: int = self.sp.vocab_size()
        self.bos_id: int = self.sp.bos_id()
        self.eos_id: int = self.sp.eos_id()
        self.pad_id: int = self.sp.pad_id()

    def encode(self, s: str, *, bos: bool, eos: bool) -> list[int]:
        ids: list[int] = self.sp.encode(s)
        if bos:
            ids = [self.bos_id, *ids]
        if eos:
            ids = [*ids, self.eos_id]
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        text: str = self.sp.decode(list(ids))
        return text

    def piece(self, token_id: int) -> str:
        piece: str = self.sp.id_to_piece(token_id)
        return piece


class StreamDecoder:
    """Turns tokens into text as they arrive, so that the pieces concatenate to decode(all ids).

    Decoding one token at a time is wrong twice over: sentencepiece drops the "▁" space marker of
    the first piece it decodes, and byte-fallback tokens (<0xE2><0x82><0xAC>) only form a character
    together. So each push re-decodes a short window that starts a little before the new tokens
    (the same "prefix" decoded on its own) and emits the difference, holding text back while it
    ends in U+FFFD, i.e. while a multi-byte character is still incomplete.
    """

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.prefix_offset = 0  # window start: decoded text before read_offset is already emitted
        self.read_offset = 0  # tokens before this have been emitted

    def push(self, ids: Sequence[int]) -> str:
        if not ids:
            return ""
        self.ids.extend(ids)
        prefix_text = self.tokenizer.decode(self.ids[self.prefix_offset : self.read_offset])
        new_text = self.tokenizer.decode(self.ids[self.prefix_offset :])
        if len(new_text) > len(prefix_text) and not new_text.endswith(REPLACEMENT_CHAR):
            self.prefix_offset, self.read_offset = self.read_offset, len(self.ids)
            return new_text[len(prefix_text) :]
        return ""

    def finish(self) -> str:
        """The held-back rest (an incomplete character decodes to U+FFFD, as decode(all) does)."""
        prefix_text = self.tokenizer.decode(self.ids[self.prefix_offset : self.read_offset])
        new_text = self.tokenizer.decode(self.ids[self.prefix_offset :])
        self.prefix_offset = self.read_offset = len(self.ids)
        return new_text[len(prefix_text) :]
