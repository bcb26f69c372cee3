"""Prompts as Llama 2 chat and text models were trained on them, byte-exact with the reference.

A dialog becomes, per completed (user, assistant) exchange,
    <s>[INST] {user} [/INST] {assistant} </s>
then `<s>[INST] {last user} [/INST]` for the turn to answer. A leading system message is folded
into the first user message between <<SYS>> tags, before the contents are stripped.
"""

from __future__ import annotations

from collections.abc import Sequence

from services.common.dialog import Message, Role, validate_chat_dialog
from services.inference.model.tokenizer import Tokenizer

B_INST, E_INST = "[INST]", "[/INST]"
B_SYS, E_SYS = "<<SYS>>\n", "\n<</SYS>>\n\n"


def encode_dialog(tokenizer: Tokenizer, dialog: Sequence[Message]) -> list[int]:
    """Token ids of a chat prompt; raises InvalidRequest for bad role orders or special tags."""
    validate_chat_dialog(dialog)
    contents = [message.content for message in dialog]
    if dialog[0].role is Role.SYSTEM:
        contents = [B_SYS + contents[0] + E_SYS + contents[1], *contents[2:]]
    ids: list[int] = []
    for prompt, answer in zip(contents[:-1:2], contents[1::2], strict=True):
        ids += tokenizer.encode(f"{B_INST} {prompt.strip()} {E_INST} {answer.strip()} ", bos=True, eos=True)
    ids += tokenizer.encode(f"{B_INST} {contents[-1].strip()} {E_INST}", bos=True, eos=False)
    return ids


def encode_text(tokenizer: Tokenizer, prompt: str) -> list[int]:
    """A text completion prompt: BOS then the text, as the reference's text_completion."""
    return tokenizer.encode(prompt, bos=True, eos=False)
