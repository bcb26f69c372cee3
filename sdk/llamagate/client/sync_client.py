"""The blocking client: `ChatClient`, its chat sessions and their streamed replies.

A thin transport around reply_machine.py: it makes blocking gRPC calls, feeds the machines what
they return and does what the machines' steps say (yield, raise, sleep and try again).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Self

import grpc

from llamagate.client.client_base import ClientBase, CompletionBase, SessionBase
from llamagate.client.connection import ChannelOptions, Endpoint, TlsConfig, open_channel
from llamagate.client.conversation import CANCEL_REQUEST
from llamagate.client.errors import UnavailableError
from llamagate.client.reply import MachineT, ReplyResult, ReplyState
from llamagate.client.reply_machine import (
    ChatTurn,
    CompletionMachine,
    Step,
    Submission,
)
from llamagate.client.types import ReplyEvent, Sampling, TextChunk
from llamagate.v1 import chat_service_pb2 as chat_pb

_HALF_CLOSE = None


class _ChatStream:
    """One Chat RPC. Requests go through a queue that gRPC's sender thread drains in order."""

    def __init__(self, endpoint: Endpoint, first: Submission) -> None:
        self.sampling = first.stream_sampling
        self._requests: queue.Queue[chat_pb.ChatRequest | None] = queue.Queue()
        self._requests.put(first.request)
        self._call = endpoint.stub.Chat(iter(self._requests.get, _HALF_CLOSE), metadata=endpoint.metadata)

    @property
    def ended(self) -> bool:
        return bool(self._call.done())

    def send(self, request: chat_pb.ChatRequest) -> None:
        self._requests.put(request)

    def read(self) -> chat_pb.ChatResponse | None:
        """The next response; None when the server ended the stream; grpc.RpcError when it failed."""
        return next(self._call, None)

    def close(self) -> None:
        """Tell the server no more turns will come; it ends the stream when idle."""
        self._requests.put(_HALF_CLOSE)

    def cancel(self) -> None:
        self._requests.put(_HALF_CLOSE)  # also unblocks gRPC's sender thread
        self._call.cancel()


class _Alarm:
    """Runs `on_expiry` on a timer thread after `timeout_s`: a blocking read has no timeout of its own."""

    def __init__(self, timeout_s: float | None, on_expiry: Callable[[], None]) -> None:
        self.expired = False
        self._timer: threading.Timer | None = None
        if timeout_s is not None:
            self._timer = threading.Timer(timeout_s, self._expire, args=(on_expiry,))
            self._timer.daemon = True
            self._timer.start()

    def _expire(self, on_expiry: Callable[[], None]) -> None:
        self.expired = True
        on_expiry()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()


class _Streamed(ReplyResult[MachineT, Iterator[ReplyEvent]]):
    """What Reply and Completion share: iterating runs the machine, one read per step."""

    def __iter__(self) -> Iterator[ReplyEvent]:
        return self._events

    def text_chunks(self) -> Iterator[str]:
        """Just the text, as it arrives (a completion's echoed prompt first, when asked for)."""
        for event in self._events:
            if isinstance(event, TextChunk):
                yield event.text

    def wait(self) -> Self:
        """Block until the reply is finished; raises its ApiError if it failed."""
        for _ in self._events:
            pass
        if self._machine.error is not None:
            raise self._machine.error
        return self

    def _finished(self) -> ReplyState:
        self.wait()
        return self._machine.state

    def _run(self) -> Iterator[ReplyEvent]:
        try:
            while not self._machine.finished:
                step = self._read()
                if step.event is not None:
                    yield step.event
                elif step.error is not None:
                    raise step.error
                elif step.retry_in_s is not None:
                    time.sleep(step.retry_in_s)
                    self._start_attempt()
        finally:
            self._stop()

    def _read(self) -> Step:
        """Read the stream once, feed the machine what happened, cancel what the step abandons."""
        raise NotImplementedError

    def _start_attempt(self) -> None:
        raise NotImplementedError

    def _stop(self) -> None:
        """Iteration ended (the reply finished, or the caller stopped iterating)."""


