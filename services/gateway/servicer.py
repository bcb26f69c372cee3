"""The ChatService edge: metadata -> tenant, protobuf -> domain, pipeline events -> protobuf.

A Chat stream multiplexes two sources on one queue: the client's messages (read by a task, so a
ChatCancel is seen while a reply streams) and the events of the reply in flight (produced by
another task). The handler is the only consumer, so the conversation state needs no locks.

Each stream is bounded by `StreamLimits` (turns, idle wait for the client, total duration): a
client that forgets a stream, or never sets a deadline, cannot hold its resources forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
from opentelemetry import trace

from llamagate.v1 import chat_service_pb2 as chat_pb
from llamagate.v1 import chat_service_pb2_grpc as chat_grpc
from llamagate.v1 import types_pb2
from services.common.convert import verdict_to_pb
from services.common.dialog import SPECIAL_TAGS_ERROR, Message, Role, contains_special_tags
from services.common.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    FieldViolation,
    InvalidRequest,
    Overloaded,
    Unavailable,
)
from services.common.logs import bind_request_id
from services.gateway.auth import ApiKeys, Tenant
from services.gateway.backends import FinishReason, GenerationRequest
from services.gateway.conversation import Conversation
from services.gateway.metrics import GatewayMetrics
from services.gateway.pipeline import (
    Accepted,
    Done,
    ReplyEvent,
    ReplyPipeline,
    ReplyRequest,
    SafetyNotice,
    Text,
)
from services.gateway.ratelimit import RateLimiter
from services.gateway.sampling import SamplingParams
from services.gateway.tracing import turn_span

log = logging.getLogger(__name__)

_FINISH_TO_PB = {
    FinishReason.STOP: types_pb2.FINISH_REASON_STOP,
    FinishReason.LENGTH: types_pb2.FINISH_REASON_LENGTH,
    FinishReason.SAFETY: types_pb2.FINISH_REASON_SAFETY,
    FinishReason.CANCELLED: types_pb2.FINISH_REASON_CANCELLED,
}


def event_to_pb(event: ReplyEvent) -> chat_pb.ChatResponse:
    if isinstance(event, Accepted):
        return chat_pb.ChatResponse(accepted=chat_pb.Accepted(request_id=event.request_id))
    if isinstance(event, Text):
        return chat_pb.ChatResponse(
            delta=chat_pb.TextDelta(text=event.text, token_ids=event.token_ids, logprobs=event.logprobs)
        )
    if isinstance(event, SafetyNotice):
        return chat_pb.ChatResponse(
            safety=chat_pb.SafetyEvent(verdict=verdict_to_pb(event.verdict), refusal=event.refusal)
        )
    return chat_pb.ChatResponse(
        done=chat_pb.Done(
            finish_reason=_FINISH_TO_PB[event.finish_reason],
            usage=types_pb2.Usage(
                prompt_tokens=event.prompt_tokens, completion_tokens=event.completion_tokens
            ),
            request_id=event.request_id,
        )
    )


@dataclass(frozen=True)
class StreamLimits:
    """Per-Chat-stream limits (gateway flags --max-turns, --stream-idle-timeout-s,
    --max-stream-duration-s; docs/reliability.md)."""

    max_turns: int = 256
    idle_timeout_s: float = 300.0
    max_duration_s: float = 3600.0

    def check_turn(self, turns_so_far: int) -> None:
        if turns_so_far >= self.max_turns:
            raise Overloaded(
                f"this Chat stream has had its {self.max_turns} turns (gateway --max-turns "
                f"{self.max_turns}): open a new stream, with a ChatStart carrying the dialog so far"
            )


@dataclass
class _StreamClock:
    """When the stream opened, and since when it has waited for the client (None: a reply streams)."""

    limits: StreamLimits
    opened: float
    waiting_since: float | None

    @classmethod
    def start(cls, limits: StreamLimits) -> _StreamClock:
        now = time.monotonic()
        return cls(limits, now, now)

    async def next_item(self, queue: asyncio.Queue[Any]) -> Any:
        """The handler's next queue item, or DeadlineExceeded naming the limit that ran out."""
        now = time.monotonic()
        duration_left = self.opened + self.limits.max_duration_s - now
        idle_left = (
            float("inf")
            if self.waiting_since is None
            else self.waiting_since + self.limits.idle_timeout_s - now
        )
        try:
            async with asyncio.timeout(max(0.0, min(duration_left, idle_left))):
                return await queue.get()
        except TimeoutError:
            if duration_left <= idle_left:
                raise DeadlineExceeded(
                    f"the Chat stream was open for its limit of {self.limits.max_duration_s:g} s "
                    f"(gateway --max-stream-duration-s {self.limits.max_duration_s:g}): open a new "
                    "stream, with a ChatStart carrying the dialog so far"
                ) from None
            raise DeadlineExceeded(
                f"no message from the client for {self.limits.idle_timeout_s:g} s while the stream "
                f"waited for one (gateway --stream-idle-timeout-s {self.limits.idle_timeout_s:g}): "
                "send turns sooner, or open a new stream with the dialog so far"
            ) from None


