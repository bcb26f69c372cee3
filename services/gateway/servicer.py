"""The ChatService edge: metadata -> tenant, protobuf -> domain, reply events -> protobuf.

A Chat stream's turns are the state machine of chat_turns.py; Complete is one reply per call.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator

import grpc
from opentelemetry import trace

from llamagate.v1 import chat_service_pb2 as chat_pb
from llamagate.v1 import chat_service_pb2_grpc as chat_grpc
from llamagate.v1 import types_pb2
from services.common.convert import verdict_to_pb
from services.common.dialog import Message, Role, check_prompt
from services.common.logs import bind_request_id
from services.gateway.auth import ApiKeys
from services.gateway.backends import FinishReason, GenerationRequest
from services.gateway.chat_turns import ChatTurns, StreamLimits, read_client
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
from services.gateway.replies import Replies
from services.gateway.sampling import SamplingParams
from services.gateway.tracing import turn_span

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
                prompt_tokens=event.prompt_tokens,
                completion_tokens=event.completion_tokens,
                cached_prompt_tokens=event.cached_prompt_tokens,
            ),
            request_id=event.request_id,
        )
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
        self._keys = api_keys
        self._replies = Replies(pipeline, limiter, metrics, tracer or trace.NoOpTracer())
        self._limits = limits or StreamLimits()

    async def Chat(
        self, request_iterator: AsyncIterator[chat_pb.ChatRequest], context: grpc.aio.ServicerContext
    ) -> AsyncGenerator[chat_pb.ChatResponse, None]:
        tenant = self._keys.authenticate(context.invocation_metadata())
        turns = ChatTurns(self._replies, tenant, self._limits, lambda: _deadline(context))
        reader = asyncio.create_task(read_client(request_iterator, turns.inputs))
        try:
            async with contextlib.aclosing(turns.events()) as events:
                async for event in events:
                    yield event_to_pb(event)
        finally:
            reader.cancel()
            await turns.close()

    async def Complete(
        self, request: chat_pb.CompleteRequest, context: grpc.aio.ServicerContext
    ) -> AsyncGenerator[chat_pb.CompleteResponse, None]:
        tenant = self._keys.authenticate(context.invocation_metadata())
        check_prompt(request.prompt)
        sampling = SamplingParams.from_pb(request.sampling)
        sampling.validate("sampling")
        self._replies.admit(tenant)
        meter = self._replies.meter(tenant)
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
            turn_span(self._replies.tracer, request_id, tenant.name, new_trace=False),
        ):
            async with contextlib.aclosing(self._replies.pipeline.run(reply, asyncio.Event())) as events:
                async for event in events:
                    meter.observe(event)
                    if isinstance(event, Done):
                        self._replies.finished(tenant, event)
                    echo = isinstance(event, Text) and event.echo
                    yield chat_pb.CompleteResponse(event=event_to_pb(event), echo=echo)
