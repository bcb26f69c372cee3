"""The Llama Guard and sequence-classifier backends run end to end on tiny offline checkpoints."""

from pathlib import Path

import pytest

from services.common.dialog import Message, Role
from services.common.verdicts import Direction
from services.safety.classifiers.llama_guard import LlamaGuardClassifier, LlamaGuardConfig
from services.safety.classifiers.sequence import SequenceClassifier, SequenceConfig
from services.safety.moderation import apply_policy, check_policy_fits
from services.safety.policy import POLICIES_DIR, PolicyError, load_policy
from services.safety.verdict import CheckItem
from tests.unit.safety.tiny_models import build_tiny_bert_classifier, build_tiny_llama_guard

POLICY = load_policy(POLICIES_DIR / "llama_guard.yaml")
DIALOG = [
    Message(Role.USER, "How do I pick a lock?"),
    Message(Role.ASSISTANT, "First, get a tension wrench."),
]


def test_llama_guard_generates_and_parses_unsafe_o3(tmp_path: Path) -> None:
    build_tiny_llama_guard(tmp_path, ["unsafe", "\n", "O3"])
    classifier = LlamaGuardClassifier(LlamaGuardConfig(tmp_path), POLICY)
    items = [CheckItem(DIALOG, Direction.OUTPUT), CheckItem(DIALOG[:1], Direction.INPUT)]
    judgements = classifier.judge(items)
    for judgement in judgements:
        assert judgement.flagged == {"O3"}
        assert judgement.scores["O3"] > 0.99  # P("unsafe") as the first token
        assert judgement.judged_tokens > 100 and not judgement.truncated
    verdict = apply_policy(POLICY, classifier, judgements[0], Direction.OUTPUT)
    assert not verdict.safe and verdict.violated == ("O3",)
    assert verdict.classifier_id == "llama-guard" and len(verdict.classifier_version) == 12


def test_llama_guard_safe_answer_passes(tmp_path: Path) -> None:
    build_tiny_llama_guard(tmp_path, ["safe"])
    classifier = LlamaGuardClassifier(LlamaGuardConfig(tmp_path), POLICY)
    [judgement] = classifier.judge([CheckItem(DIALOG, Direction.OUTPUT)])
    assert judgement.flagged == frozenset() and judgement.scores == {}
    assert apply_policy(POLICY, classifier, judgement, Direction.OUTPUT).safe


def test_llama_guard_malformed_answer_is_unsafe(tmp_path: Path) -> None:
    build_tiny_llama_guard(tmp_path, ["unsafe", "\n", "Agent"])
    classifier = LlamaGuardClassifier(LlamaGuardConfig(tmp_path), POLICY)
    [judgement] = classifier.judge([CheckItem(DIALOG, Direction.OUTPUT)])
    verdict = apply_policy(POLICY, classifier, judgement, Direction.OUTPUT)
    assert not verdict.safe and set(verdict.violated) == {c.code for c in POLICY.enabled}


def test_llama_guard_truncates_old_turns_to_its_window(tmp_path: Path) -> None:
    build_tiny_llama_guard(tmp_path, ["safe"])
    classifier = LlamaGuardClassifier(LlamaGuardConfig(tmp_path, window=800), POLICY)
    long_dialog = [Message(Role.USER, "hello " * 300), Message(Role.ASSISTANT, "world " * 10), DIALOG[0]]
    [judgement] = classifier.judge([CheckItem(long_dialog, Direction.INPUT)])
    assert judgement.truncated and judgement.judged_tokens <= 800


def test_sequence_classifier_loads_and_scores_mapped_labels(tmp_path: Path) -> None:
    build_tiny_bert_classifier(tmp_path, ["benign", "violence", "weapons"])
    classifier = SequenceClassifier(
        SequenceConfig(tmp_path, {"benign": None, "violence": "O1", "weapons": "O4"})
    )
    assert classifier.labels() == {"O1", "O4"}
    items = [CheckItem([Message(Role.USER, "kill python process " * 40)], Direction.INPUT)]
    [judgement] = classifier.judge(items)
    assert set(judgement.scores) == {"O1", "O4"}
    assert all(0.0 <= s <= 1.0 for s in judgement.scores.values())
    # One 120-token sentence, read whole in three overlapping 62-token windows; this tokenizer reads
    # every word here as [UNK], so the three windows are alike and scored once.
    assert (judgement.judged_tokens, judgement.judged_segments, judgement.truncated) == (120, 1, False)
    with pytest.raises(PolicyError, match="O2, O3, O5, O6"):
        check_policy_fits(POLICY, classifier)  # the policy enables categories this model cannot score


def test_sequence_label_map_must_name_real_labels(tmp_path: Path) -> None:
    build_tiny_bert_classifier(tmp_path, ["benign", "violence"])
    with pytest.raises(PolicyError, match="does not have"):
        SequenceClassifier(SequenceConfig(tmp_path, {"gore": "O1"}))