class Reply(_Streamed[ChatTurn]):
    """One streamed reply. Iterate it for events, or read `text` / `finish_reason` / `refusal`,
    which wait for the reply to finish.

        for event in session.send("Hello"):
            if isinstance(event, TextChunk):
                print(event.text, end="", flush=True)
    """

    def __init__(self, session: ChatSession, turn: ChatTurn) -> None:
        super().__init__(turn)
        self._session = session
        # The timeout ends a read that blocks forever by cancelling the stream under it.
        self._alarm = _Alarm(turn.remaining_s(), session._drop_stream)
        session._submit(turn)

    def cancel(self) -> None:
        """Ask the server to stop this reply; it then ends with FinishReason.CANCELLED.

        Safe to call from a signal handler or another thread. Text already generated may still
        arrive before the Done event.
        """
        if self._machine.request_cancel():
            self._session._send_cancel()

    def _read(self) -> Step:
        try:
            response = self._session._read()
        except (grpc.RpcError, UnavailableError) as error:
            step = self._machine.on_timeout() if self._alarm.expired else self._machine.on_error(error)
        else:
            step = self._machine.on_response(response)
        if step.final:
            self._alarm.stop()  # now: a caller may never resume the generator after Done
        if step.abandon:
            self._session._drop_stream()
        return step

    def _start_attempt(self) -> None:
        self._session._submit(self._machine)

    def _stop(self) -> None:
        self._alarm.stop()


class ChatSession(SessionBase[_ChatStream]):
    """A conversation on one Chat stream. One reply at a time; `send` the next turn when it is done.

    If the stream breaks between turns (e.g. the gateway restarted), the next `send` opens a new one
    carrying the conversation so far, so the session goes on.
    """

    def send(self, content: str, *, sampling: Sampling | None = None, timeout: float | None = None) -> Reply:
        """Send the next user turn; returns its Reply, which streams as you iterate it.

        `sampling` overrides the session's parameters for this reply only; `timeout` (seconds) bounds
        the whole reply, retries included (default: the session's).
        """
        return Reply(self, self._machine.next_turn(content, sampling, timeout))

    def close(self) -> None:
        stream = self._stream_to_close()
        if stream is not None:
            stream.close()

    def __enter__(self) -> ChatSession:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _submit(self, turn: ChatTurn) -> None:
        with self._lock:
            stream = self._stream
            usable = stream is not None and not stream.ended
            submission = turn.submission(stream.sampling if stream is not None and usable else None)
            if submission.new_stream:
                self._stream = _ChatStream(self._endpoint, submission)
        if stream is None:
            return
        if submission.new_stream:
            stream.cancel()  # it ended between turns (e.g. the gateway drained it)
        else:
            stream.send(submission.request)

    def _read(self) -> chat_pb.ChatResponse | None:
        stream = self._stream
        if stream is None:
            raise UnavailableError("the chat stream was closed")
        return stream.read()

    def _send_cancel(self) -> None:
        stream = self._stream
        if stream is not None:
            stream.send(CANCEL_REQUEST)


class Completion(_Streamed[CompletionMachine], CompletionBase[Iterator[ReplyEvent]]):
    """One streamed text completion; iterate it, or read `text` (waits for the end)."""

    def _read(self) -> Step:
        try:
            step = self._machine.on_response(next(self._call, None))
        except grpc.RpcError as error:
            step = self._machine.on_error(error)
        if step.abandon:
            self._call.cancel()
        return step

    def _start_attempt(self) -> None:
        self._start_call()


class ChatClient(ClientBase[grpc.Channel, ChatSession, Completion]):
    """A connection to a llamagate gateway.

        with ChatClient("localhost:50051", api_key="...") as client:
            session = client.chat(system_prompt="Answer briefly.")
            print(session.send("What is the capital of France?").text)

    `tls`: None for plaintext (local development), or a TlsConfig (CA, client cert/key for mTLS).
    `retry`: how replies that failed with UNAVAILABLE before any text are retried.
    `timeout`: default limit in seconds for one reply or completion (None: no limit).
    """

    _session_type = ChatSession
    _completion_type = Completion

    def close(self) -> None:
        # Each open stream holds a gRPC sender thread: none may outlive the client.
        for session in list(self._sessions):
            session.close()
        self._channel.close()

    def __enter__(self) -> ChatClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _open_channel(self, target: str, tls: TlsConfig | None, options: ChannelOptions) -> grpc.Channel:
        return open_channel(target, tls, options)
