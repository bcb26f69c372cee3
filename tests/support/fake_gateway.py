"""A tiny in-test ChatService for the SDK's mechanics (retry, deadlines, error details, cancel).

It is not a gateway: each test gives it a script, an async function that plays one Chat (or
Complete) call. The real gateway is exercised in tests/integration/client/.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import grpc

from llamagate.v1 import chat_service_pb2 as chat_pb
from llamagate.v1 import chat_service_pb2_grpc as chat_grpc
from llamagate.v1 import types_pb2
from services.common.interceptors import ErrorInterceptor

ChatScript = Callable[["ChatCall"], Awaitable[None]]
CompleteScript = Callable[[chat_pb.CompleteRequest, "CompleteCall"], Awaitable[None]]


@dataclass
class ChatCall:
    """One Chat RPC as a script sees it: read the client's requests, write events."""

    index: int
    requests: AsyncIterator[chat_pb.ChatRequest]
    context: grpc.aio.ServicerContext
    out: asyncio.Queue[chat_pb.ChatResponse | None]
    received: list[chat_pb.ChatRequest] = field(default_factory=list)

    async def next_request(self) -> chat_pb.ChatRequest | None:
        try:
            request = await anext(self.requests)
        except StopAsyncIteration:
            return None
        self.received.append(request)
        return request

    async def send(self, response: chat_pb.ChatResponse) -> None:
        await self.out.put(response)

    async def reply(
        self,
        request_id: str,
        *texts: str,
        finish: types_pb2.FinishReason.ValueType = types_pb2.FINISH_REASON_STOP,
    ) -> None:
        await self.send(accepted(request_id))
        for text in texts:
            await self.send(delta(text))
        await self.send(done(request_id, finish))


@dataclass
class CompleteCall:
    index: int
    context: grpc.aio.ServicerContext
    out: asyncio.Queue[chat_pb.CompleteResponse | None]

    async def send(self, event: chat_pb.ChatResponse, echo: bool = False) -> None:
        await self.out.put(chat_pb.CompleteResponse(event=event, echo=echo))


def accepted(request_id: str) -> chat_pb.ChatResponse:
    return chat_pb.ChatResponse(accepted=chat_pb.Accepted(request_id=request_id))


def delta(text: str) -> chat_pb.ChatResponse:
    return chat_pb.ChatResponse(delta=chat_pb.TextDelta(text=text, token_ids=[len(text)]))


def done(
    request_id: str, finish: types_pb2.FinishReason.ValueType = types_pb2.FINISH_REASON_STOP
) -> chat_pb.ChatResponse:
    return chat_pb.ChatResponse(
        done=chat_pb.Done(
            finish_reason=finish,
            request_id=request_id,
            usage=types_pb2.Usage(prompt_tokens=3, completion_tokens=2),
        )
    )


class FakeChatService(chat_grpc.ChatServiceServicer):
    def __init__(self) -> None:
        self.chat_script: ChatScript | None = None
        self.complete_script: CompleteScript | None = None
        self.chat_calls: list[ChatCall] = []
        self.complete_calls = 0
        self.metadata: list[dict[str, str]] = []

    async def Chat(self, request_iterator: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        assert self.chat_script is not None, "the test set no chat_script"
        self.metadata.append({k: v for k, v in context.invocation_metadata() if isinstance(v, str)})
        call = ChatCall(len(self.chat_calls), request_iterator, context, asyncio.Queue())
        self.chat_calls.append(call)
        async for response in _play(self.chat_script(call), call.out):
            yield response

    async def Complete(self, request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        assert self.complete_script is not None, "the test set no complete_script"
        self.metadata.append({k: v for k, v in context.invocation_metadata() if isinstance(v, str)})
        call = CompleteCall(self.complete_calls, context, asyncio.Queue())
        self.complete_calls += 1
        async for response in _play(self.complete_script(request, call), call.out):
            yield response


async def _play(script: Awaitable[None], out: asyncio.Queue[Any]) -> AsyncIterator[Any]:
    """Run `script` and yield what it puts on `out` as it goes; its exceptions end the call."""

    async def run() -> None:
        try:
            await script
        finally:
            await out.put(None)

    task = asyncio.ensure_future(run())
    try:
        while (item := await out.get()) is not None:
            yield item
        await task  # re-raises the script's error (a LlamagateError becomes its status)
    finally:
        task.cancel()


@contextmanager
def serve_in_thread(service: FakeChatService) -> Iterator[str]:
    """Serve `service` on a loopback port from its own event loop thread; yields the target."""
    loop = asyncio.new_event_loop()
    started = threading.Event()
    box: dict[str, Any] = {}

    async def start() -> None:
        server = grpc.aio.server(interceptors=[ErrorInterceptor()])
        chat_grpc.add_ChatServiceServicer_to_server(service, server)
        box["port"] = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        box["server"] = server
        started.set()

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    assert started.is_set()
    try:
        yield f"127.0.0.1:{box['port']}"
    finally:
        asyncio.run_coroutine_threadsafe(box["server"].stop(0), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
