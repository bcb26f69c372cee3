"""Texts as long as a gRPC message may be are cut into rows in bounded time, whatever their shape.

Each text is several hundred thousand words: planning it takes seconds here, which is why this
lives in the integration tier rather than with the other segmentation properties
(tests/unit/safety/test_segments.py).
"""

from __future__ import annotations

import time

from services.common.server import ServerConfig
from services.safety.segments import plan_rows, split_sentences


def words(text: str) -> list[str]:
    return text.split()


def sequence(text: str) -> list[str]:
    return [token for segment in split_sentences(text) for token in words(segment)]


def test_texts_up_to_the_message_limit_are_planned_quickly_whatever_their_shape() -> None:
    limit = ServerConfig.max_message_bytes
    for text in (
        "." * limit,  # one run of stops
        "a. " * (limit // 3),  # a fragment too short to stand alone, repeated
        "Every word here differs " * (limit // 24),
    ):
        start = time.perf_counter()
        plan = plan_rows(text, words, 254)
        assert time.perf_counter() - start < 30
        assert plan.judged_tokens == len(sequence(text))
        assert all(len(row.tokens) <= 254 for row in plan.rows)
