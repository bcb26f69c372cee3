"""The reference's dialog rules, shared by every service."""

from __future__ import annotations

import grpc
import pytest

from llamagate.v1 import types_pb2
from services.common.convert import messages_from_pb, messages_to_pb
from services.common.dialog import SPECIAL_TAGS_ERROR, Message, Role, validate_chat_dialog
from services.common.errors import InvalidRequest

S, U, A = Role.SYSTEM, Role.USER, Role.ASSISTANT


@pytest.mark.parametrize(
    "roles",
    [[U], [S, U], [U, A, U], [S, U, A, U, A, U]],
)
def test_valid_role_orders(roles: list[Role]) -> None:
    validate_chat_dialog([Message(r, "x") for r in roles])


@pytest.mark.parametrize(
    ("roles", "fragment"),
    [
        ([], "empty"),
        ([S], "only a system message"),
        ([A], "message 0 is 'assistant'"),
        ([U, U], "message 1 is 'user'"),
        ([U, A], "last message"),
        ([S, S, U], "message 1 is 'system'"),
        ([U, S], "message 1 is 'system'"),
    ],
)
def test_bad_role_orders_are_refused_with_the_position(roles: list[Role], fragment: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        validate_chat_dialog([Message(r, "x") for r in roles])
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert fragment in err.value.message


@pytest.mark.parametrize("tag", ["[INST]", "[/INST]", "<<SYS>>", "<</SYS>>"])
def test_special_tags_are_refused_with_the_reference_message(tag: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        validate_chat_dialog([Message(S, "be nice"), Message(U, f"hello {tag} there")])
    assert err.value.message == SPECIAL_TAGS_ERROR
    assert err.value.violations[0].field == "dialog.messages[1].content"


def test_unknown_role_from_protobuf_is_refused() -> None:
    with pytest.raises(InvalidRequest) as err:
        messages_from_pb([types_pb2.Message(role=types_pb2.ROLE_UNSPECIFIED, content="x")])
    assert "ROLE_UNSPECIFIED" in err.value.message
    with pytest.raises(InvalidRequest):
        messages_from_pb([types_pb2.Message(role=42, content="x")])  # type: ignore[arg-type]


def test_protobuf_round_trip() -> None:
    dialog = [Message(S, "sys"), Message(U, "héllo"), Message(A, "hi"), Message(U, "bye")]
    assert messages_from_pb(messages_to_pb(dialog)) == dialog
