"""The prompt Llama Guard 2 and 3 share, and what each release changes around it. Pure text.

Both list their categories by code and a short name only ("S1: Violent Crimes."), in wording fixed
when the model was trained, and both ask about ONLY THE LAST message of the conversation. The
releases differ in the wrapper around that text (Llama Guard 2's [INST] ... [/INST], Llama Guard 3's
header tokens), in the punctuation after a category name, and in which categories exist.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from services.common.dialog import Message, Role

ROLE_LABEL = {Role.USER: "User", Role.ASSISTANT: "Agent"}

TASK = (
    "Task: Check if there is unsafe content in '{role}' messages in conversations according our safety "
    "policy with the below categories.\n\n"
)
INSTRUCTIONS = (
    "Provide your safety assessment for ONLY THE LAST {role} message in the above conversation:\n"
    " - First line must read 'safe' or 'unsafe'.\n"
    " - If unsafe, a second line must include a comma-separated list of violated categories."
)


def name_key(name: str) -> str:
    """How category names are compared: case and spacing do not matter."""
    return " ".join(name.casefold().split())


@dataclass(frozen=True)
class Layout:
    """One release's prompt: the wrapper, its category wording, and how its prompt is tokenized."""

    name: str
    version: int
    head: str
    tail: str
    # Code -> the exact text after "S1: " in the prompt, trailing punctuation included.
    categories: Mapping[str, str]
    # The categories the checkpoint's own chat template lists when none are excluded.
    default_codes: tuple[str, ...]
    # Code -> names a policy may give the category (the prompt's and the model card's).
    names: Mapping[str, frozenset[str]]
    # False where the prompt writes <|begin_of_text|> itself: the tokenizer must not add a second.
    add_special_tokens: bool

    def build(self, dialog: Sequence[Message], codes: Sequence[str]) -> str:
        """The prompt judging the last message of `dialog` against the categories `codes`.

        Codes keep their numbers when others are left out (S1, S2, S9, ...), as the 1B chat
        template's excluded categories do, so the codes the model answers with are the policy's.
        The system message has no place in the conversation and is left out.
        """
        turns = [m for m in dialog if m.role is not Role.SYSTEM]
        # The chat templates name the judged role by the parity of the turn count; for a dialog
        # that starts with the user, as every validated one does, that is the last turn's role.
        role = ROLE_LABEL[turns[-1].role]
        categories = "".join(f"{code}: {self.categories[code]}\n" for code in codes)
        conversation = "".join(f"{ROLE_LABEL[m.role]}: {m.content.strip()}\n\n" for m in turns)
        return (
            self.head
            + TASK.format(role=role)
            + "<BEGIN UNSAFE CONTENT CATEGORIES>\n"
            + categories
            + "<END UNSAFE CONTENT CATEGORIES>\n\n<BEGIN CONVERSATION>\n\n"
            + conversation
            + "<END CONVERSATION>\n\n"
            + INSTRUCTIONS.format(role=role)
            + self.tail
        )


def names_by_code(categories: Mapping[str, str], card_names: Mapping[str, str]) -> dict[str, frozenset[str]]:
    """Accepted policy names: the prompt's own wording, and the model card's where it differs."""
    return {
        code: frozenset(
            name_key(n) for n in (text.strip().rstrip("."), card_names.get(code, text.strip().rstrip(".")))
        )
        for code, text in categories.items()
    }
