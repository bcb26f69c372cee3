"""One reply and its retries as a state machine that does no I/O; both clients drive it.

A transport (blocking gRPC in sync_client.py, grpc.aio in async_client.py) makes the calls and feeds
the machine what happened: a response, the end of the stream, an error, its own timer running out.
Each feed returns a `Step` saying what to do next: hand an event to the caller, raise an error, or
wait and start another attempt. What the events mean, when a reply is complete, which failures are
retried (see retry.py) and how a finished chat turn enters the conversation are decided here only.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Generic, TypeVar

import grpc

from llamagate.client.conversation import Conversation
from llamagate.client.errors import ApiError, DeadlineExceededError, UnavailableError, error_from_call
from llamagate.client.reply import ReplyState
from llamagate.client.retry import RetryPolicy
from llamagate.client.types import Done, FinishReason, Message, ReplyEvent, Sampling, event_from_pb
from llamagate.v1 import chat_service_pb2 as chat_pb

Clock = Callable[[], float]
ResponseT = TypeVar("ResponseT", chat_pb.ChatResponse, chat_pb.CompleteResponse)


@dataclass(frozen=True)
class Retrying:
    """How the machines retry: the policy, the randomness of its jitter, and the clock they read."""

    policy: RetryPolicy
    rng: random.Random
    clock: Clock = time.monotonic


@dataclass(frozen=True)
class Step:
    """What a transport does after feeding the machine, in field order.

    `abandon`: this attempt's stream (or call) is broken; cancel it before anything else, so the
    server stops working on it and the next attempt or turn starts on a new one.
    `event`: hand it to the caller. `error`: raise it, the reply failed.
    `retry_in_s`: wait that long, then start the next attempt.
    """

    abandon: bool = False
    event: ReplyEvent | None = None
    error: ApiError | None = None
    retry_in_s: float | None = None

    @property
    def final(self) -> bool:
        """The reply ends with this step: its Done, or its error."""
        return isinstance(self.event, Done) or self.error is not None


class ReplyMachine(Generic[ResponseT]):
    """One reply of a Chat or Complete stream, across its attempts.

    `timeout_s` bounds the whole reply, retries included.
    """

    # How errors name the reply and say that a stream ended before its Done.
    noun: ClassVar[str]
    ended_early: ClassVar[str]

    def __init__(self, retrying: Retrying, timeout_s: float | None) -> None:
        self._policy = retrying.policy
        self._rng = retrying.rng
        self._clock = retrying.clock
        self._deadline = None if timeout_s is None else self._clock() + timeout_s
        self.state = ReplyState()
        self.attempt = 1
        self.error: ApiError | None = None
        self.cancel_requested = False

    @property
    def finished(self) -> bool:
        """The reply is over: done (by the server or a local cancel) or failed."""
        return self.state.done is not None or self.error is not None

    def remaining_s(self) -> float | None:
        """Seconds left of the reply's timeout (None: no timeout)."""
        return None if self._deadline is None else max(0.0, self._deadline - self._clock())

    def request_cancel(self) -> bool:
        """The caller cancels the reply; True when the server should be told now (the first time)."""
        if self.finished or self.cancel_requested:
            return False
        self.cancel_requested = True
        return True

    def on_response(self, response: ResponseT | None) -> Step:
        """The stream's next response; None when the server ended the stream without a Done."""
        if response is None:
            return self._failed(UnavailableError(self.ended_early))
        event = self._decode(response)
        if event is None:
            return Step()  # an event kind this SDK does not know: a newer server may send one
        self.state.apply(event)
        if isinstance(event, Done):
            self._on_done()
        return Step(event=event)

    def on_error(self, error: grpc.RpcError | ApiError) -> Step:
        """The stream or call failed (a gRPC error), or the transport could not use it (an ApiError)."""
        return self._failed(error if isinstance(error, ApiError) else error_from_call(error))

    def on_timeout(self) -> Step:
        """The transport's timer for `remaining_s()` ran out while the reply was unfinished."""
        return self._failed(DeadlineExceededError(f"the {self.noun} did not finish within its timeout"))

    def _failed(self, error: ApiError) -> Step:
        if self.cancel_requested:
            # The caller asked to stop; whatever broke the stream since, the reply ends as cancelled.
            return Step(abandon=True, event=self.state.finish_locally(FinishReason.CANCELLED))
        if not self._policy.should_retry(error, self.attempt, streamed_text=self.state.streamed_text):
            return self._give_up(error)
        wait = self._policy.backoff_s(self.attempt, self._rng, error.retry_after)
        remaining = self.remaining_s()
        if remaining is not None and remaining <= wait:
            late = DeadlineExceededError(f"the {self.noun}'s timeout passed while retrying after: {error}")
            late.__cause__ = error
            return self._give_up(late)
        self.attempt += 1
        self.state = ReplyState()
        return Step(abandon=True, retry_in_s=wait)

    def _give_up(self, error: ApiError) -> Step:
        self.error = error
        return Step(abandon=True, error=error)

    def _decode(self, response: ResponseT) -> ReplyEvent | None:
        raise NotImplementedError

    def _on_done(self) -> None:
        """The server finished the reply (a Done arrived)."""


