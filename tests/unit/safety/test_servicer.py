"""The safety servicer's Check (protobuf in, the checker's verdicts out, metrics once the reply is
built) and the policy that turns a classifier's scores into its verdicts."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from llamagate.v1 import safety_service_pb2 as pb
from llamagate.v1 import types_pb2
from services.common.convert import verdict_to_pb
from services.common.dialog import Message, Role
from services.common.verdicts import Direction
from services.safety.batcher import BatcherConfig
from services.safety.classifiers.base import Classifier
from services.safety.metrics import SafetyMetrics
from services.safety.moderation import SafetyChecker, apply_policy
from services.safety.policy import DEFAULT_POLICY, POLICIES_DIR, load_policy
from services.safety.servicer import SafetyServicer
from services.safety.verdict import CheckItem, Judgement
from tests.unit.telemetry.readings import collect, labels

POLICY = load_policy(DEFAULT_POLICY)


class FixedScores(Classifier):
    """Gives every item the same scores: S1 above its threshold, the other categories at 0.01."""

    id = "fixed"
    version = "1"

    def labels(self) -> frozenset[str]:
        return frozenset(c.code for c in POLICY.enabled)

    def judge(self, items: Sequence[CheckItem]) -> list[Judgement]:
        scores = {code: 0.01 for code in self.labels()} | {"S1": 0.9}
        return [Judgement(scores, judged_tokens=7, truncated=False, judged_segments=2) for _ in items]


def item(direction: types_pb2.Direction.ValueType, *contents: str) -> pb.CheckItem:
    roles = [types_pb2.ROLE_USER, types_pb2.ROLE_ASSISTANT]
    messages = [types_pb2.Message(role=roles[i % 2], content=c) for i, c in enumerate(contents)]
    return pb.CheckItem(dialog=types_pb2.Dialog(messages=messages), direction=direction)


async def test_a_check_answers_every_item_and_counts_its_verdicts_once_the_reply_is_built() -> None:
    reader = InMemoryMetricReader()
    metrics = SafetyMetrics.create(MeterProvider(metric_readers=[reader]).get_meter("t"))
    checker = SafetyChecker(POLICY, FixedScores(), BatcherConfig())
    checker.start()
    servicer = SafetyServicer(checker, metrics)
    request = pb.CheckRequest(
        items=[item(types_pb2.DIRECTION_INPUT, "hi"), item(types_pb2.DIRECTION_OUTPUT, "hi", "hello")]
    )
    expected = await checker.check(
        [
            CheckItem([Message(Role.USER, "hi")], Direction.INPUT),
            CheckItem([Message(Role.USER, "hi"), Message(Role.ASSISTANT, "hello")], Direction.OUTPUT),
        ]
    )
    context: Any = None  # Check reads nothing from its context

    response = await servicer.Check(request, context)

    assert response == pb.CheckResponse(verdicts=[verdict_to_pb(v) for v in expected])
    assert [v.direction for v in response.verdicts] == [types_pb2.DIRECTION_INPUT, types_pb2.DIRECTION_OUTPUT]
    assert [c.code for c in response.verdicts[0].categories if c.violated] == ["S1"]
    assert len(response.verdicts[0].categories) == len(POLICY.enabled)
    # The caller does not wait for the metrics: they are recorded on the loop's next turn.
    assert "llamagate_safety_verdicts_total" not in collect(reader)
    await asyncio.sleep(0)
    got = collect(reader)
    verdicts = got["llamagate_safety_verdicts_total"]
    for direction in ("input", "output"):
        assert verdicts[labels(direction=direction, category="S1", verdict="unsafe")].value == 1
        assert got["llamagate_safety_check_seconds"][labels(direction=direction, mode="unary")].value == 1
        assert got["llamagate_safety_judged_tokens_total"][labels(direction=direction)].value == 7
    await checker.stop()


def test_a_category_scores_its_worst_source_and_a_flagging_classifier_must_flag_it() -> None:
    policy = load_policy(POLICIES_DIR / "llama_guard.yaml")  # O6 reads O6 and S11
    classifier = FixedScores()
    scores = {"O6": 0.2, "S11": 0.7, "O1": 0.9}

    def violated(flagged: frozenset[str] | None) -> dict[str, float]:
        judgement = Judgement(scores, judged_tokens=3, truncated=False, flagged=flagged)
        verdict = apply_policy(policy, classifier, judgement, Direction.OUTPUT)
        assert verdict.safe == (not verdict.violated)
        return {c.code: c.score for c in verdict.categories if c.violated}

    assert violated(None) == {"O1": 0.9, "O6": 0.7}
    assert violated(frozenset({"S11"})) == {"O6": 0.7}  # O1 scores high but was not flagged
    assert violated(frozenset()) == {}
