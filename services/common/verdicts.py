"""The safety vocabulary every service speaks: which way a text goes and what a check says of it.

Domain types only (no protobuf, no torch); convert.py translates them to and from the contract.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from services.common.dialog import Role


class Direction(enum.StrEnum):
    INPUT = "input"
    OUTPUT = "output"

    @property
    def judged_role(self) -> Role:
        """The role of the message a check in this direction judges (the dialog's last one)."""
        return Role.USER if self is Direction.INPUT else Role.ASSISTANT


@dataclass(frozen=True)
class CategoryScore:
    code: str
    name: str
    score: float
    violated: bool


@dataclass(frozen=True)
class Verdict:
    safe: bool
    direction: Direction
    categories: tuple[CategoryScore, ...] = ()
    classifier_id: str = ""
    classifier_version: str = ""
    # How the safety service read the text: tokens read, inputs scored (sentences, pairs, windows:
    # the verdict is the worst of them), and whether any part went unread.
    judged_tokens: int = 0
    judged_segments: int = 0
    truncated: bool = False

    @property
    def violated(self) -> tuple[str, ...]:
        """Codes of the violated categories, in the policy's order."""
        return tuple(c.code for c in self.categories if c.violated)
