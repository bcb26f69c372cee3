"""Domain types of a safety check: what is judged and what comes back. No protobuf, no torch."""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from services.common.dialog import Message, Role


class Direction(enum.Enum):
    INPUT = "input"
    OUTPUT = "output"

    @property
    def judged_role(self) -> Role:
        return Role.USER if self is Direction.INPUT else Role.ASSISTANT


@dataclass(frozen=True)
class CheckItem:
    """A dialog whose last message (user for INPUT, assistant for OUTPUT) is judged in context."""

    dialog: Sequence[Message]
    direction: Direction


@dataclass(frozen=True)
class Judgement:
    """What a classifier says about one item, in its own label space."""

    # Label -> score in [0, 1]; only labels the classifier reports for this item.
    scores: Mapping[str, float]
    judged_tokens: int
    truncated: bool
    # Labels the classifier itself calls violated (Llama Guard's generated list): a category is
    # then violated only if flagged AND its score reaches the threshold. None (encoder
    # classifiers): the policy thresholds alone decide.
    flagged: frozenset[str] | None = None


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
    categories: tuple[CategoryScore, ...]
    classifier_id: str
    classifier_version: str
    judged_tokens: int
    truncated: bool
    violated: tuple[str, ...] = field(default=())
