"""encode_dialog against the Llama 2 reference's chat rules, applied literally here."""

from __future__ import annotations

import pytest

from services.common.dialog import Message, Role
from services.common.errors import InvalidRequest
from services.inference.model.chat_format import encode_dialog, encode_text
from services.inference.model.tokenizer import Tokenizer

S, U, A = Role.SYSTEM, Role.USER, Role.ASSISTANT


def reference_tokens(tokenizer: Tokenizer, dialog: list[dict[str, str]]) -> list[int]:
    """The reference's Llama.chat_completion prompt construction, transcribed with plain dicts."""
    if dialog[0]["role"] == "system":
        merged = "<<SYS>>\n" + dialog[0]["content"] + "\n<</SYS>>\n\n" + dialog[1]["content"]
        dialog = [{"role": dialog[1]["role"], "content": merged}, *dialog[2:]]
    assert all(m["role"] == "user" for m in dialog[::2])
    assert all(m["role"] == "assistant" for m in dialog[1::2])
    tokens: list[int] = []
    for prompt, answer in zip(dialog[::2], dialog[1::2], strict=False):
        tokens += tokenizer.encode(
            f"[INST] {(prompt['content']).strip()} [/INST] {(answer['content']).strip()} ", bos=True, eos=True
        )
    assert dialog[-1]["role"] == "user"
    tokens += tokenizer.encode(f"[INST] {(dialog[-1]['content']).strip()} [/INST]", bos=True, eos=False)
    return tokens


DIALOGS = {
    "single user": [Message(U, "what is the recipe of mayonnaise?")],
    "system prompt": [
        Message(S, "Always answer with Haiku"),
        Message(U, "I am going to Paris, what should I see?"),
    ],
    "multi turn": [
        Message(U, "I am going to Paris, what should I see?"),
        Message(A, "The Eiffel Tower, the Louvre, and the Seine."),
        Message(U, "What is so great about #1?"),
    ],
    "system + multi turn": [
        Message(S, "Be brief."),
        Message(U, "Hi"),
        Message(A, "Hello!"),
        Message(U, "Tell me a joke"),
        Message(A, "Why did the scarecrow win an award?"),
        Message(U, "Why?"),
    ],
    "whitespace to strip": [
        Message(S, "  padded system  "),
        Message(U, "\n\t  user with spaces \n"),
        Message(A, "   answer   "),
        Message(U, "   last   "),
    ],
    "unicode": [Message(U, "naïve café ∑ 日本語 🙂"), Message(A, "Ça va 🧪"), Message(U, "€4.50 → £3.90?")],
    "empty contents": [Message(S, ""), Message(U, ""), Message(A, ""), Message(U, " ")],
}


@pytest.mark.parametrize("name", DIALOGS)
def test_dialog_tokens_match_the_reference_rules(tokenizer: Tokenizer, name: str) -> None:
    dialog = DIALOGS[name]
    as_dicts = [{"role": str(m.role), "content": m.content} for m in dialog]
    assert encode_dialog(tokenizer, dialog) == reference_tokens(tokenizer, as_dicts)


def test_system_prompt_is_merged_inside_the_first_instruction(tokenizer: Tokenizer) -> None:
    ids = encode_dialog(tokenizer, [Message(S, "Sys"), Message(U, " Hi ")])
    assert ids[0] == tokenizer.bos_id and ids.count(tokenizer.bos_id) == 1 and tokenizer.eos_id not in ids
    # strip() applies to the merged content, so the user's leading space stays after <</SYS>>.
    assert tokenizer.decode(ids) == "[INST] <<SYS>>\nSys\n<</SYS>>\n\n Hi [/INST]"


def test_each_completed_exchange_is_one_bos_eos_segment(tokenizer: Tokenizer) -> None:
    ids = encode_dialog(tokenizer, DIALOGS["system + multi turn"])
    assert ids.count(tokenizer.bos_id) == 3 and ids.count(tokenizer.eos_id) == 2
    assert ids[-1] != tokenizer.eos_id


@pytest.mark.parametrize("tag", ["[INST]", "[/INST]", "<<SYS>>", "<</SYS>>"])
@pytest.mark.parametrize("where", [0, 1, 2])
def test_special_tags_are_refused_with_the_reference_message(
    tokenizer: Tokenizer, tag: str, where: int
) -> None:
    dialog = [Message(S, "system"), Message(U, "question"), Message(A, "answer"), Message(U, "again")]
    dialog[where + 1 if where else 0] = Message(dialog[where + 1 if where else 0].role, f"before {tag} after")
    with pytest.raises(InvalidRequest) as raised:
        encode_dialog(tokenizer, dialog)
    assert raised.value.message == "Error: special tags are not allowed as part of the prompt."


@pytest.mark.parametrize(
    "dialog",
    [
        [],
        [Message(S, "only a system prompt")],
        [Message(A, "assistant first")],
        [Message(U, "u"), Message(U, "u again")],
        [Message(U, "u"), Message(A, "ends with the assistant")],
        [Message(S, "s"), Message(S, "two system prompts"), Message(U, "u")],
        [Message(U, "u"), Message(S, "system in the middle"), Message(U, "u")],
    ],
)
def test_bad_role_orders_are_refused(tokenizer: Tokenizer, dialog: list[Message]) -> None:
    with pytest.raises(InvalidRequest):
        encode_dialog(tokenizer, dialog)


def test_text_prompt_is_bos_then_text(tokenizer: Tokenizer) -> None:
    assert encode_text(tokenizer, "I believe the meaning of life is") == tokenizer.encode(
        "I believe the meaning of life is", bos=True, eos=False
    )
