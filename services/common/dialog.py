"""Typed dialogs, as in the reference (`Message`, `Dialog`), and the rules every service enforces.

The rules are the reference's: an optional system message first, then user and assistant turns
alternating from the user, ending with the user; no special tags anywhere. They live here, with no
tokenizer or torch dependency, so the gateway refuses a bad dialog before it reaches any backend.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from services.common.errors import FieldViolation, InvalidRequest

SPECIAL_TAGS = ("[INST]", "[/INST]", "<<SYS>>", "<</SYS>>")
# The reference's exact wording, returned verbatim as the INVALID_ARGUMENT message.
SPECIAL_TAGS_ERROR = "Error: special tags are not allowed as part of the prompt."
ROLE_ORDER_ERROR = (
    "model only supports 'system', 'user' and 'assistant' roles, "
    "starting with 'system', then 'user' and alternating (u/a/u/a/u...)"
)


class Role(enum.StrEnum):
    SYSTEM = "system"
    USER = "user"
    ASSISTANT = "assistant"


@dataclass(frozen=True)
class Message:
    role: Role
    content: str


Dialog = Sequence[Message]


def contains_special_tags(text: str) -> bool:
    return any(tag in text for tag in SPECIAL_TAGS)


def check_no_special_tags(dialog: Dialog, field: str = "dialog.messages") -> None:
    for i, message in enumerate(dialog):
        if contains_special_tags(message.content):
            raise InvalidRequest(
                SPECIAL_TAGS_ERROR, [FieldViolation(f"{field}[{i}].content", "contains a special tag")]
            )


def check_prompt(prompt: str, field: str = "prompt") -> None:
    """The public API's rules for a text prompt to continue: not empty, no chat-format tags."""
    if not prompt.strip():
        raise InvalidRequest(f"{field} is empty: send the text to continue", [FieldViolation(field, "empty")])
    if contains_special_tags(prompt):
        raise InvalidRequest(SPECIAL_TAGS_ERROR, [FieldViolation(field, "contains a special tag")])


def check_user_messages_not_empty(dialog: Dialog, field: str = "dialog.messages") -> None:
    """The public API's rule for empty input: a user message that is empty or only whitespace is
    refused, as a ChatTurn's content and a Complete prompt are. Assistant messages may be empty (a
    model may answer with nothing). The model layer keeps the reference's rules, which allow it."""
    for i, message in enumerate(dialog):
        if message.role is Role.USER and not message.content.strip():
            raise InvalidRequest(
                f"{field}[{i}].content is empty: send the user's message",
                [FieldViolation(f"{field}[{i}].content", "empty or only whitespace")],
            )


def check_roles(dialog: Dialog, *, must_end_with: Role | None, field: str = "dialog.messages") -> None:
    """Roles must be [system] user assistant user ... ; `must_end_with` pins the last role."""
    if not dialog:
        raise InvalidRequest(
            f"{field} is empty: send at least one user message", [FieldViolation(field, "empty")]
        )
    turns = dialog[1:] if dialog[0].role is Role.SYSTEM else dialog
    for i, message in enumerate(turns):
        expected = Role.USER if i % 2 == 0 else Role.ASSISTANT
        if message.role is not expected:
            index = i + (len(dialog) - len(turns))
            raise InvalidRequest(
                f"{ROLE_ORDER_ERROR}; message {index} is '{message.role}' where '{expected}' was expected",
                [FieldViolation(f"{field}[{index}].role", f"expected {expected}")],
            )
    if not turns:
        raise InvalidRequest(
            f"{field} has only a system message: add a user message", [FieldViolation(field, "no user turn")]
        )
    if must_end_with is not None and turns[-1].role is not must_end_with:
        raise InvalidRequest(
            f"the last message of {field} must be from the {must_end_with}, not the {turns[-1].role}",
            [FieldViolation(f"{field}[{len(dialog) - 1}].role", f"expected {must_end_with}")],
        )


def validate_chat_dialog(dialog: Dialog, field: str = "dialog.messages") -> None:
    """Everything the reference checks before generating a chat reply."""
    check_roles(dialog, must_end_with=Role.USER, field=field)
    check_no_special_tags(dialog, field)
