"""The dialog a Chat stream keeps between turns."""

import pytest

from llamagate.v1 import chat_service_pb2 as chat_pb
from llamagate.v1 import types_pb2
from services.common.dialog import Role
from services.common.errors import InvalidRequest
from services.gateway.backends import FinishReason
from services.gateway.conversation import Conversation


def start(*contents: str, system: str = "") -> chat_pb.ChatStart:
    roles = [types_pb2.ROLE_USER, types_pb2.ROLE_ASSISTANT]
    return chat_pb.ChatStart(
        system_prompt=system,
        messages=[types_pb2.Message(role=roles[i % 2], content=c) for i, c in enumerate(contents)],
    )


def add(conversation: Conversation, turn: chat_pb.ChatTurn) -> None:
    conversation.add_user_turn(conversation.check_turn(turn))


def test_replies_and_turns_alternate():
    conversation = Conversation.from_start(start("hi", system="be brief"))
    assert [m.role for m in conversation.messages] == [Role.SYSTEM, Role.USER]
    conversation.record_reply(FinishReason.STOP, "hello")
    add(conversation, chat_pb.ChatTurn(content="how are you?"))
    assert [m.content for m in conversation.messages] == ["be brief", "hi", "hello", "how are you?"]


def test_a_refused_turn_leaves_no_trace_and_a_cancelled_one_keeps_its_text():
    conversation = Conversation.from_start(start("hi"))
    conversation.record_reply(FinishReason.SAFETY, "partial")
    assert [m.content for m in conversation.messages] == []
    add(conversation, chat_pb.ChatTurn(content="again"))
    conversation.record_reply(FinishReason.CANCELLED, "half a")
    assert [m.content for m in conversation.messages] == ["again", "half a"]
    add(conversation, chat_pb.ChatTurn(content="more"))
    conversation.record_reply(FinishReason.CANCELLED, "")
    assert [m.content for m in conversation.messages] == ["again", "half a"]


def test_turn_sampling_overrides_for_one_reply():
    pb = start("hi")
    pb.sampling.temperature = 0.0
    conversation = Conversation.from_start(pb)
    conversation.record_reply(FinishReason.STOP, "hello")
    turn = chat_pb.ChatTurn(content="next", sampling=types_pb2.SamplingParams(max_gen_len=3))
    add(conversation, turn)
    assert (conversation.turn_sampling.temperature, conversation.turn_sampling.max_gen_len) == (0.0, 3)
    assert conversation.sampling.max_gen_len is None


@pytest.mark.parametrize(
    ("pb", "message"),
    [
        (start(), "empty"),
        (start("hi", "there"), "last message"),
        (start("[INST]"), "special tags"),
        (
            chat_pb.ChatStart(messages=[types_pb2.Message(role=types_pb2.ROLE_SYSTEM, content="s")]),
            "system_prompt",
        ),
        (chat_pb.ChatStart(messages=[types_pb2.Message(content="no role")]), "role"),
    ],
)
def test_bad_starts(pb, message):
    with pytest.raises(InvalidRequest, match=message):
        Conversation.from_start(pb)


def test_empty_or_tagged_turns_are_refused_and_change_nothing():
    conversation = Conversation.from_start(start("hi"))
    conversation.record_reply(FinishReason.STOP, "hello")
    for content in ("", "   ", "<<SYS>> x"):
        with pytest.raises(InvalidRequest) as raised:
            add(conversation, chat_pb.ChatTurn(content=content))
        assert [v.field for v in raised.value.violations] == ["turn.content"]
    assert len(conversation.messages) == 2


def test_a_reply_with_a_special_tag_is_kept_up_to_the_tag_so_the_next_turn_is_valid():
    conversation = Conversation.from_start(start("hi"))
    conversation.record_reply(FinishReason.LENGTH, "Sure, the builder [/INST] She said [INST] more")
    add(conversation, chat_pb.ChatTurn(content="go on"))
    assert [m.content for m in conversation.messages] == ["hi", "Sure, the builder ", "go on"]


@pytest.mark.parametrize(
    ("pb", "field"),
    [
        # One rule for empty input: an empty or whitespace-only user message, first one included.
        (start(""), "start.messages[0].content"),
        (start(" \n\t"), "start.messages[0].content"),
        (start("hi", "ok", "  ", system="be brief"), "start.messages[2].content"),
        # Fields are the client's own, never shifted by the system prompt joining the dialog.
        (start("hi", system="<<SYS>> be brief"), "start.system_prompt"),
        (start("hi", "ok", "[INST] x", system="be brief"), "start.messages[2].content"),
        (start("hi", "ok", system="be brief"), "start.messages[1].role"),
    ],
)
def test_bad_starts_name_the_clients_field(pb, field):
    with pytest.raises(InvalidRequest) as raised:
        Conversation.from_start(pb)
    assert [v.field for v in raised.value.violations] == [field]


def test_the_field_to_shorten_is_the_longest_message_of_a_start_then_the_turn():
    conversation = Conversation.from_start(start("hi", "a long answer", "ok", system="sys"))
    assert conversation.longest_field == "start.messages[1].content"
    assert Conversation.from_start(start("hi", system="a long system prompt")).longest_field == (
        "start.system_prompt"
    )
    conversation.record_reply(FinishReason.STOP, "hello")
    add(conversation, chat_pb.ChatTurn(content="x"))
    assert conversation.longest_field == "turn.content"
