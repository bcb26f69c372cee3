"""The asyncio client: `AsyncChatClient`, the mirror of `ChatClient` on grpc.aio."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc

from llamagate.client.connection import (
    ChannelOptions,
    Metadata,
    TlsConfig,
    auth_metadata,
    open_aio_channel,
)
from llamagate.client.conversation import CANCEL_REQUEST, Conversation
from llamagate.client.errors import ApiError, DeadlineExceededError, UnavailableError, error_from_call
from llamagate.client.reply import ReplyResult, ReplyState
from llamagate.client.retry import RetryPolicy
from llamagate.client.types import Done, FinishReason, Message, ReplyEvent, Sampling, TextChunk, event_from_pb
from llamagate.v1 import chat_service_pb2 as chat_pb
from llamagate.v1 import chat_service_pb2_grpc as chat_grpc


class _AsyncChatStream:
    """One Chat RPC, written to and read from directly (no request iterator)."""

    def __init__(self, stub: Any, metadata: Metadata, sampling: Sampling) -> None:
        self.sampling = sampling
        self._call = stub.Chat(metadata=metadata)
        self._unsent = False

    @property
    def ended(self) -> bool:
        return bool(self._call.done())

    async def send(self, request: chat_pb.ChatRequest) -> None:
        try:
            await self._call.write(request)
        except (grpc.RpcError, asyncio.InvalidStateError):
            # The server ended the stream as we wrote (grpc then reports an INTERNAL status of its
            # own). The request never left, so the reply may be retried on a new stream.
            self._unsent = True

    async def read(self) -> chat_pb.ChatResponse | None:
        if self._unsent:
            raise UnavailableError("the chat stream ended before the turn could be sent")
        response = await self._call.read()
        return None if response is grpc.aio.EOF else response

    async def close(self) -> None:
        with contextlib.suppress(grpc.RpcError, asyncio.InvalidStateError):
            await self._call.done_writing()

    def cancel(self) -> None:
        self._call.cancel()


def _not_finished() -> RuntimeError:
    return RuntimeError("the reply is still streaming: `await reply.wait()` (or iterate it) first")


async def _keep_failure(
    owner: AsyncReply | AsyncCompletion, events: AsyncIterator[ReplyEvent]
) -> AsyncIterator[ReplyEvent]:
    """Remember the error that ended `events`, so `wait()` raises it again."""
    try:
        async for event in events:
            yield event
    except ApiError as error:
        owner._error = error
        raise


class AsyncReply(ReplyResult):
    """One streamed reply: `async for event in reply`, or `await reply.wait()` then read `text`."""

    def __init__(self, session: AsyncChatSession, content: str, sampling: Sampling, timeout_s: float | None):
        self._session = session
        self._content = content
        self._sampling = sampling
        self._state = ReplyState()
        self._cancel_requested = False
        self._error: ApiError | None = None
        self._deadline_at = time.monotonic() + timeout_s if timeout_s is not None else None
        self._events = _keep_failure(self, self._run())

    def __aiter__(self) -> AsyncIterator[ReplyEvent]:
        return self._events

    async def text_chunks(self) -> AsyncIterator[str]:
        async for event in self._events:
            if isinstance(event, TextChunk):
                yield event.text

    @property
    def done(self) -> bool:
        return self._state.done is not None

    @property
    def _streaming(self) -> bool:
        return self._state.done is None and self._error is None

    async def wait(self) -> AsyncReply:
        """Wait for the reply to finish; raises its ApiError if it failed."""
        async for _ in self._events:
            pass
        if self._error is not None:
            raise self._error
        return self

    async def cancel(self) -> None:
        """Ask the server to stop this reply; it then ends with FinishReason.CANCELLED."""
        if self.done or self._cancel_requested:
            return
        self._cancel_requested = True
        await self._session._send_cancel()

    def _finished(self) -> ReplyState:
        if not self.done:
            raise _not_finished()
        return self._state

    def _remaining(self) -> float | None:
        return None if self._deadline_at is None else max(0.0, self._deadline_at - time.monotonic())

    async def _read(self) -> chat_pb.ChatResponse | None:
        try:
            async with asyncio.timeout(self._remaining()):
                return await self._session._read()
        except TimeoutError:
            self._session._drop_stream()
            raise DeadlineExceededError("the reply did not finish within its timeout") from None

    async def _run(self) -> AsyncIterator[ReplyEvent]:
        policy, attempt = self._session._retry, 1
        while True:
            try:
                response = await self._read()
            except grpc.RpcError as rpc_error:
                error = error_from_call(rpc_error)
            except UnavailableError as unavailable:
                error = unavailable
            else:
                if response is not None:
                    event = event_from_pb(response)
                    if event is None:
                        continue
                    self._state.apply(event)
                    if isinstance(event, Done):
                        self._session._finished(self._content, self._state)
                    yield event
                    if isinstance(event, Done):
                        return
                    continue
                error = UnavailableError("the gateway ended the chat stream before the reply was done")
            self._session._drop_stream()
            if self._cancel_requested:
                yield self._state.finish_locally(FinishReason.CANCELLED)
                return
            if not policy.should_retry(error, attempt, streamed_text=self._state.streamed_text):
                raise error
            wait = policy.backoff_s(attempt, self._session._rng, error.retry_after)
            remaining = self._remaining()
            if remaining is not None and remaining <= wait:
                raise DeadlineExceededError(f"the reply's timeout passed while retrying after: {error}")
            await asyncio.sleep(wait)
            attempt += 1
            self._state = ReplyState()
            await self._session._submit(self._content, self._sampling)


class AsyncChatSession:
    """A conversation on one Chat stream; see ChatSession (same behaviour, awaitable)."""

    def __init__(self, client: AsyncChatClient, conversation: Conversation, timeout_s: float | None) -> None:
        self._stub = client._stub
        self._metadata = client._metadata
        self._retry = client._retry
        self._rng = client._rng
        self._conversation = conversation
        self._timeout_s = timeout_s
        self._stream: _AsyncChatStream | None = None
        self._reply: AsyncReply | None = None

    @property
    def history(self) -> tuple[Message, ...]:
        return tuple(self._conversation.history)

    async def send(
        self,
        content: str,
        *,
        sampling: Sampling | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 (bounds the reply, which outlives this call)
    ) -> AsyncReply:
        """Send the next user turn and return its reply (iterate it to stream the text)."""
        if self._reply is not None and self._reply._streaming:
            raise RuntimeError(
                "the previous reply is still streaming: iterate it, wait() or cancel() it first"
            )
        effective = self._conversation.sampling.merged(sampling)
        reply = AsyncReply(self, content, effective, timeout if timeout is not None else self._timeout_s)
        self._reply = reply
        await self._submit(content, effective)
        return reply

    def reset(self) -> None:
        """Forget the conversation; the next turn starts a new one with the same system prompt."""
        self._drop_stream()
        self._conversation.reset()

    async def close(self) -> None:
        stream, self._stream = self._stream, None
        if stream is None:
            return
        if self._reply is not None and self._reply._streaming:
            stream.cancel()
        else:
            await stream.close()

    async def __aenter__(self) -> AsyncChatSession:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _submit(self, content: str, sampling: Sampling) -> None:
        if self._stream is not None and self._stream.ended:
            # It ended between turns (e.g. the gateway drained it): continue on a new one.
            self._drop_stream()
        if self._stream is None:
            self._stream = _AsyncChatStream(self._stub, self._metadata, sampling)
            await self._stream.send(self._conversation.start_request(content, sampling))
        else:
            await self._stream.send(Conversation.turn_request(content, sampling, self._stream.sampling))

    async def _read(self) -> chat_pb.ChatResponse | None:
        if self._stream is None:
            raise UnavailableError("the chat stream was closed")
        return await self._stream.read()

    async def _send_cancel(self) -> None:
        if self._stream is not None:
            await self._stream.send(CANCEL_REQUEST)

    def _drop_stream(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.cancel()

    def _finished(self, content: str, state: ReplyState) -> None:
        self._conversation.record(content, state)


class AsyncCompletion(ReplyResult):
    """One streamed text completion: `async for event in completion`, or `await completion.wait()`."""

    def __init__(self, client: AsyncChatClient, request: chat_pb.CompleteRequest, timeout_s: float | None):
        self._client = client
        self._request = request
        self._state = ReplyState()
        self._cancel_requested = False
        self._error: ApiError | None = None
        self._deadline_at = time.monotonic() + timeout_s if timeout_s is not None else None
        self._call: Any = self._start()
        self._events = _keep_failure(self, self._run())

    def __aiter__(self) -> AsyncIterator[ReplyEvent]:
        return self._events

    @property
    def done(self) -> bool:
        return self._state.done is not None

    @property
    def echo_text(self) -> str:
        return self._finished().echo_text

    async def text_chunks(self) -> AsyncIterator[str]:
        async for event in self._events:
            if isinstance(event, TextChunk):
                yield event.text

    async def wait(self) -> AsyncCompletion:
        async for _ in self._events:
            pass
        if self._error is not None:
            raise self._error
        return self

    def cancel(self) -> None:
        self._cancel_requested = True
        self._call.cancel()

    def _finished(self) -> ReplyState:
        if not self.done:
            raise _not_finished()
        return self._state

    def _start(self) -> Any:
        timeout = None if self._deadline_at is None else max(0.0, self._deadline_at - time.monotonic())
        return self._client._stub.Complete(self._request, metadata=self._client._metadata, timeout=timeout)

    async def _run(self) -> AsyncIterator[ReplyEvent]:
        policy, attempt = self._client._retry, 1
        while True:
            try:
                async for response in self._call:
                    event = event_from_pb(response.event, echo=response.echo)
                    if event is None:
                        continue
                    self._state.apply(event)
                    yield event
                    if isinstance(event, Done):
                        return
                error: ApiError = UnavailableError(
                    "the gateway ended the stream before the completion was done"
                )
            except grpc.RpcError as rpc_error:
                error = error_from_call(rpc_error)
            except asyncio.CancelledError:
                if not self._cancel_requested:
                    raise
                error = UnavailableError("cancelled")
            if self._cancel_requested:
                yield self._state.finish_locally(FinishReason.CANCELLED)
                return
            if not policy.should_retry(error, attempt, streamed_text=self._state.streamed_text):
                raise error
            wait = policy.backoff_s(attempt, self._client._rng, error.retry_after)
            if self._deadline_at is not None and time.monotonic() + wait >= self._deadline_at:
                raise DeadlineExceededError(f"the completion's timeout passed while retrying after: {error}")
            await asyncio.sleep(wait)
            attempt += 1
            self._state = ReplyState()
            self._call = self._start()


class AsyncChatClient:
    """The asyncio twin of ChatClient (same arguments).

    async with AsyncChatClient("localhost:50051", api_key="...") as client:
        session = client.chat(system_prompt="Answer briefly.")
        reply = await session.send("Hello")
        async for chunk in reply.text_chunks():
            print(chunk, end="", flush=True)
    """

    def __init__(
        self,
        target: str,
        *,
        api_key: str | None = None,
        tls: TlsConfig | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        channel_options: ChannelOptions = (),
        rng: random.Random | None = None,
    ) -> None:
        self.target = target
        self._channel = open_aio_channel(target, tls, channel_options)
        self._stub = chat_grpc.ChatServiceStub(self._channel)
        self._metadata = auth_metadata(api_key)
        self._retry = retry or RetryPolicy()
        self._timeout_s = timeout
        self._rng = rng or random.Random()

    @classmethod
    def from_env(cls, **kwargs: Any) -> AsyncChatClient:
        """A client for $LLAMAGATE_TARGET (default localhost:50051) with key $LLAMAGATE_API_KEY."""
        target = os.environ.get("LLAMAGATE_TARGET", "localhost:50051")
        return cls(target, api_key=os.environ.get("LLAMAGATE_API_KEY"), **kwargs)

    def chat(
        self,
        *,
        system_prompt: str = "",
        sampling: Sampling | None = None,
        history: Sequence[Message] = (),
        timeout: float | None = None,
    ) -> AsyncChatSession:
        conversation = Conversation(system_prompt, sampling or Sampling(), list(history))
        return AsyncChatSession(self, conversation, timeout if timeout is not None else self._timeout_s)

    def complete(
        self,
        prompt: str,
        *,
        sampling: Sampling | None = None,
        echo: bool = False,
        timeout: float | None = None,
    ) -> AsyncCompletion:
        request = chat_pb.CompleteRequest(prompt=prompt, sampling=(sampling or Sampling()).to_pb(), echo=echo)
        return AsyncCompletion(self, request, timeout if timeout is not None else self._timeout_s)

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> AsyncChatClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