class CompletionMachine(ReplyMachine[chat_pb.CompleteResponse]):
    """One Complete call: the request, sent again as a new call on each attempt."""

    noun = "completion"
    ended_early = "the gateway ended the stream before the completion was done"

    def __init__(self, request: chat_pb.CompleteRequest, retrying: Retrying, timeout_s: float | None) -> None:
        super().__init__(retrying, timeout_s)
        self.request = request

    def _decode(self, response: chat_pb.CompleteResponse) -> ReplyEvent | None:
        return event_from_pb(response.event, echo=response.echo)


@dataclass(frozen=True)
class Submission:
    """How to send a chat turn: `request` on the session's open stream, or first on a new stream.

    `stream_sampling` is what the stream's ChatStart carries (a turn's own parameters differ from it
    only when the turn overrides them).
    """

    request: chat_pb.ChatRequest
    new_stream: bool
    stream_sampling: Sampling


class ChatTurn(ReplyMachine[chat_pb.ChatResponse]):
    """One user turn of a chat session: its reply, its retries, and what it adds to the conversation."""

    noun = "reply"
    ended_early = "the gateway ended the chat stream before the reply was done"

    def __init__(
        self,
        conversation: Conversation,
        content: str,
        sampling: Sampling,
        retrying: Retrying,
        timeout_s: float | None,
    ) -> None:
        super().__init__(retrying, timeout_s)
        self._conversation = conversation
        self.content = content
        self.sampling = sampling

    def submission(self, open_stream: Sampling | None) -> Submission:
        """How to send this turn (again, after a retry's wait).

        `open_stream`: the sampling parameters of the session's usable stream, or None when it has
        none (never opened, broken, or ended by the server between turns). A new stream's ChatStart
        carries the conversation so far, which is how a session survives a gateway restart.
        """
        if open_stream is None:
            start = self._conversation.start_request(self.content, self.sampling)
            return Submission(start, new_stream=True, stream_sampling=self.sampling)
        turn = Conversation.turn_request(self.content, self.sampling, open_stream)
        return Submission(turn, new_stream=False, stream_sampling=open_stream)

    def _decode(self, response: chat_pb.ChatResponse) -> ReplyEvent | None:
        return event_from_pb(response)

    def _on_done(self) -> None:
        self._conversation.record(self.content, self.state)


class SessionMachine:
    """A chat session's protocol state: its conversation and its turns, one streaming at a time."""

    def __init__(self, conversation: Conversation, retrying: Retrying, timeout_s: float | None) -> None:
        self._conversation = conversation
        self._retrying = retrying
        self._timeout_s = timeout_s
        self._turn: ChatTurn | None = None

    @property
    def history(self) -> tuple[Message, ...]:
        return tuple(self._conversation.history)

    @property
    def streaming(self) -> bool:
        """A turn's reply is still under way (neither done nor failed)."""
        return self._turn is not None and not self._turn.finished

    def next_turn(self, content: str, sampling: Sampling | None, timeout_s: float | None) -> ChatTurn:
        """The machine of a new user turn; `sampling` overrides the session's for this turn only."""
        if self.streaming:
            raise RuntimeError(
                "the previous reply is still streaming: iterate it, wait() or cancel() it first"
            )
        self._turn = ChatTurn(
            self._conversation,
            content,
            self._conversation.sampling.merged(sampling),
            self._retrying,
            timeout_s if timeout_s is not None else self._timeout_s,
        )
        return self._turn

    def reset(self) -> None:
        self._conversation.reset()
