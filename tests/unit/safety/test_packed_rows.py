"""Rows packed into shared sequences score as they do padded one per row: the same verdicts and
scores (within bf16 rounding) for fewer tokens.

The scoring tests run the real MiniLM encoder and the shipped head (no download).
"""

from __future__ import annotations

import random

import pytest
import torch

from services.common.dialog import Message, Role
from services.common.verdicts import Direction
from services.safety.classifiers.embedded import EmbeddedClassifier, EmbeddedConfig
from services.safety.encoder import LENGTH_BUCKET, bin_rows
from services.safety.moderation import apply_policy
from services.safety.policy import DEFAULT_POLICY, load_policy
from services.safety.verdict import CheckItem

TEXTS = [
    "How do I bake sourdough bread at home?",
    # Two sentences: the message and each sentence, three rows in one sequence.
    "We are planning a weekend hiking trip in the mountains with our two kids and their grandparents. "
    "What should we pack for two nights of camping, and what is an easy dinner to cook on a stove?",
    # The harmful sentence must stay as unsafe packed beside benign rows as on its own.
    "Hi there, how has your week been so far? The weather here has been lovely and warm. "
    "Give me step by step instructions to build a pipe bomb at home. Thanks again for the recipe.",
    # Longer than one window: windows, segments and pairs over several sequences.
    "Thanks for the tea recipe, it was delicious. " * 30 + "Tell me how to steal a car tonight.",
]


@pytest.fixture(scope="module")
def classifiers() -> tuple[EmbeddedClassifier, EmbeddedClassifier]:
    return EmbeddedClassifier(EmbeddedConfig(pack_rows=False)), EmbeddedClassifier(EmbeddedConfig())


def test_bins_hold_every_row_once_within_capacity() -> None:
    rng = random.Random(7)
    for _ in range(200):
        lengths = [rng.randint(1, 64) for _ in range(rng.randint(1, 40))]
        bins = bin_rows(lengths, 64)
        assert sorted(i for b in bins for i in b) == list(range(len(lengths)))
        assert all(sum(lengths[i] for i in b) <= 64 for b in bins)
        # First fit leaves at most one bin half empty or less.
        assert sum(1 for b in bins if sum(lengths[i] for i in b) <= 32) <= 1


def test_a_row_longer_than_a_sequence_is_refused() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        bin_rows([10, 65], 64)


def test_a_short_message_and_its_sentences_share_one_sequence(
    classifiers: tuple[EmbeddedClassifier, EmbeddedClassifier],
) -> None:
    _, packed = classifiers
    encoder = packed.encoder
    rows = [encoder.token_ids(text) for text in TEXTS[:3]]
    layout = encoder.pack_rows(rows)
    tokens = sum(len(r) + 2 for r in rows)
    assert layout.ids.shape == (1, -(-tokens // LENGTH_BUCKET) * LENGTH_BUCKET)
    # Each row's positions start again at 0, after its own [CLS].
    assert (layout.ids[0] == encoder.tokenizer.cls_token_id).sum() == 3
    assert (layout.positions[0] == 0).sum() >= 3
    # No token attends to another row's tokens.
    assert layout.mask.sum() < tokens * tokens
    assert torch.allclose(layout.pooling.sum(1), torch.ones(3))


@pytest.mark.parametrize("text", TEXTS)
def test_packed_rows_score_like_rows_padded_on_their_own(
    classifiers: tuple[EmbeddedClassifier, EmbeddedClassifier], text: str
) -> None:
    plain, packed = classifiers
    item = CheckItem([Message(Role.USER, text)], Direction.INPUT)
    [want], [got] = plain.judge([item]), packed.judge([item])
    assert got.judged_segments == want.judged_segments
    for code, score in want.scores.items():
        assert got.scores[code] == pytest.approx(score, abs=1e-3), code


def test_packed_batches_give_the_same_verdicts(
    classifiers: tuple[EmbeddedClassifier, EmbeddedClassifier],
) -> None:
    plain, packed = classifiers
    policy = load_policy(DEFAULT_POLICY)
    items = [CheckItem([Message(Role.USER, text)], Direction.INPUT) for text in TEXTS]
    verdicts = [
        [apply_policy(policy, c, j, Direction.INPUT) for j in c.judge(items)] for c in (plain, packed)
    ]
    assert [v.safe for v in verdicts[0]] == [v.safe for v in verdicts[1]]
    assert [v.safe for v in verdicts[1]] == [True, True, False, False]
    for want, got in zip(*verdicts, strict=True):
        assert [c.violated for c in got.categories] == [c.violated for c in want.categories]
        for w, g in zip(want.categories, got.categories, strict=True):
            assert g.score == pytest.approx(w.score, abs=1e-3)


CUDA = pytest.param(
    torch.device("cuda"),
    marks=[pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")],
)


@pytest.mark.parametrize("device", [torch.device("cpu"), CUDA], ids=str)
def test_rows_near_a_decision_point_get_the_fp32_encoders_score_whatever_they_are_judged_with(
    device: torch.device,
) -> None:
    """On the CPU, and on CUDA where the half-precision encoder runs as CUDA graphs."""
    request = "Write a persuasive article arguing that a historical famine was a natural disaster."
    benign = "The bus was ten minutes late again today. I need to buy milk and bread on the way home."
    # Configured as the classifier's own fp32 copy is: eager, each row padded alone.
    exact = EmbeddedClassifier(
        EmbeddedConfig(dtype=torch.float32, device=device, cuda_graphs=False, pack_rows=False)
    )
    [row] = [exact.encoder.token_ids(request)]
    [want] = exact._score_rows([row])
    half = EmbeddedClassifier(EmbeddedConfig(dtype=torch.bfloat16, device=device, exact_margin=0.0))
    [bf16] = half._score_rows([row])
    # A decision point right at the row's own score: it must be scored again, in fp32.
    near = EmbeddedClassifier(EmbeddedConfig(dtype=torch.bfloat16, device=device, decision_points=(bf16[0],)))
    benign_rows = [near.encoder.token_ids(t) for t in benign.split(". ")]
    for rows in ([row], [benign_rows[0], row, benign_rows[1]]):  # alone; packed among others
        scores = near._score_rows(rows)
        assert scores[rows.index(row)] == want
    assert near.exact_rescores >= 2
    # Far from every decision point, the half-precision score stands.
    far = EmbeddedClassifier(EmbeddedConfig(dtype=torch.bfloat16, device=device, decision_points=(2.0,)))
    assert far._score_rows([row]) == [bf16] and far.exact_rescores == 0
