"""The encoder tokenises a check's sentences through a plain copy of the Rust tokenizer: the ids
must be exactly those of the transformers tokenizer, for any text and any length (MiniLM's
tokenizer.json truncates and pads to 128 when used directly)."""

from __future__ import annotations

import json

import pytest
from transformers import AutoTokenizer

from services.safety.encoder import EncoderConfig, SentenceEncoder, minilm_dir
from training.safety.data.build_dataset import DATA_DIR

TEXTS = [
    "",
    " ",
    "How do I kill a Python process that hangs?",
    "Ünïcödé, ﬁ ligatures, ＦＵＬＬ width, 中文字符, emoji 😀 and a zero\u200bwidth space.",
    "word " * 600,  # far beyond 128 and 512 tokens
    "supercalifragilisticexpialidocious" * 40,
]


@pytest.fixture(scope="module")
def encoder() -> SentenceEncoder:
    return SentenceEncoder(EncoderConfig(minilm_dir(), precision="fp32"))


def heldout_texts() -> list[str]:
    with open(DATA_DIR / "heldout.jsonl") as lines:
        return [json.loads(line)["text"] for line in lines]


def test_token_ids_are_those_of_the_transformers_tokenizer(encoder: SentenceEncoder) -> None:
    reference = AutoTokenizer.from_pretrained(minilm_dir(), local_files_only=True)
    texts = [*TEXTS, *heldout_texts()]
    assert len(texts) > 400
    for text in texts:
        assert encoder.token_ids(text) == reference(text, add_special_tokens=False)["input_ids"], text
    assert len(encoder.token_ids(TEXTS[4])) == 600  # neither truncated nor padded
