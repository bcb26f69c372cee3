"""The turns of one Chat stream, as a state machine.

    AWAITING_TURN ──ChatStart / ChatTurn──> REPLYING ──Done sent, none queued──> AWAITING_TURN
          │                                 │  │ └──ChatTurn──> REPLYING (queued behind the reply)
          │                                 │  ├──ChatCancel──> REPLYING (the reply ends CANCELLED)
          │                                 │  └──Done sent, one queued──> REPLYING (its reply begins)
          └──client closes──> CLOSED        └──client closes──> DRAINING ──Done sent, none queued──> CLOSED
                                                  (DRAINING answers the queued turns first, like REPLYING)

A streaming client may send ahead (grpcurl sends every message of its input at once): a turn that
arrives while a reply streams waits, in order, in a queue bounded by `StreamLimits.max_queued_turns`,
and is answered with its own Accepted..Done when the replies before it are done. It is checked when
it arrives, so a bad turn fails the stream at once. A ChatCancel cancels only the reply in flight.

Its inputs arrive on one queue from two sources: the client's messages (read by a task, so a
ChatCancel is seen while a reply streams) and the events of the reply in flight (produced by
another task). The machine is the only consumer, so the conversation needs no locks.

Each stream is bounded by `StreamLimits` (turns, idle wait for the client, total duration): a
client that forgets a stream, or never sets a deadline, cannot hold its resources forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import time
import uuid
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass

from llamagate.v1 import chat_service_pb2 as chat_pb
from services.common.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    FieldViolation,
    InvalidRequest,
    Overloaded,
    PromptTooLong,
    Unavailable,
)
from services.common.logs import bind_request_id
from services.gateway.auth import Tenant
from services.gateway.backends import GenerationRequest
from services.gateway.conversation import Conversation, UserTurn
from services.gateway.pipeline import Done, ReplyEvent, ReplyRequest
from services.gateway.replies import Replies, TurnMeter
from services.gateway.tracing import turn_span


@dataclass(frozen=True)
class StreamLimits:
    """Per-Chat-stream limits (gateway flags --max-turns, --stream-idle-timeout-s,
    --max-stream-duration-s, --max-queued-turns; docs/reliability.md)."""

    max_turns: int = 256
    idle_timeout_s: float = 300.0
    max_duration_s: float = 3600.0
    # Turns that may wait behind the reply in flight: enough for a client that sends ahead, small
    # enough that a stream cannot hold an unbounded backlog of work.
    max_queued_turns: int = 8

    def check_turn(self, turns_so_far: int) -> None:
        if turns_so_far >= self.max_turns:
            raise Overloaded(
                f"this Chat stream has had its {self.max_turns} turns (gateway --max-turns "
                f"{self.max_turns}): open a new stream, with a ChatStart carrying the dialog so far",
                reason="TURN_LIMIT_REACHED",
                metadata={"max_turns": str(self.max_turns)},
            )

    def check_queue(self, queued: int) -> None:
        if queued >= self.max_queued_turns:
            raise Overloaded(
                f"{queued} turns already wait behind the reply in flight, the most this gateway queues "
                f"(--max-queued-turns {self.max_queued_turns}): send the next turn after a done event",
                reason="TURN_QUEUE_FULL",
                metadata={"max_queued_turns": str(self.max_queued_turns)},
            )


# The machine's inputs.
@dataclass(frozen=True)
class ClientMessage:
    request: chat_pb.ChatRequest


@dataclass(frozen=True)
class ClientClosed:
    """The client half-closed the stream: it sends nothing more."""


@dataclass(frozen=True)
class ReplyOutput:
    """An event of the reply in flight other than its Done."""

    event: ReplyEvent


@dataclass(frozen=True)
class ReplyFinished:
    done: Done


@dataclass(frozen=True)
class StreamFailed:
    """Reading the client or producing the reply failed: the stream ends with this error."""

    error: BaseException


TurnInput = ClientMessage | ClientClosed | ReplyOutput | ReplyFinished | StreamFailed


class TurnState(enum.Enum):
    AWAITING_TURN = "no reply in flight; the client's next message is awaited (idle limit runs)"
    REPLYING = "a reply streams; a ChatCancel stops it, a new turn is queued"
    DRAINING = (
        "the client closed its side mid-reply; the reply and the queued turns finish, then the stream ends"
    )
    CLOSED = "the stream is over"


@dataclass
class _Turn:
    """The reply in flight: its task, the event that cancels it, its metrics."""

    task: asyncio.Task[None]
    cancel: asyncio.Event
    meter: TurnMeter


# When the reply's prompt does not fit the model: what the client can do about it.
_TOO_LONG_ADVICE = "shorten this message, or open a new stream with less of the dialog so far"


class ChatTurns:
    """One Chat stream's conversation and its turns. `events()` consumes `inputs` and yields what
    the client is sent; `close()` stops the reply still in flight."""

    def __init__(
        self,
        replies: Replies,
        tenant: Tenant,
        limits: StreamLimits,
        deadline: Callable[[], float | None],
    ) -> None:
        self.inputs: asyncio.Queue[TurnInput] = asyncio.Queue()
        self.state = TurnState.AWAITING_TURN
        self._replies = replies
        self._tenant = tenant
        self._limits = limits
        self._deadline = deadline
        self._conversation: Conversation | None = None
        self._turns = 0  # replies begun or queued
        self._turn: _Turn | None = None
        self._queued: deque[UserTurn] = deque()
        self._opened = time.monotonic()
        # Since when the stream has waited for the client; None while a reply streams.
        self._waiting_since: float | None = self._opened

    async def events(self) -> AsyncGenerator[ReplyEvent, None]:
        while self.state is not TurnState.CLOSED:
            match await self._next_input():
                case StreamFailed(error):
                    raise error
                case ClientClosed():
                    self._on_client_closed()
                case ClientMessage(request):
                    self._on_client_message(request)
                case ReplyOutput(event):
                    self._meter().observe(event)
                    yield event
                case ReplyFinished(done):
                    self._meter().observe(done)
                    self._record(done)
                    yield done
                    self._on_done_sent()

    async def close(self) -> None:
        if self._turn is not None:
            # Cancelling the reply closes its generation: a client that leaves stops its tokens.
            self._turn.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._turn.task

    # Transitions.

    def _on_client_closed(self) -> None:
        if self.state is TurnState.AWAITING_TURN:
            self.state = TurnState.CLOSED
        elif self.state is TurnState.REPLYING:
            self.state = TurnState.DRAINING

    def _on_client_message(self, request: chat_pb.ChatRequest) -> None:
        action = request.WhichOneof("action")
        if action == "cancel":
            # Ignored when no reply streams: the next reply gets a fresh event. Queued turns stay.
            if self._turn is not None:
                self._turn.cancel.set()
            return
        if action == "start":
            if self._conversation is not None:
                raise FailedPrecondition(
                    "the conversation is already started: send a ChatTurn for the next message",
                    reason="CONVERSATION_ALREADY_STARTED",
                )
            self._limits.check_turn(self._turns)
            self._conversation = Conversation.from_start(request.start)
            self._turns += 1
            self._begin_reply()
            return
        if action == "turn":
            if self._conversation is None:
                raise FailedPrecondition(
                    "send a ChatStart first: a ChatTurn continues a started conversation",
                    reason="CONVERSATION_NOT_STARTED",
                )
            self._limits.check_turn(self._turns)
            turn = self._conversation.check_turn(request.turn)
            if self.state is TurnState.AWAITING_TURN:
                self._conversation.add_user_turn(turn)
                self._turns += 1
                self._begin_reply()
            else:
                self._limits.check_queue(len(self._queued))
                self._queued.append(turn)
                self._turns += 1
            return
        raise InvalidRequest(
            "the ChatRequest sets no action: send start, turn or cancel",
            [FieldViolation("action", "not set: set start, turn or cancel")],
        )

    def _begin_reply(self) -> None:
        """The reply to the conversation's last user message starts streaming."""
        assert self._conversation is not None
        self._replies.admit(self._tenant)
        cancel = asyncio.Event()
        meter = self._replies.meter(self._tenant)  # the turn's clock starts before its reply
        request = self._reply_request(self._conversation)
        task = asyncio.create_task(self._produce(request, cancel, self._conversation.longest_field))
        self._turn = _Turn(task, cancel, meter)
        if self.state is TurnState.AWAITING_TURN:
            self.state = TurnState.REPLYING
        self._waiting_since = None

    def _on_done_sent(self) -> None:
        # The turn is over (its task may still be unwinding): the next queued one begins, or the
        # stream waits for the client, or it ends when the client has closed its side.
        self._turn = None
        if self._queued:
            assert self._conversation is not None
            self._conversation.add_user_turn(self._queued.popleft())
            self._begin_reply()
        elif self.state is TurnState.DRAINING:
            self.state = TurnState.CLOSED
        else:
            self.state = TurnState.AWAITING_TURN
            self._waiting_since = time.monotonic()

    # What the transitions use.

    def _meter(self) -> TurnMeter:
        # Reply events come only from the turn in flight: its task ends with its Done.
        assert self._turn is not None
        return self._turn.meter

    def _record(self, done: Done) -> None:
        assert self._conversation is not None
        self._conversation.record_reply(done.finish_reason, done.reply_text)
        self._replies.finished(self._tenant, done)

    def _reply_request(self, conversation: Conversation) -> ReplyRequest:
        request_id = uuid.uuid4().hex
        dialog = tuple(conversation.messages)
        return ReplyRequest(
            request_id=request_id,
            tenant=self._tenant.name,
            context=dialog,
            generation=GenerationRequest(request_id, conversation.turn_sampling, dialog=dialog),
            deadline=self._deadline(),
        )

    async def _produce(self, request: ReplyRequest, cancel: asyncio.Event, longest_field: str) -> None:
        """Run one reply, handing its events (which end with Done) or its error to the machine.

        A prompt too long for the model is told about the client's own field (`longest_field`)."""
        # Entered in this task, the one that starts the backend calls: grpc.aio copies the current
        # trace context into each call when it is created. A failure leaves the span with its error.
        try:
            with (
                bind_request_id(request.request_id),
                turn_span(self._replies.tracer, request.request_id, request.tenant),
            ):
                async with contextlib.aclosing(self._replies.pipeline.run(request, cancel)) as events:
                    async for event in events:
                        if isinstance(event, Done):
                            self.inputs.put_nowait(ReplyFinished(event))
                            return
                        self.inputs.put_nowait(ReplyOutput(event))
                raise Unavailable(f"reply {request.request_id} ended without a done event")
        except PromptTooLong as error:
            self.inputs.put_nowait(StreamFailed(error.named(longest_field, _TOO_LONG_ADVICE)))
        except Exception as error:
            self.inputs.put_nowait(StreamFailed(error))

    async def _next_input(self) -> TurnInput:
        """The next input, or DeadlineExceeded naming the stream limit that ran out."""
        now = time.monotonic()
        duration_left = self._opened + self._limits.max_duration_s - now
        idle_left = (
            float("inf")
            if self._waiting_since is None
            else self._waiting_since + self._limits.idle_timeout_s - now
        )
        try:
            async with asyncio.timeout(max(0.0, min(duration_left, idle_left))):
                return await self.inputs.get()
        except TimeoutError:
            if duration_left <= idle_left:
                raise DeadlineExceeded(
                    f"the Chat stream was open for its limit of {self._limits.max_duration_s:g} s "
                    f"(gateway --max-stream-duration-s {self._limits.max_duration_s:g}): open a new "
                    "stream, with a ChatStart carrying the dialog so far"
                ) from None
            raise DeadlineExceeded(
                f"no message from the client for {self._limits.idle_timeout_s:g} s while the stream "
                f"waited for one (gateway --stream-idle-timeout-s {self._limits.idle_timeout_s:g}): "
                "send turns sooner, or open a new stream with the dialog so far"
            ) from None


async def read_client(requests: AsyncIterator[chat_pb.ChatRequest], inputs: asyncio.Queue[TurnInput]) -> None:
    """The client's side of a Chat stream, as the machine's inputs."""
    try:
        async for request in requests:
            inputs.put_nowait(ClientMessage(request))
    except Exception as error:  # e.g. InvalidRequest for unknown fields: fails the stream
        inputs.put_nowait(StreamFailed(error))
    else:
        inputs.put_nowait(ClientClosed())
