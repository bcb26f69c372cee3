"""The dialog one Chat stream keeps between turns.

After a reply the assistant's text is appended; the next ChatTurn appends the user message. A turn
whose reply was stopped by the safety policy leaves no trace: its user message is dropped, so the
refused content is not sent again as context (and roles keep alternating). A cancelled reply keeps
what was released before the cancel, or is dropped with its user message when nothing was.

A reply is kept only up to its first special tag: the tags are plain text to the model, which may
emit one, and sent back as context it would make the stream's own dialog invalid for the next turn
(INVALID_ARGUMENT the client cannot fix) and let a reply forge a turn boundary.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from llamagate.v1 import chat_service_pb2 as chat_pb
from services.common.convert import messages_from_pb
from services.common.dialog import (
    SPECIAL_TAGS,
    SPECIAL_TAGS_ERROR,
    Message,
    Role,
    check_user_messages_not_empty,
    contains_special_tags,
    validate_chat_dialog,
)
from services.common.errors import FieldViolation, InvalidRequest
from services.gateway.backends import FinishReason
from services.gateway.sampling import SamplingParams


@dataclass(frozen=True)
class UserTurn:
    """A checked ChatTurn, waiting for its reply to begin."""

    content: str
    sampling: SamplingParams


@dataclass
class Conversation:
    messages: list[Message]
    sampling: SamplingParams
    # The sampling of the reply being produced (a ChatTurn may override the conversation's).
    turn_sampling: SamplingParams = field(default_factory=SamplingParams)
    # The client's field to shorten when the prompt of the reply being produced does not fit the
    # model: the turn's content, or the longest message of the ChatStart.
    longest_field: str = "start.messages"

    @classmethod
    def from_start(cls, start: chat_pb.ChatStart) -> Conversation:
        # Checked before the system prompt joins the messages, so every field named in an error
        # is the one the client sent (start.messages[i] is the client's i-th message).
        messages = messages_from_pb(start.messages, "start.messages")
        for i, m in enumerate(messages):
            if m.role is Role.SYSTEM:
                raise InvalidRequest(
                    f"start.messages[{i}] has ROLE_SYSTEM: put the system prompt in start.system_prompt",
                    [FieldViolation(f"start.messages[{i}].role", "system not allowed here")],
                )
        validate_chat_dialog(messages, "start.messages")
        check_user_messages_not_empty(messages, "start.messages")
        if contains_special_tags(start.system_prompt):
            raise InvalidRequest(
                SPECIAL_TAGS_ERROR, [FieldViolation("start.system_prompt", "contains a special tag")]
            )
        sampling = SamplingParams.from_pb(start.sampling)
        sampling.validate("start.sampling")
        sizes = {f"start.messages[{i}].content": len(m.content) for i, m in enumerate(messages)}
        sizes["start.system_prompt"] = len(start.system_prompt)
        if start.system_prompt:
            messages.insert(0, Message(Role.SYSTEM, start.system_prompt))
        return cls(messages, sampling, sampling, max(sizes, key=lambda name: sizes[name]))

    def check_turn(self, turn: chat_pb.ChatTurn) -> UserTurn:
        """A ChatTurn's content and sampling (merged over the start's), checked when it arrives: a
        turn that waits behind a reply is refused at once, not when its reply would begin."""
        if not turn.content.strip():
            raise InvalidRequest(
                "turn.content is empty: send the user's message",
                [FieldViolation("turn.content", "empty or only whitespace")],
            )
        if contains_special_tags(turn.content):
            raise InvalidRequest(
                SPECIAL_TAGS_ERROR, [FieldViolation("turn.content", "contains a special tag")]
            )
        sampling = self.sampling
        if turn.HasField("sampling"):
            sampling = sampling.overridden_by(SamplingParams.from_pb(turn.sampling))
            sampling.validate("turn.sampling")
        return UserTurn(turn.content, sampling)

    def add_user_turn(self, turn: UserTurn) -> None:
        """The turn's reply begins. The dialog ends with an assistant message (or none) here: every
        reply is recorded, or dropped with its user message, before the next turn is added."""
        self.messages.append(Message(Role.USER, turn.content))
        self.turn_sampling = turn.sampling
        self.longest_field = "turn.content"

    def record_reply(self, finish: FinishReason, reply_text: str) -> None:
        if finish is FinishReason.SAFETY or (finish is FinishReason.CANCELLED and not reply_text):
            self.messages.pop()
        else:
            self.messages.append(Message(Role.ASSISTANT, _before_special_tags(reply_text)))


def _before_special_tags(text: str) -> str:
    found = [i for i in (text.find(tag) for tag in SPECIAL_TAGS) if i >= 0]
    return text[: min(found)] if found else text
