"""The asyncio client: `AsyncChatClient`, the mirror of `ChatClient` on grpc.aio.

Like the blocking client, a thin transport around reply_machine.py: it awaits grpc.aio calls,
feeds the machines what they return and does what the machines' steps say.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Self

import grpc

from llamagate.client.client_base import ClientBase, CompletionBase, SessionBase
from llamagate.client.connection import ChannelOptions, Endpoint, TlsConfig, open_aio_channel
from llamagate.client.conversation import CANCEL_REQUEST
from llamagate.client.errors import UnavailableError
from llamagate.client.reply import MachineT, ReplyResult, ReplyState
from llamagate.client.reply_machine import (
    ChatTurn,
    CompletionMachine,
    Step,
)
from llamagate.client.types import ReplyEvent, Sampling, TextChunk
from llamagate.v1 import chat_service_pb2 as chat_pb


class _AsyncChatStream:
    """One Chat RPC, written to and read from directly (no request iterator)."""

    def __init__(self, endpoint: Endpoint, sampling: Sampling) -> None:
        self.sampling = sampling
        self._call = endpoint.stub.Chat(metadata=endpoint.metadata)
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


class _AsyncStreamed(ReplyResult[MachineT, AsyncIterator[ReplyEvent]]):
    """What AsyncReply and AsyncCompletion share: async iteration runs the machine, one read per step."""

    def __aiter__(self) -> AsyncIterator[ReplyEvent]:
        return self._events

    async def text_chunks(self) -> AsyncIterator[str]:
        async for event in self._events:
            if isinstance(event, TextChunk):
                yield event.text

    async def wait(self) -> Self:
        """Wait for the reply to finish; raises its ApiError if it failed."""
        async for _ in self._events:
            pass
        if self._machine.error is not None:
            raise self._machine.error
        return self

    def _finished(self) -> ReplyState:
        # Never block the event loop: results are there once the reply was awaited or iterated.
        if not self.done:
            raise RuntimeError("the reply is still streaming: `await reply.wait()` (or iterate it) first")
        return self._machine.state

    async def _run(self) -> AsyncIterator[ReplyEvent]:
        while not self._machine.finished:
            step = await self._read()
            if step.event is not None:
                yield step.event
            elif step.error is not None:
                raise step.error
            elif step.retry_in_s is not None:
                await asyncio.sleep(step.retry_in_s)
                await self._start_attempt()

    async def _read(self) -> Step:
        """Read the stream once, feed the machine what happened, cancel what the step abandons."""
        raise NotImplementedError

    async def _start_attempt(self) -> None:
        raise NotImplementedError


class AsyncReply(_AsyncStreamed[ChatTurn]):
    """One streamed reply: `async for event in reply`, or `await reply.wait()` then read `text`."""

    def __init__(self, session: AsyncChatSession, turn: ChatTurn) -> None:
        super().__init__(turn)
        self._session = session

    async def cancel(self) -> None:
        """Ask the server to stop this reply; it then ends with FinishReason.CANCELLED."""
        if self._machine.request_cancel():
            await self._session._send_cancel()

    async def _read(self) -> Step:
        try:
            async with asyncio.timeout(self._machine.remaining_s()):
                response = await self._session._read()
        except TimeoutError:
            step = self._machine.on_timeout()
        except (grpc.RpcError, UnavailableError) as error:
            step = self._machine.on_error(error)
        else:
            step = self._machine.on_response(response)
        if step.abandon:
            self._session._drop_stream()
        return step

    async def _start_attempt(self) -> None:
        await self._session._submit(self._machine)


class AsyncChatSession(SessionBase[_AsyncChatStream]):
    """A conversation on one Chat stream; see ChatSession (same behaviour, awaitable)."""

    async def send(
        self,
        content: str,
        *,
        sampling: Sampling | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 (bounds the reply, which outlives this call)
    ) -> AsyncReply:
        """Send the next user turn and return its reply (iterate it to stream the text)."""
        turn = self._machine.next_turn(content, sampling, timeout)
        reply = AsyncReply(self, turn)
        await self._submit(turn)
        return reply

    async def close(self) -> None:
        stream = self._stream_to_close()
        if stream is not None:
            await stream.close()

    async def __aenter__(self) -> AsyncChatSession:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _submit(self, turn: ChatTurn) -> None:
        stream = self._stream
        submission = turn.submission(None if stream is None or stream.ended else stream.sampling)
        if submission.new_stream or stream is None:
            # Any old stream ended between turns (e.g. the gateway drained it): go on on a new one.
            self._drop_stream()
            stream = self._stream = _AsyncChatStream(self._endpoint, submission.stream_sampling)
        await stream.send(submission.request)

    async def _read(self) -> chat_pb.ChatResponse | None:
        if self._stream is None:
            raise UnavailableError("the chat stream was closed")
        return await self._stream.read()

    async def _send_cancel(self) -> None:
        if self._stream is not None:
            await self._stream.send(CANCEL_REQUEST)


class AsyncCompletion(_AsyncStreamed[CompletionMachine], CompletionBase[AsyncIterator[ReplyEvent]]):
    """One streamed text completion: `async for event in completion`, or `await completion.wait()`."""

    async def _read(self) -> Step:
        try:
            response = await self._call.read()
        except grpc.RpcError as error:
            step = self._machine.on_error(error)
        except asyncio.CancelledError:
            # grpc.aio raises it after our own cancel(); any other is the caller's task being cancelled.
            if not self._machine.cancel_requested:
                raise
            step = self._machine.on_error(UnavailableError("cancelled"))
        else:
            step = self._machine.on_response(None if response is grpc.aio.EOF else response)
        if step.abandon:
            self._call.cancel()
        return step

    async def _start_attempt(self) -> None:
        self._start_call()


class AsyncChatClient(ClientBase[grpc.aio.Channel, AsyncChatSession, AsyncCompletion]):
    """The asyncio twin of ChatClient (same arguments).

    async with AsyncChatClient("localhost:50051", api_key="...") as client:
        session = client.chat(system_prompt="Answer briefly.")
        reply = await session.send("Hello")
        async for chunk in reply.text_chunks():
            print(chunk, end="", flush=True)
    """

    _session_type = AsyncChatSession
    _completion_type = AsyncCompletion

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> AsyncChatClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def _open_channel(self, target: str, tls: TlsConfig | None, options: ChannelOptions) -> grpc.aio.Channel:
        return open_aio_channel(target, tls, options)
