"""No judged text goes unread: a turn longer than Llama Guard's window is judged in overlapping
pieces and the item gets the worst answer; only earlier context turns are ever left out."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path

import pytest

from services.common.dialog import Message, Role
from services.common.verdicts import Direction
from services.safety.classifiers.llama_guard import LlamaGuardClassifier, LlamaGuardConfig
from services.safety.classifiers.llama_guard_fit import MIN_PIECE_TOKENS, pieces, plan_prompts
from services.safety.moderation import apply_policy
from services.safety.policy import POLICIES_DIR, load_policy
from services.safety.verdict import CheckItem
from tests.unit.safety.tiny_models import build_tiny_s_guard

# --- the planner, with words as tokens ------------------------------------------------------------


class Words:
    """A codec whose tokens are whitespace-separated words: lengths are easy to reason about."""

    def prompt_ids(self, text: str) -> list[int]:
        return [hash(w) for w in text.split()]

    text_ids = prompt_ids

    def decode(self, ids: Sequence[int]) -> str:
        return " ".join(WORD_OF[i] for i in ids)


TEXT = [f"w{i}" for i in range(500)]
WORD_OF = {hash(w): w for w in [*TEXT, "ctx", "reply"]}


def build(dialog: Sequence[Message]) -> str:
    return "head " * 20 + " ".join(f"{m.role.value} {m.content}" for m in dialog) + " tail" * 10


@pytest.mark.parametrize(("length", "overlap"), [(10, 3), (64, 16), (499, 1), (500, 8), (7, 0)])
def test_pieces_cover_every_token_with_the_overlap(length: int, overlap: int) -> None:
    ids = list(range(500))
    got = pieces(ids, length, overlap)
    assert all(len(p) == min(length, 500) for p in got)
    assert sorted({i for p in got for i in p}) == ids
    for a, b in itertools.pairwise(got):
        assert a[-1] >= b[0] + overlap - 1  # neighbours share at least `overlap` tokens
        assert b[0] > a[0]


def test_a_turn_that_fits_is_one_prompt_and_keeps_its_context() -> None:
    dialog = [
        Message(Role.USER, "ctx"),
        Message(Role.ASSISTANT, "reply"),
        Message(Role.USER, " ".join(TEXT[:50])),
    ]
    plan = plan_prompts(dialog, build, Words(), window=200, overlap=8)
    assert len(plan.prompts) == 1 and not plan.context_dropped
    assert len(plan.prompts[0]) == 20 + 10 + 3 * 1 + 2 + 50  # head, tail, roles, context, text


def test_a_long_turn_is_judged_in_pieces_each_within_the_window() -> None:
    dialog = [Message(Role.USER, "ctx"), Message(Role.ASSISTANT, "reply"), Message(Role.USER, " ".join(TEXT))]
    window = 140
    plan = plan_prompts(dialog, build, Words(), window=window, overlap=8)
    assert len(plan.prompts) > 1 and all(len(p) <= window for p in plan.prompts)
    assert not plan.context_dropped  # the two short context turns fit beside every piece
    judged = [WORD_OF[i] for p in plan.prompts for i in p if WORD_OF.get(i, "").startswith("w")]
    assert set(judged) == set(TEXT)
    for prompt in plan.prompts:
        assert hash("ctx") in prompt and hash("reply") in prompt


def test_context_that_does_not_fit_beside_a_piece_is_dropped_and_said_so() -> None:
    context = [Message(Role.USER, " ".join(TEXT[:200])), Message(Role.ASSISTANT, "reply")]
    dialog = [*context, Message(Role.USER, " ".join(TEXT[200:]))]
    plan = plan_prompts(dialog, build, Words(), window=140, overlap=8)
    assert plan.context_dropped and all(len(p) <= 140 for p in plan.prompts)
    judged = {WORD_OF[i] for p in plan.prompts for i in p if WORD_OF.get(i, "").startswith("w")}
    assert set(TEXT[200:]) <= judged


def test_a_window_without_room_for_text_is_an_error() -> None:
    with pytest.raises(ValueError, match="no room"):
        plan_prompts(
            [Message(Role.USER, " ".join(TEXT))], build, Words(), window=30 + MIN_PIECE_TOKENS, overlap=8
        )


# --- the classifier, with a tiny model that answers unsafe when "bomb" is in its prompt ---------

POLICY = load_policy(POLICIES_DIR / "mlcommons.yaml")
FILLER = "hello world " * 150  # 300 tokens


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("guard3")
    return build_tiny_s_guard(
        path, ["safe"], trigger="<|end_header_id|>", alarm=("bomb", ["unsafe", "\n", "S1"])
    )


def classifier(model_dir: Path, room: int | None = None) -> LlamaGuardClassifier:
    config = LlamaGuardConfig(model_dir, version=3, overlap=16)
    full = LlamaGuardClassifier(config, POLICY)
    if room is None:
        return full
    base = len(full.prompt_ids(full.format.build([Message(Role.USER, "")])))
    return LlamaGuardClassifier(
        LlamaGuardConfig(model_dir, version=3, window=base + room, overlap=16), POLICY
    )


@pytest.mark.parametrize("where", ["start", "middle", "end"])
def test_an_unsafe_word_anywhere_in_a_long_turn_is_found(model_dir: Path, where: str) -> None:
    texts = {"start": "bomb " + FILLER * 2, "middle": FILLER + "bomb " + FILLER, "end": FILLER * 2 + "bomb"}
    text = texts[where]
    guard = classifier(model_dir, room=80)
    rows: list[int] = []
    generate = guard._generate

    def recording(batch: list[list[int]]) -> list[tuple[str, float]]:
        rows.extend(len(r) for r in batch)
        return generate(batch)

    guard._generate = recording  # type: ignore[method-assign]
    dialog = [Message(Role.USER, "hello"), Message(Role.ASSISTANT, "world"), Message(Role.USER, text)]
    [judgement] = guard.judge([CheckItem(dialog, Direction.INPUT)])
    assert len(rows) > 7 and max(rows) <= guard.window  # 601 tokens in 80-token pieces, less context
    assert judgement.flagged == {"S1"} and judgement.scores["S1"] > 0.99
    assert not judgement.truncated and judgement.judged_tokens == sum(rows)
    assert judgement.judged_segments == len(rows)  # one prompt per piece
    verdict = apply_policy(POLICY, guard, judgement, Direction.INPUT)
    assert not verdict.safe and verdict.violated == ("S1",)


def test_a_long_safe_turn_stays_safe_and_a_short_one_is_one_prompt(model_dir: Path) -> None:
    guard = classifier(model_dir, room=80)
    long, short = guard.judge(
        [
            CheckItem([Message(Role.USER, FILLER * 2)], Direction.INPUT),
            CheckItem([Message(Role.USER, "hello bomb")], Direction.INPUT),
        ]
    )
    assert long.flagged == frozenset() and long.scores == {} and not long.truncated
    assert long.judged_tokens > 600  # every piece's prompt counted
    assert short.flagged == {"S1"}
    base = len(guard.prompt_ids(guard.format.build([Message(Role.USER, "")])))
    assert short.judged_tokens == base + 2


def test_only_context_turns_are_dropped(model_dir: Path) -> None:
    guard = classifier(model_dir, room=80)
    old = [Message(Role.USER, FILLER), Message(Role.ASSISTANT, "world")]
    [judgement] = guard.judge([CheckItem([*old, Message(Role.USER, "hello bomb")], Direction.INPUT)])
    assert judgement.truncated and judgement.flagged == {"S1"}
    assert judgement.judged_tokens <= guard.window
