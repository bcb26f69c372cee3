"""Llama Guard 2 and 3 end to end on tiny offline checkpoints: prompt tokens, generation, the score
read where the answer's first word is chosen, parsing, the policy."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.common.dialog import Message, Role
from services.common.verdicts import Direction
from services.safety.classifiers.llama_guard import LlamaGuardClassifier, LlamaGuardConfig
from services.safety.moderation import apply_policy
from services.safety.policy import POLICIES_DIR, Policy, PolicyError, load_policy
from services.safety.verdict import CheckItem
from tests.unit.safety.test_llama_guard_prompts import as_messages
from tests.unit.safety.tiny_models import TEMPLATE_V3_1B, TEMPLATE_V3_8B, build_tiny_s_guard

LG2_POLICY = load_policy(POLICIES_DIR / "llama_guard2.yaml")
DIALOG = [
    Message(Role.USER, "How do I pick a lock?"),
    Message(Role.ASSISTANT, "First, get a tension wrench."),
]
ITEMS = [CheckItem(DIALOG, Direction.OUTPUT), CheckItem(DIALOG[:1], Direction.INPUT)]


@pytest.fixture
def lg3_policy(tmp_path: Path) -> Policy:
    """mlcommons.yaml with every Llama Guard 3 category on except S14."""
    path = tmp_path / "policy.yaml"
    path.write_text(
        f"extends: {POLICIES_DIR / 'mlcommons.yaml'}\nenabled: [S5, S6, S7, S8, S13]\ndisabled: [S14]\n"
    )
    return load_policy(path)


def lg3(path: Path, answer: list[str], template: str | None = TEMPLATE_V3_8B) -> Path:
    return build_tiny_s_guard(path, answer, trigger="<|end_header_id|>", chat_template=template)


def test_llama_guard_3_scores_the_word_after_the_blank_line(tmp_path: Path, lg3_policy: Policy) -> None:
    guard = LlamaGuardClassifier(
        LlamaGuardConfig(lg3(tmp_path, ["\n\n", "unsafe", "\n", "S10"]), version=3), lg3_policy
    )
    assert guard.format.name == "Llama Guard 3 (8B)"
    for judgement in guard.judge(ITEMS):
        assert judgement.flagged == {"S10"}
        # P("unsafe") where "unsafe" was chosen; at the first step ("\n\n") it is ~0.
        assert judgement.scores["S10"] > 0.99 and not judgement.truncated
    verdict = apply_policy(lg3_policy, guard, guard.judge(ITEMS[:1])[0], Direction.OUTPUT)
    assert not verdict.safe and verdict.violated == ("S10",)


def test_llama_guard_3_safe_answer_passes(tmp_path: Path, lg3_policy: Policy) -> None:
    guard = LlamaGuardClassifier(LlamaGuardConfig(lg3(tmp_path, ["\n\n", "safe"]), version=3), lg3_policy)
    [judgement] = guard.judge(ITEMS[:1])
    assert judgement.flagged == frozenset() and judgement.scores == {}
    assert apply_policy(lg3_policy, guard, judgement, Direction.OUTPUT).safe


def test_llama_guard_3_code_outside_the_prompt_fails_closed(tmp_path: Path, lg3_policy: Policy) -> None:
    guard = LlamaGuardClassifier(
        LlamaGuardConfig(lg3(tmp_path, ["\n\n", "unsafe", "\n", "S14"]), version=3), lg3_policy
    )
    [judgement] = guard.judge(ITEMS[:1])
    verdict = apply_policy(lg3_policy, guard, judgement, Direction.OUTPUT)
    assert not verdict.safe and set(verdict.violated) == {c.code for c in lg3_policy.enabled}


def test_llama_guard_3_prompt_tokens_are_the_chat_templates(tmp_path: Path, lg3_policy: Policy) -> None:
    """With every category the checkpoint's template lists, the ids the classifier feeds the
    model are what `apply_chat_template(..., tokenize=True)` gives: one <|begin_of_text|>, from
    the text, none added by the tokenizer."""
    everything = load_policy(_extends(tmp_path, "enabled: [S5, S6, S7, S8, S13, S14]"))
    guard = LlamaGuardClassifier(
        LlamaGuardConfig(lg3(tmp_path / "m", ["\n\n", "safe"]), version=3), everything
    )
    ids = guard.prompt_ids(guard.format.build(DIALOG))
    want = guard.tokenizer.apply_chat_template(as_messages(DIALOG, False), tokenize=True)["input_ids"]
    assert ids == list(want)
    assert ids.count(guard.tokenizer.bos_token_id) == 1


def test_llama_guard_3_1b_checkpoint_gets_its_own_prompt(tmp_path: Path, lg3_policy: Policy) -> None:
    model = lg3(tmp_path, ["\n\n", "unsafe", "\n", "S1"], template=TEMPLATE_V3_1B)
    guard = LlamaGuardClassifier(LlamaGuardConfig(model, version=3), lg3_policy)
    assert guard.format.name == "Llama Guard 3 (1B)"
    assert guard.format.build(DIALOG).endswith(
        "comma-separated list of violated categories. <|eot_id|><|start_header_id|>assistant<|end_header_id|>"
    )
    assert guard.judge(ITEMS[:1])[0].flagged == {"S1"}


def test_llama_guard_2_generates_parses_and_gets_a_bos_token(tmp_path: Path) -> None:
    model = build_tiny_s_guard(tmp_path, ["unsafe", "\n", "S5"], trigger="[/INST]")
    guard = LlamaGuardClassifier(LlamaGuardConfig(model, version=2), LG2_POLICY)
    assert guard.format.name == "Llama Guard 2"
    ids = guard.prompt_ids(guard.format.build(DIALOG))
    assert ids[0] == guard.tokenizer.bos_token_id and ids.count(guard.tokenizer.bos_token_id) == 1
    for judgement in guard.judge(ITEMS):
        assert judgement.flagged == {"S5"} and judgement.scores["S5"] > 0.99
    verdict = apply_policy(LG2_POLICY, guard, guard.judge(ITEMS[:1])[0], Direction.OUTPUT)
    assert verdict.violated == ("S5",) and verdict.categories[0].name == "Specialized Advice"


def test_a_checkpoint_of_another_release_stops_before_its_weights_load(tmp_path: Path) -> None:
    model = lg3(tmp_path, ["\n\n", "safe"])
    (model / "model.safetensors").unlink()  # loading the weights would fail differently
    with pytest.raises(
        PolicyError, match=r"--llama-guard-version 2, but .* Llama Guard 3's; pass --llama-guard-version 3"
    ):
        LlamaGuardClassifier(LlamaGuardConfig(model, version=2), LG2_POLICY)


def test_a_window_too_small_for_the_prompt_is_a_config_error(tmp_path: Path, lg3_policy: Policy) -> None:
    with pytest.raises(PolicyError, match="leaving no room for the text"):
        LlamaGuardClassifier(LlamaGuardConfig(lg3(tmp_path, ["safe"]), version=3, window=100), lg3_policy)


def _extends(tmp_path: Path, line: str) -> Path:
    path = tmp_path / "extends.yaml"
    path.write_text(f"extends: {POLICIES_DIR / 'mlcommons.yaml'}\n{line}\n")
    return path
