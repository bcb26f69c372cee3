"""Protobuf <-> domain conversions shared by the servicers (kept in one place so they agree)."""

from __future__ import annotations

from collections.abc import Iterable

from llamagate.v1 import types_pb2
from services.common.dialog import Message, Role
from services.common.errors import FieldViolation, InvalidRequest

_ROLE_FROM_PB = {
    types_pb2.ROLE_SYSTEM: Role.SYSTEM,
    types_pb2.ROLE_USER: Role.USER,
    types_pb2.ROLE_ASSISTANT: Role.ASSISTANT,
}
_ROLE_TO_PB = {role: pb for pb, role in _ROLE_FROM_PB.items()}


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
