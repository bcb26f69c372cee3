"""The hold-back chunker: where chunks end, and that no text or token is lost or reordered."""

from hypothesis import given
from hypothesis import strategies as st

from services.gateway.moderation import Chunker, ModerationConfig, ModerationMode


def test_chunk_ends_at_a_sentence_boundary():
    chunker = Chunker(ModerationConfig(chunk_tokens=100))
    assert chunker.push("Hello", [1]) is None
    assert chunker.push(" world", [2]) is None
    chunk = chunker.push(". How", [3, 4])
    assert chunk is not None and chunk.text == "Hello world. How" and chunk.token_ids == [1, 2, 3, 4]
    assert chunker.push(" are you", [5]) is None
    assert chunker.flush().text == " are you"
    assert chunker.flush() is None


def test_newline_and_final_punctuation_cut():
    chunker = Chunker(ModerationConfig(chunk_tokens=100))
    assert chunker.push("line one\n", [1]).text == "line one\n"
    assert chunker.push("Stop!", [2]).text == "Stop!"
    assert chunker.push("pi is 3", [3]) is None
    assert chunker.push("14", [4]) is None  # no boundary inside a number


def test_chunk_ends_after_at_most_n_tokens():
    chunker = Chunker(ModerationConfig(chunk_tokens=3))
    assert chunker.push("a", [1]) is None
    assert chunker.push("b", [2]) is None
    chunk = chunker.push("c", [3], [-0.5])
    assert chunk.token_ids == [1, 2, 3] and chunk.logprobs == [-0.5]


def test_buffer_mode_holds_everything_until_flush():
    chunker = Chunker(ModerationConfig(ModerationMode.BUFFER, chunk_tokens=1))
    for i, piece in enumerate(["One. ", "Two.\n", "Three"]):
        assert chunker.push(piece, [i]) is None
    chunk = chunker.flush()
    assert chunk.text == "One. Two.\nThree" and chunk.token_ids == [0, 1, 2]


def test_chunk_tokens_must_be_positive():
    import pytest

    with pytest.raises(ValueError, match="chunk_tokens"):
        ModerationConfig(chunk_tokens=0)


@given(
    st.lists(st.tuples(st.text(max_size=6), st.lists(st.integers(0, 99), max_size=3)), max_size=30),
    st.integers(1, 8),
)
def test_chunks_concatenate_to_the_input(deltas, n):
    chunker = Chunker(ModerationConfig(chunk_tokens=n))
    chunks = [c for text, ids in deltas if (c := chunker.push(text, ids)) is not None]
    if (tail := chunker.flush()) is not None:
        chunks.append(tail)
    assert "".join(c.text for c in chunks) == "".join(t for t, _ in deltas)
    assert [i for c in chunks for i in c.token_ids] == [i for _, ids in deltas for i in ids]
    # Only the tail may exceed nothing: every cut chunk holds at most n tokens plus one delta's worth.
    assert all(len(c.token_ids) < n + 3 for c in chunks)
