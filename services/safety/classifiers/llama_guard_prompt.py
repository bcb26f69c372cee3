"""The Llama Guard (v1) prompt and the parser of its answer. Pure text, no model.

The prompt is the model card's chat template, byte for byte: the task line, the categories as
"{code}: {name}. \\n{description}", the conversation as "User: ..." / "Agent: ..." turns each
followed by a blank line, and the instructions. The answer is "safe", or "unsafe" and on the next
line a comma-separated list of category codes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from services.common.dialog import Message, Role
from services.safety.policy import Category

log = logging.getLogger(__name__)

_AGENT_ROLE = {Role.USER: "User", Role.ASSISTANT: "Agent"}

PROMPT_HEAD = (
    "[INST] Task: Check if there is unsafe content in '{role}' messages in conversations according our "
    "safety policy with the below categories.\n\n<BEGIN UNSAFE CONTENT CATEGORIES>\n{categories}\n"
    "<END UNSAFE CONTENT CATEGORIES>\n\n<BEGIN CONVERSATION>\n\n"
)
PROMPT_TAIL = (
    "<END CONVERSATION>\n\nProvide your safety assessment for {role} in the above conversation:\n"
    "- First line must read 'safe' or 'unsafe'.\n"
    "- If unsafe, a second line must include a comma-separated list of violated categories. [/INST]"
)


def format_categories(categories: Sequence[Category]) -> str:
    return "\n".join(f"{c.code}: {c.name}. \n{c.description}" for c in categories)


def format_turn(message: Message) -> str:
    return f"{_AGENT_ROLE[message.role]}: {message.content.strip()}\n\n"


def build_prompt(dialog: Sequence[Message], categories: Sequence[Category]) -> str:
    """The prompt judging the last message of `dialog` (a user turn: 'User', else 'Agent').

    A system message has no place in Llama Guard's conversation format and is left out.
    """
    turns = [m for m in dialog if m.role is not Role.SYSTEM]
    role = _AGENT_ROLE[turns[-1].role]
    head = PROMPT_HEAD.format(role=role, categories=format_categories(categories))
    return head + "".join(format_turn(m) for m in turns) + PROMPT_TAIL.format(role=role)


@dataclass(frozen=True)
class Assessment:
    unsafe: bool
    codes: tuple[str, ...]
    # False when the text did not follow the format; such answers are treated as unsafe.
    well_formed: bool


def parse_assessment(text: str, known_codes: Sequence[str]) -> Assessment:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    first = lines[0].lower() if lines else ""
    if first == "safe" and len(lines) == 1:
        return Assessment(False, (), True)
    if first == "unsafe" and len(lines) == 2:
        codes = tuple(code.strip() for code in lines[1].split(",") if code.strip())
        if codes and all(code in known_codes for code in codes):
            return Assessment(True, codes, True)
    # Fail closed: a guard that cannot be read must not let the text through.
    log.warning("malformed Llama Guard output %r; treating it as unsafe in every category", text[:200])
    return Assessment(True, tuple(known_codes), False)
