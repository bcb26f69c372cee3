"""Protobuf <-> domain conversions shared by the servicers (kept in one place so they agree)."""

from __future__ import annotations

from collections.abc import Iterable

from llamagate.v1 import types_pb2
from services.common.dialog import Message, Role
from services.common.errors import FieldViolation, InvalidRequest
from services.common.verdicts import CategoryScore, Direction, Verdict

_ROLE_FROM_PB = {
    types_pb2.ROLE_SYSTEM: Role.SYSTEM,
    types_pb2.ROLE_USER: Role.USER,
    types_pb2.ROLE_ASSISTANT: Role.ASSISTANT,
}
_ROLE_TO_PB = {role: pb for pb, role in _ROLE_FROM_PB.items()}
_DIRECTION_FROM_PB = {
    types_pb2.DIRECTION_INPUT: Direction.INPUT,
    types_pb2.DIRECTION_OUTPUT: Direction.OUTPUT,
}
_DIRECTION_TO_PB = {direction: pb for pb, direction in _DIRECTION_FROM_PB.items()}


def messages_from_pb(messages: Iterable[types_pb2.Message], field: str = "dialog.messages") -> list[Message]:
    result = []
    for i, m in enumerate(messages):
        role = _ROLE_FROM_PB.get(m.role)
        if role is None:
            raise InvalidRequest(
                f"{field}[{i}].role is {types_pb2.Role.Name(m.role) if m.role in types_pb2.Role.values() else m.role}: "
                "use ROLE_SYSTEM, ROLE_USER or ROLE_ASSISTANT",
                [FieldViolation(f"{field}[{i}].role", "unknown role")],
            )
        result.append(Message(role, m.content))
    return result


def messages_to_pb(messages: Iterable[Message]) -> list[types_pb2.Message]:
    return [types_pb2.Message(role=_ROLE_TO_PB[m.role], content=m.content) for m in messages]


def direction_from_pb(direction: types_pb2.Direction.ValueType) -> Direction | None:
    """None for DIRECTION_UNSPECIFIED (or a value this build does not know): the caller decides."""
    return _DIRECTION_FROM_PB.get(direction)


def direction_to_pb(direction: Direction) -> types_pb2.Direction.ValueType:
    return _DIRECTION_TO_PB[direction]


def verdict_from_pb(pb: types_pb2.SafetyVerdict) -> Verdict:
    return Verdict(
        safe=pb.safe,
        # A verdict always answers a directed check; an unknown value reads as the input side.
        direction=direction_from_pb(pb.direction) or Direction.INPUT,
        categories=tuple(CategoryScore(c.code, c.name, c.score, c.violated) for c in pb.categories),
        classifier_id=pb.classifier_id,
        classifier_version=pb.classifier_version,
        judged_tokens=pb.judged_tokens,
        judged_segments=pb.judged_segments,
        truncated=pb.truncated,
    )


def verdict_to_pb(verdict: Verdict, into: types_pb2.SafetyVerdict | None = None) -> types_pb2.SafetyVerdict:
    """`into`: an empty message to fill, such as a response's `verdicts.add()`; building a verdict and then
    handing it to its parent would copy it, and its categories, once more."""
    message = types_pb2.SafetyVerdict() if into is None else into
    message.safe = verdict.safe
    message.direction = direction_to_pb(verdict.direction)
    for c in verdict.categories:
        message.categories.add(code=c.code, name=c.name, score=c.score, violated=c.violated)
    message.classifier_id = verdict.classifier_id
    message.classifier_version = verdict.classifier_version
    message.judged_tokens = verdict.judged_tokens
    message.judged_segments = verdict.judged_segments
    message.truncated = verdict.truncated
    return message
