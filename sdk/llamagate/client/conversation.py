"""The protocol logic both clients share: what a session remembers, what it sends, how a reply adds up.

The gateway keeps a conversation's history on its Chat stream. The SDK keeps the same history so it
can resume on a new stream (a ChatStart carrying every turn so far) when the old one breaks, e.g.
because the gateway restarted between turns. `Conversation.record` must follow the gateway's rule
for which turns enter the history, or a resumed conversation would differ from the original.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from llamagate.client.reply import ReplyState
from llamagate.client.types import FinishReason, Message, Role, Sampling, messages_to_pb
from llamagate.v1 import chat_service_pb2 as chat_pb


@dataclass
class Conversation:
    """A chat session's system prompt, sampling parameters and the turns the gateway remembers."""

    system_prompt: str = ""
    sampling: Sampling = field(default_factory=Sampling)
    history: list[Message] = field(default_factory=list)

    def start_request(self, content: str, sampling: Sampling) -> chat_pb.ChatRequest:
        """The ChatStart that opens a stream: the whole history plus the new user turn."""
        messages: Sequence[Message] = [*self.history, Message(Role.USER, content)]
        return chat_pb.ChatRequest(
            start=chat_pb.ChatStart(
                system_prompt=self.system_prompt,
                messages=messages_to_pb(messages),
                sampling=sampling.to_pb(),
            )
        )

    @staticmethod
    def turn_request(content: str, sampling: Sampling, stream_sampling: Sampling) -> chat_pb.ChatRequest:
        """The ChatTurn for an open stream whose ChatStart carried `stream_sampling`.

        The SDK merges a turn's override client side and sends the full parameters, so the result
        does not depend on whether the server merges or replaces an override.
        """
        turn = chat_pb.ChatTurn(content=content)
        if sampling != stream_sampling:
            turn.sampling.CopyFrom(sampling.to_pb())
        return chat_pb.ChatRequest(turn=turn)

    def record(self, content: str, reply: ReplyState) -> None:
        """Add a finished turn to the history, by the gateway's rule (services/gateway/conversation.py).

        A turn stopped by the safety policy leaves no trace, so refused content is never sent again
        as context; a cancelled reply keeps the text released before the cancel, or is dropped with
        its user turn when nothing was released.
        """
        done = reply.done
        if done is None or done.finish_reason is FinishReason.SAFETY:
            return
        if done.finish_reason is FinishReason.CANCELLED and not reply.text:
            return
        self.history.append(Message(Role.USER, content))
        self.history.append(Message(Role.ASSISTANT, _before_special_tags(reply.text)))

    def reset(self) -> None:
        self.history.clear()


CANCEL_REQUEST = chat_pb.ChatRequest(cancel=chat_pb.ChatCancel())

# Llama 2's chat-format tags. A model may emit one (imagining the next turn); the gateway keeps a
# reply in the conversation only up to its first tag, since a dialog containing one is refused.
SPECIAL_TAGS = ("[INST]", "[/INST]", "<<SYS>>", "<</SYS>>")


def _before_special_tags(text: str) -> str:
    found = [i for i in (text.find(tag) for tag in SPECIAL_TAGS) if i >= 0]
    return text[: min(found)] if found else text
