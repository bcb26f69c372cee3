from __future__ import annotations

import pytest

from llamagate.download.errors import UsageError
from llamagate.download.release import MODELS, model_group, parse_models, release_plan


def test_shard_counts_and_folders_follow_the_reference_release() -> None:
    assert model_group("7B").files == ("consolidated.00.pth", "params.json")
    assert model_group("13B-chat").folder == "llama-2-13b-chat"
    seventy = model_group("70B")
    assert seventy.files[:8] == tuple(f"consolidated.{i:02d}.pth" for i in range(8))
    assert seventy.path("checklist.chk") == "llama-2-70b/checklist.chk"


def test_plan_starts_with_license_policy_and_tokenizer() -> None:
    legal, tokenizer, model = release_plan(["7B-chat"])
    assert legal.files == ("LICENSE", "USE_POLICY.md") and legal.checklist is None
    assert tokenizer.files == ("tokenizer.model",) and tokenizer.checklist == "tokenizer_checklist.chk"
    assert model.folder == "llama-2-7b-chat"


@pytest.mark.parametrize("spec", ["", "all", " ALL "])
def test_empty_or_all_means_every_model(spec: str) -> None:
    assert parse_models(spec) == list(MODELS)


def test_names_are_case_insensitive_deduplicated_and_ordered_as_given() -> None:
    assert parse_models("13b-CHAT, 7B,7b") == ["13B-chat", "7B"]


def test_unknown_model_lists_the_valid_names() -> None:
    with pytest.raises(UsageError, match=r"unknown model '7B-instruct'.*70B-chat"):
        parse_models("7B,7B-instruct")
