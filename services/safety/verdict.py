"""What the safety service judges and what its classifiers say, before a policy turns that into a
Verdict (services.common.verdicts). No protobuf, no torch."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from services.common.dialog import Message
from services.common.verdicts import Direction
from services.safety.segments import SegmentCache


@dataclass(frozen=True)
class CheckItem:
    """A dialog whose last message (user for INPUT, assistant for OUTPUT) is judged in context."""

    dialog: Sequence[Message]
    direction: Direction
    # A stream's scores of the rows it already judged (moderation.OutputStream): encoder
    # classifiers score only the rows it lacks. None: judged from scratch.
    cache: SegmentCache | None = None


@dataclass(frozen=True)
class Judgement:
    """What a classifier says about one item, in its own label space."""

    # Label -> score in [0, 1]; only labels the classifier reports for this item.
    scores: Mapping[str, float]
    # Tokens of the judged text the classifier read (encoder classifiers: all of them).
    judged_tokens: int
    # Part of the text was not read (Llama Guard drops the oldest turns beyond its window);
    # encoder classifiers read all of it and never set this.
    truncated: bool
    # Labels the classifier itself calls violated (Llama Guard's generated list): a category is
    # then violated only if flagged AND its score reaches the threshold. None (encoder
    # classifiers): the policy thresholds alone decide.
    flagged: frozenset[str] | None = None
    # Inputs the model scored for this item: an encoder classifier's rows (sentences, pairs of
    # them, the whole text or its windows; segments.py). A classifier that reads the item as one
    # prompt leaves the default.
    judged_segments: int = 1
