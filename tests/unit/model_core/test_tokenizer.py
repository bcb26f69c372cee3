"""Tokenizer ids and streaming detokenization (StreamDecoder) on the demo sentencepiece model."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.inference.model.tokenizer import REPLACEMENT_CHAR, StreamDecoder, Tokenizer

BYTE_TOKENS = range(3, 259)  # <0x00> .. <0xFF> follow unk, bos, eos in a byte-fallback model


def test_llama_special_ids(tokenizer: Tokenizer) -> None:
    assert (tokenizer.bos_id, tokenizer.eos_id, tokenizer.pad_id) == (1, 2, -1)
    assert tokenizer.sp.unk_id() == 0
    assert tokenizer.piece(3) == "<0x00>" and tokenizer.piece(258) == "<0xFF>"
    ids = tokenizer.encode("hello", bos=True, eos=True)
    assert ids[0] == 1 and ids[-1] == 2 and 1 not in ids[1:-1]
    assert tokenizer.encode("hello", bos=False, eos=False) == ids[1:-1]


@pytest.mark.parametrize(
    "text",
    ["The lighthouse keeper", "  two leading spaces", "naïve ∑ 日本語 🙂🧪", "tabs\tand\nnewlines", "€4.50"],
)
def test_any_unicode_round_trips(tokenizer: Tokenizer, text: str) -> None:
    assert tokenizer.decode(tokenizer.encode(text, bos=True, eos=False)) == text


def _stream(tokenizer: Tokenizer, ids: list[int], chunks: list[int]) -> list[str]:
    decoder, deltas, i = StreamDecoder(tokenizer), [], 0
    for size in chunks:
        deltas.append(decoder.push(ids[i : i + size]))
        i += size
    deltas.append(decoder.push(ids[i:]))
    deltas.append(decoder.finish())
    return deltas


def _check(tokenizer: Tokenizer, ids: list[int], deltas: list[str]) -> None:
    full = tokenizer.decode(ids)
    assert "".join(deltas) == full
    # Each delta sits at a known offset of the full text; U+FFFD only where the full text has it.
    offset = 0
    for delta in deltas:
        for j, char in enumerate(delta):
            if char == REPLACEMENT_CHAR:
                assert full[offset + j] == REPLACEMENT_CHAR
        offset += len(delta)


@pytest.mark.parametrize(
    "text",
    ["Hello world, how are you today?", " leading space kept", "∑ ≠ ∞ and 日本語 with ő", "🙂 emoji 🧪 tail"],
)
def test_token_by_token_streaming_rebuilds_text_without_broken_characters(
    tokenizer: Tokenizer, text: str
) -> None:
    ids = tokenizer.encode(text, bos=False, eos=False)
    deltas = _stream(tokenizer, ids, [1] * len(ids))
    assert "".join(deltas) == tokenizer.decode(ids)
    assert all(REPLACEMENT_CHAR not in d for d in deltas)
    # Multi-byte characters made of byte-fallback tokens are held until complete.
    if any(t in BYTE_TOKENS for t in ids):
        assert any(d == "" for d in deltas[:-2])


def test_spaces_between_words_survive_streaming(tokenizer: Tokenizer) -> None:
    ids = tokenizer.encode("one two three", bos=False, eos=False)
    deltas = [d for d in _stream(tokenizer, ids, [1] * len(ids)) if d]
    assert "".join(deltas) == "one two three"
    assert any(d.startswith(" ") for d in deltas)


def _token_ids(draw: st.DrawFn, vocab: int) -> list[int]:
    byte_heavy = st.integers(min_value=3, max_value=258)
    anything = st.integers(min_value=3, max_value=vocab - 1)
    return draw(st.lists(st.one_of(byte_heavy, anything), min_size=0, max_size=40))


@st.composite
def _sequences(draw: st.DrawFn) -> tuple[list[int], list[int]]:
    ids = _token_ids(draw, 1000)
    chunks = draw(st.lists(st.integers(min_value=0, max_value=4), max_size=len(ids) + 1))
    return ids, chunks


@settings(max_examples=300, deadline=None)
@given(_sequences())
def test_random_token_streams_concatenate_to_decode_all(tokenizer: Tokenizer, case: tuple) -> None:
    ids, chunks = case
    _check(tokenizer, ids, _stream(tokenizer, ids, chunks))


def test_seeded_random_utf8_byte_runs(tokenizer: Tokenizer) -> None:
    # Valid and truncated multi-byte characters spelled with byte-fallback tokens between pieces.
    rng = random.Random(1234)
    chars = ["é", "∑", "日", "🧪", "ő", "€"]
    for _ in range(300):
        ids: list[int] = []
        for _ in range(rng.randrange(1, 8)):
            encoded = [3 + b for b in rng.choice(chars).encode()]
            if rng.random() < 0.2:
                encoded = encoded[: rng.randrange(1, len(encoded))]
            ids += encoded if rng.random() < 0.7 else tokenizer.encode(" word", bos=False, eos=False)
        _check(tokenizer, ids, _stream(tokenizer, ids, [rng.randrange(1, 3) for _ in ids]))
