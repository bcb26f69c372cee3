"""The core of the safety service: validate checks, judge them in micro-batches, apply the policy.

No protobuf here; servicer.py translates. Streams of output chunks are judged by `OutputStream`:
every chunk's verdict covers the whole output so far, in the context of the dialog.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from services.common.dialog import Message, Role, check_roles
from services.common.errors import FieldViolation, InvalidRequest
from services.common.verdicts import CategoryScore, Direction, Verdict
from services.safety.batcher import BatcherConfig, MicroBatcher
from services.safety.classifiers.base import Classifier
from services.safety.policy import Policy, PolicyError
from services.safety.segments import SegmentCache
from services.safety.verdict import CheckItem, Judgement

MAX_ITEMS = 64  # the contract's limit on CheckRequest.items
log = logging.getLogger(__name__)


def check_policy_fits(policy: Policy, classifier: Classifier) -> None:
    """Every enabled category must be scorable by the classifier, or it would silently pass."""
    labels = classifier.labels()
    blind = [c.code for c in policy.enabled if not set(c.sources) & labels]
    if blind:
        raise PolicyError(
            f"policy '{policy.name}' enables {', '.join(blind)}, which classifier {classifier.id} cannot "
            f"score (it reports {', '.join(sorted(labels))}); disable them, map them with 'labels:', "
            "or choose a classifier that judges them"
        )


def apply_policy(
    policy: Policy, classifier: Classifier, judgement: Judgement, direction: Direction
) -> Verdict:
    reported = judgement.scores
    flagged = judgement.flagged
    scores = []
    for category in policy.enabled:
        found = [reported[s] for s in category.sources if s in reported]
        if not found:
            continue
        score = min(1.0, max(0.0, max(found)))
        violated = score >= category.threshold
        if flagged is not None:
            violated = violated and not flagged.isdisjoint(category.sources)
        scores.append(CategoryScore(category.code, category.name, score, violated))
    return Verdict(
        safe=not any(s.violated for s in scores),
        direction=direction,
        categories=tuple(scores),
        classifier_id=classifier.id,
        classifier_version=classifier.version,
        judged_tokens=judgement.judged_tokens,
        judged_segments=judgement.judged_segments,
        truncated=judgement.truncated,
    )


def validate_item(item: CheckItem, field: str) -> None:
    check_roles(item.dialog, must_end_with=item.direction.judged_role, field=f"{field}.dialog.messages")


class SafetyChecker:
    """Judges check items against one policy with one classifier (through the micro-batcher)."""

    def __init__(self, policy: Policy, classifier: Classifier, batcher_config: BatcherConfig) -> None:
        check_policy_fits(policy, classifier)
        self.policy = policy
        self.classifier = classifier
        self._batcher = MicroBatcher[CheckItem, Judgement](classifier.judge, batcher_config)

    def start(self) -> None:
        self._batcher.start()

    async def stop(self) -> None:
        await self._batcher.stop()

    @property
    def batch_sizes(self) -> list[int]:
        return self._batcher.batch_sizes

    async def check(self, items: Sequence[CheckItem]) -> list[Verdict]:
        if not items:
            raise InvalidRequest("items is empty: send at least one item", [FieldViolation("items", "empty")])
        if len(items) > MAX_ITEMS:
            raise InvalidRequest(
                f"items has {len(items)} entries; at most {MAX_ITEMS} per request (split it)",
                [FieldViolation("items", f"more than {MAX_ITEMS}")],
            )
        for i, item in enumerate(items):
            validate_item(item, f"items[{i}]")
        judgements = await self._batcher.submit(items)
        verdicts = [
            apply_policy(self.policy, self.classifier, j, item.direction)
            for j, item in zip(judgements, items, strict=True)
        ]
        for verdict in verdicts:
            if verdict.truncated:
                log.info("judged only the last %d tokens of a longer text", verdict.judged_tokens)
        return verdicts

    def output_stream(self, context: Sequence[Message]) -> OutputStream:
        check_roles(context, must_end_with=Role.USER, field="context.messages")
        return OutputStream(self, list(context))


@dataclass
class OutputStream:
    """An output being produced: each chunk extends it and the whole of it is judged again.

    Judging the whole output at every chunk would score its early sentences again and again, so
    the stream keeps a `SegmentCache`: the tokens and scores of the sentences before the last one
    (appended text extends the end), and of the pairs and windows made of them, keyed by content
    so that a segment a chunk does change is simply scored again.
    A chunk's check then scores only the rows it adds: the new sentences, the pair that joins the
    new text to the old, the current last sentence, the whole output while it fits one window and
    the last window once it does not. The verdict is still the max over every row of the whole
    output so far, the rows a fresh check would score. Classifiers that read the dialog as one
    prompt (Llama Guard) ignore the cache.
    """

    checker: SafetyChecker
    context: list[Message]
    output: str = ""
    chunks: int = 0
    cache: SegmentCache = field(default_factory=SegmentCache)

    async def add_chunk(self, chunk: str) -> tuple[int, Verdict]:
        self.output += chunk
        index = self.chunks
        self.chunks += 1
        item = CheckItem(
            [*self.context, Message(Role.ASSISTANT, self.output)], Direction.OUTPUT, cache=self.cache
        )
        [verdict] = await self.checker.check([item])
        return index, verdict
