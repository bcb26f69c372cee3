"""The one interface every classifier backend implements, and the shared truncation policy.

Backends are blocking and synchronous on purpose: the batcher calls `judge` in a worker thread
with a whole micro-batch, so a backend only has to be good at batches.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass

from services.safety.verdict import CheckItem, Judgement


class Classifier(abc.ABC):
    """A loaded model that scores dialogs. Construct it fully loaded (no lazy work per call)."""

    #: Stable identifier, e.g. "embedded-minilm".
    id: str
    #: Weights hash or release tag, so a verdict can be traced to the exact model.
    version: str

    @abc.abstractmethod
    def labels(self) -> frozenset[str]:
        """Every label `judge` can report; the policy's enabled categories must draw on them."""

    @abc.abstractmethod
    def judge(self, items: Sequence[CheckItem]) -> list[Judgement]:
        """Score each item (same order). Called from a worker thread; must not touch asyncio."""


@dataclass(frozen=True)
class Windows:
    """Token windows covering the most recent part of a text, oldest first."""

    windows: list[list[int]]
    judged_tokens: int
    truncated: bool


def recent_windows(token_ids: Sequence[int], window: int, max_windows: int) -> Windows:
    """Split `token_ids` into windows of at most `window` tokens, keeping the most recent ones.

    Why windows rather than one truncation: an encoder sees at most `window` tokens, and a harmful
    request early in a long text must not pass unjudged. Up to `max_windows` windows are judged
    (their scores are max-pooled by the caller); only text older than that is dropped, and the
    verdict says so (truncated=True).
    """
    if window < 1 or max_windows < 1:
        raise ValueError("window and max_windows must be >= 1")
    ids = list(token_ids)
    budget = window * max_windows
    truncated = len(ids) > budget
    ids = ids[-budget:]
    if not ids:
        return Windows([[]], 0, False)
    # Align windows to the end so the most recent window is always full.
    windows = []
    end = len(ids)
    while end > 0:
        windows.append(ids[max(0, end - window) : end])
        end -= window
    windows.reverse()
    if len(windows) > 1 and len(windows[0]) < window:
        # A short oldest remnant judged alone says little; overlap it into a full window instead.
        windows[0] = ids[:window]
    return Windows(windows, len(ids), truncated)
