"""The one interface every classifier backend implements, and the shared judging path of encoder
classifiers (the rows of segments.py, scored in bounded chunks, max-pooled per item).

Backends are blocking and synchronous on purpose: the batcher calls `judge` in a worker thread
with a whole micro-batch, so a backend only has to be good at batches.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence

from services.safety.normalize import normalize_for_judging
from services.safety.segments import Tokenize, TokenRow, plan_rows
from services.safety.verdict import CheckItem, Judgement

# Rows per encoder call. A micro-batch's rows go through in chunks of this many, so one huge
# text costs time, never unbounded memory (32 rows of one window each is the largest input).
ROWS_PER_CALL = 32

# Scores of up to ROWS_PER_CALL rows (token ids without special tokens), one tuple per row in the
# order of the classifier's labels.
ScoreRows = Callable[[Sequence[TokenRow]], list[tuple[float, ...]]]


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


def judge_in_rows(
    items: Sequence[CheckItem],
    tokenize: Tokenize,
    window: int,
    score_rows: ScoreRows,
    labels: Sequence[str],
    rows_per_call: int = ROWS_PER_CALL,
) -> list[Judgement]:
    """Judge each item's last message, normalised, as the rows of `segments.plan_rows`; a label's score is its
    max over the item's rows, so one unsafe sentence, pair or window makes the item unsafe.

    The rows of the whole micro-batch are pooled: a row that occurs in several items (or is in an
    item's stream cache) is scored once. They are scored shortest first, in chunks of
    `rows_per_call`, so rows of like length share a padded chunk and padding costs little.
    Nothing is truncated: `truncated` is always False and `judged_tokens` is the text's length.
    """
    if rows_per_call < 1:
        raise ValueError("rows_per_call must be >= 1")
    # Rows are cut from the normalised text (normalize.py): an obfuscated spelling is judged as
    # the word it stands for.
    plans = [
        plan_rows(normalize_for_judging(item.dialog[-1].content), tokenize, window, item.cache)
        for item in items
    ]
    known: dict[TokenRow, tuple[float, ...]] = {}
    todo: dict[TokenRow, None] = {}
    for plan, item in zip(plans, items, strict=True):
        for row in plan.rows:
            if row.tokens in known or row.tokens in todo:
                continue
            cached = item.cache.scores.get(row.tokens) if item.cache is not None else None
            if cached is not None:
                known[row.tokens] = cached
            else:
                todo[row.tokens] = None
    ordered = sorted(todo, key=len)
    for start in range(0, len(ordered), rows_per_call):
        chunk = ordered[start : start + rows_per_call]
        known.update(zip(chunk, score_rows(chunk), strict=True))
    judgements = []
    for plan, item in zip(plans, items, strict=True):
        worst = [max(column) for column in zip(*(known[row.tokens] for row in plan.rows), strict=True)]
        if item.cache is not None:
            item.cache.scores.update((row.tokens, known[row.tokens]) for row in plan.rows if row.settled)
        judgements.append(
            Judgement(
                scores=dict(zip(labels, worst, strict=True)),
                judged_tokens=plan.judged_tokens,
                truncated=False,
                judged_segments=len(plan.rows),
            )
        )
    return judgements