# What the Chat handler's queue carries besides protobuf requests and reply events.
@dataclass(frozen=True)
class _ClientEnded:
    pass


@dataclass(frozen=True)
class _Failed:
    error: BaseException


@dataclass
class _TurnMeter:
    """Feeds one turn's events to the gateway metrics (TTFT as the client sees it, blocks, totals)."""

    metrics: GatewayMetrics | None
    tenant: str
    started: float = field(default_factory=time.monotonic)
    first_text: bool = False

    def observe(self, event: ReplyEvent) -> None:
        if self.metrics is None:
            return
        if isinstance(event, Text) and not event.echo and not self.first_text:
            self.first_text = True
            self.metrics.record_first_token(self.tenant, time.monotonic() - self.started)
        elif isinstance(event, SafetyNotice) and not event.verdict.safe:
            self.metrics.record_safety_block(self.tenant, str(event.verdict.direction))
        elif isinstance(event, Done):
            self.metrics.record_finished(
                self.tenant,
                str(event.finish_reason),
                time.monotonic() - self.started,
                event.prompt_tokens,
                event.completion_tokens,
            )


def _deadline(context: grpc.aio.ServicerContext) -> float | None:
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining


class ChatServicer(chat_grpc.ChatServiceServicer):
    def __init__(
        self,
        pipeline: ReplyPipeline,
        api_keys: ApiKeys,
        limiter: RateLimiter,
        metrics: GatewayMetrics | None = None,
        limits: StreamLimits | None = None,
        tracer: trace.Tracer | None = None,
    ) -> None:
        self._pipeline = pipeline
        self._keys = api_keys
        self._limiter = limiter
        self._metrics = metrics
        self._limits = limits or StreamLimits()
        self._tracer = tracer or trace.NoOpTracer()

    async def Chat(
        self, request_iterator: AsyncIterator[chat_pb.ChatRequest], context: grpc.aio.ServicerContext
    ) -> AsyncGenerator[chat_pb.ChatResponse, None]:
        tenant = self._keys.authenticate(context.invocation_metadata())
        queue: asyncio.Queue[Any] = asyncio.Queue()
        reader = asyncio.create_task(_read_client(request_iterator, queue))
        conversation: Conversation | None = None
        reply: asyncio.Task[None] | None = None
        cancel = asyncio.Event()
        meter = _TurnMeter(None, tenant.name)
        client_ended = False
        clock = _StreamClock.start(self._limits)
        turns = 0
        try:
            while True:
                item = await clock.next_item(queue)
                if isinstance(item, _Failed):
                    raise item.error
                if isinstance(item, _ClientEnded):
                    client_ended = True
                    if reply is None:
                        return
                elif isinstance(item, chat_pb.ChatRequest):
                    action = item.WhichOneof("action")
                    if action == "cancel":
                        cancel.set()  # ignored when no reply streams: the next reply gets a fresh event
                        continue
                    if reply is not None:
                        raise FailedPrecondition(
                            f"a {action} arrived while a reply is streaming: wait for its done event, "
                            "or send ChatCancel first"
                        )
                    self._limits.check_turn(turns)
                    conversation = self._next_turn(conversation, item, action)
                    self._admit(tenant)
                    turns += 1
                    clock.waiting_since = None
                    cancel = asyncio.Event()
                    meter = _TurnMeter(self._metrics, tenant.name)
                    reply = asyncio.create_task(
                        self._produce(self._chat_request(conversation, tenant, context), cancel, queue)
                    )
                else:
                    meter.observe(item)
                    if isinstance(item, Done):
                        assert conversation is not None
                        conversation.record_reply(item.finish_reason, item.reply_text)
                        self._finished(tenant, item)
                    yield event_to_pb(item)
                    if isinstance(item, Done):
                        # The turn is over: the next one may come (its task may still be unwinding).
                        reply = None
                        clock.waiting_since = time.monotonic()
                        if client_ended:
                            return
        finally:
            reader.cancel()
            if reply is not None:
                # Cancelling the reply closes its generation: a client that leaves stops its tokens.
                reply.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reply

    async def Complete(
        self, request: chat_pb.CompleteRequest, context: grpc.aio.ServicerContext
    ) -> AsyncGenerator[chat_pb.CompleteResponse, None]:
        tenant = self._keys.authenticate(context.invocation_metadata())
        if not request.prompt.strip():
            raise InvalidRequest(
                "prompt is empty: send the text to continue", [FieldViolation("prompt", "empty")]
            )
        if contains_special_tags(request.prompt):
            raise InvalidRequest(SPECIAL_TAGS_ERROR, [FieldViolation("prompt", "contains a special tag")])
        sampling = SamplingParams.from_pb(request.sampling)
        sampling.validate("sampling")
        self._admit(tenant)
        meter = _TurnMeter(self._metrics, tenant.name)
        request_id = uuid.uuid4().hex
        reply = ReplyRequest(
            request_id=request_id,
            tenant=tenant.name,
            context=(Message(Role.USER, request.prompt),),
            generation=GenerationRequest(request_id, sampling, prompt=request.prompt, echo=request.echo),
            deadline=_deadline(context),
        )
        # One turn per call: its span stays in the caller's trace.
        with (
            bind_request_id(request_id),
            turn_span(self._tracer, request_id, tenant.name, new_trace=False),
        ):
            async with contextlib.aclosing(self._pipeline.run(reply, asyncio.Event())) as events:
                async for event in events:
                    meter.observe(event)
                    if isinstance(event, Done):
                        self._finished(tenant, event)
                    echo = isinstance(event, Text) and event.echo
                    yield chat_pb.CompleteResponse(event=event_to_pb(event), echo=echo)

    def _admit(self, tenant: Tenant) -> None:
        try:
            self._limiter.admit(tenant)
        except Overloaded:
            if self._metrics is not None:
                self._metrics.record_rate_limited(tenant.name)
            raise

    def _next_turn(
        self, conversation: Conversation | None, request: chat_pb.ChatRequest, action: str | None
    ) -> Conversation:
        if action == "start":
            if conversation is not None:
                raise FailedPrecondition(
                    "the conversation is already started: send a ChatTurn for the next message"
                )
            return Conversation.from_start(request.start)
        if action == "turn":
            if conversation is None:
                raise FailedPrecondition(
                    "send a ChatStart first: a ChatTurn continues a started conversation"
                )
            conversation.add_user_turn(request.turn)
            return conversation
        raise InvalidRequest("the ChatRequest sets no action: send start, turn or cancel")

    def _chat_request(
        self, conversation: Conversation, tenant: Tenant, context: grpc.aio.ServicerContext
    ) -> ReplyRequest:
        request_id = uuid.uuid4().hex
        dialog = tuple(conversation.messages)
        return ReplyRequest(
            request_id=request_id,
            tenant=tenant.name,
            context=dialog,
            generation=GenerationRequest(request_id, conversation.turn_sampling, dialog=dialog),
            deadline=_deadline(context),
        )

    async def _produce(self, request: ReplyRequest, cancel: asyncio.Event, queue: asyncio.Queue[Any]) -> None:
        """Run one reply, handing its events (which end with Done) or its error to the handler."""
        # Entered in this task, the one that starts the backend calls: grpc.aio copies the current
        # trace context into each call when it is created. A failure leaves the span with its error.
        try:
            with (
                bind_request_id(request.request_id),
                turn_span(self._tracer, request.request_id, request.tenant),
            ):
                async with contextlib.aclosing(self._pipeline.run(request, cancel)) as events:
                    async for event in events:
                        queue.put_nowait(event)
                        if isinstance(event, Done):
                            return
                raise Unavailable(f"reply {request.request_id} ended without a done event")
        except Exception as error:
            queue.put_nowait(_Failed(error))

    def _finished(self, tenant: Tenant, done: Done) -> None:
        self._limiter.charge_tokens(tenant, done.prompt_tokens + done.completion_tokens)
        log.info(
            "reply request_id=%s tenant=%s finish=%s prompt_tokens=%d completion_tokens=%d",
            done.request_id,
            tenant.name,
            done.finish_reason,
            done.prompt_tokens,
            done.completion_tokens,
            # Chat logs this in the stream's handler, outside the turn's bind_request_id.
            extra={"request_id": done.request_id},
        )


async def _read_client(requests: AsyncIterator[chat_pb.ChatRequest], queue: asyncio.Queue[Any]) -> None:
    try:
        async for request in requests:
            queue.put_nowait(request)
    except Exception as error:  # e.g. InvalidRequest for unknown fields: fails the stream
        queue.put_nowait(_Failed(error))
    else:
        queue.put_nowait(_ClientEnded())
