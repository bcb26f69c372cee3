"""The blocking client: `ChatClient`, its chat sessions and their streamed replies."""

from __future__ import annotations

import os
import queue
import random
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from typing import Any

import grpc

from llamagate.client.connection import ChannelOptions, Metadata, TlsConfig, auth_metadata, open_channel
from llamagate.client.conversation import CANCEL_REQUEST, Conversation
from llamagate.client.errors import ApiError, DeadlineExceededError, UnavailableError, error_from_call
from llamagate.client.reply import ReplyResult, ReplyState
from llamagate.client.retry import RetryPolicy
from llamagate.client.types import Done, FinishReason, Message, ReplyEvent, Sampling, TextChunk, event_from_pb
from llamagate.v1 import chat_service_pb2 as chat_pb
from llamagate.v1 import chat_service_pb2_grpc as chat_grpc

_HALF_CLOSE = None


class _ChatStream:
    """One Chat RPC. Requests go through a queue that gRPC's sender thread drains in order."""

    def __init__(self, stub: Any, metadata: Metadata, start: chat_pb.ChatRequest, sampling: Sampling) -> None:
        self.sampling = sampling
        self._requests: queue.Queue[chat_pb.ChatRequest | None] = queue.Queue()
        self._requests.put(start)
        self._call = stub.Chat(iter(self._requests.get, _HALF_CLOSE), metadata=metadata)

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


class _Deadline:
    """An optional wall-clock limit; `on_expiry` runs on a timer thread when it passes."""

    def __init__(self, timeout_s: float | None, on_expiry: Any) -> None:
        self.expired = False
        self._at = time.monotonic() + timeout_s if timeout_s is not None else None
        self._timer: threading.Timer | None = None
        if timeout_s is not None:
            self._timer = threading.Timer(timeout_s, self._expire, args=(on_expiry,))
            self._timer.daemon = True
            self._timer.start()

    def _expire(self, on_expiry: Any) -> None:
        self.expired = True
        on_expiry()

    def remaining(self) -> float | None:
        return None if self._at is None else max(0.0, self._at - time.monotonic())

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()


def _keep_failure(owner: Reply | Completion, events: Iterator[ReplyEvent]) -> Iterator[ReplyEvent]:
    """Remember the error that ended `events`, so `wait()` and the result properties raise it again."""
    try:
        yield from events
    except ApiError as error:
        owner._error = error
        raise


class Reply(ReplyResult):
    """One streamed reply. Iterate it for events, or read `text` / `finish_reason` / `refusal`,
    which wait for the reply to finish.

        for event in session.send("Hello"):
            if isinstance(event, TextChunk):
                print(event.text, end="", flush=True)
    """

    def __init__(
        self, session: ChatSession, content: str, sampling: Sampling, timeout_s: float | None
    ) -> None:
        self._session = session
        self._content = content
        self._sampling = sampling
        self._state = ReplyState()
        self._cancel_requested = False
        self._error: ApiError | None = None
        self._deadline = _Deadline(timeout_s, session._drop_stream)
        self._events = _keep_failure(self, self._run())
        session._submit(content, sampling)

    def __iter__(self) -> Iterator[ReplyEvent]:
        return self._events

    def text_chunks(self) -> Iterator[str]:
        """Just the text, as it arrives."""
        for event in self._events:
            if isinstance(event, TextChunk):
                yield event.text

    @property
    def done(self) -> bool:
        return self._state.done is not None

    @property
    def _streaming(self) -> bool:
        return self._state.done is None and self._error is None

    def wait(self) -> Reply:
        """Block until the reply is finished; raises its ApiError if it failed."""
        for _ in self._events:
            pass
        if self._error is not None:
            raise self._error
        return self

    def cancel(self) -> None:
        """Ask the server to stop this reply; it then ends with FinishReason.CANCELLED.

        Safe to call from a signal handler or another thread. Text already generated may still
        arrive before the Done event.
        """
        if self.done or self._cancel_requested:
            return
        self._cancel_requested = True
        self._session._send_cancel()

    def _finished(self) -> ReplyState:
        self.wait()
        return self._state

    def _run(self) -> Iterator[ReplyEvent]:
        policy, attempt = self._session._retry, 1
        try:
            while True:
                try:
                    response = self._session._read()
                except grpc.RpcError as rpc_error:
                    error = self._deadline_aware(error_from_call(rpc_error))
                else:
                    if response is not None:
                        event = event_from_pb(response)
                        if event is None:
                            continue
                        self._state.apply(event)
                        if isinstance(event, Done):
                            # Before yielding: a caller may never resume this generator after Done.
                            self._deadline.stop()
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
                self._sleep(policy.backoff_s(attempt, self._session._rng, error.retry_after), error)
                attempt += 1
                self._state = ReplyState()
                self._session._submit(self._content, self._sampling)
        finally:
            self._deadline.stop()

    def _deadline_aware(self, error: ApiError) -> ApiError:
        if self._deadline.expired:
            return DeadlineExceededError("the reply did not finish within its timeout")
        return error

    def _sleep(self, seconds: float, error: ApiError) -> None:
        remaining = self._deadline.remaining()
        if remaining is not None and remaining <= seconds:
            raise DeadlineExceededError(
                f"the reply's timeout passed while retrying after: {error}"
            ) from error
        time.sleep(seconds)


class ChatSession:
    """A conversation on one Chat stream. One reply at a time; `send` the next turn when it is done.

    If the stream breaks between turns (e.g. the gateway restarted), the next `send` opens a new one
    carrying the conversation so far, so the session goes on.
    """

    def __init__(self, client: ChatClient, conversation: Conversation, timeout_s: float | None) -> None:
        self._stub = client._stub
        self._metadata = client._metadata
        self._retry = client._retry
        self._rng = client._rng
        self._conversation = conversation
        self._timeout_s = timeout_s
        self._stream: _ChatStream | None = None
        self._reply: Reply | None = None
        self._lock = threading.Lock()

    @property
    def history(self) -> tuple[Message, ...]:
        """The turns so far, as the gateway remembers them."""
        return tuple(self._conversation.history)

    def send(self, content: str, *, sampling: Sampling | None = None, timeout: float | None = None) -> Reply:
        """Send the next user turn; returns its Reply, which streams as you iterate it.

        `sampling` overrides the session's parameters for this reply only; `timeout` (seconds) bounds
        the whole reply, retries included (default: the session's).
        """
        if self._reply is not None and self._reply._streaming:
            raise RuntimeError(
                "the previous reply is still streaming: iterate it, wait() or cancel() it first"
            )
        effective = self._conversation.sampling.merged(sampling)
        self._reply = Reply(self, content, effective, timeout if timeout is not None else self._timeout_s)
        return self._reply

    def reset(self) -> None:
        """Forget the conversation (the system prompt and sampling stay); the next turn starts afresh."""
        self._drop_stream()
        self._conversation.reset()

    def close(self) -> None:
        with self._lock:
            stream, self._stream = self._stream, None
        if stream is None:
            return
        if self._reply is not None and self._reply._streaming:
            stream.cancel()
        else:
            stream.close()

    def __enter__(self) -> ChatSession:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _submit(self, content: str, sampling: Sampling) -> None:
        if self._stream is not None and self._stream.ended:
            # It ended between turns (e.g. the gateway drained it): continue on a new one.
            self._drop_stream()
        with self._lock:
            if self._stream is None:
                start = self._conversation.start_request(content, sampling)
                self._stream = _ChatStream(self._stub, self._metadata, start, sampling)
            else:
                self._stream.send(Conversation.turn_request(content, sampling, self._stream.sampling))

    def _read(self) -> chat_pb.ChatResponse | None:
        stream = self._stream
        if stream is None:
            raise UnavailableError("the chat stream was closed")
        return stream.read()

    def _send_cancel(self) -> None:
        stream = self._stream
        if stream is not None:
            stream.send(CANCEL_REQUEST)

    def _drop_stream(self) -> None:
        with self._lock:
            stream, self._stream = self._stream, None
        if stream is not None:
            stream.cancel()

    def _finished(self, content: str, state: ReplyState) -> None:
        self._conversation.record(content, state)


class Completion(ReplyResult):
    """One streamed text completion; iterate it, or read `text` (waits for the end)."""

    def __init__(self, client: ChatClient, request: chat_pb.CompleteRequest, timeout_s: float | None) -> None:
        self._client = client
        self._request = request
        self._state = ReplyState()
        self._cancel_requested = False
        self._error: ApiError | None = None
        self._deadline_at = time.monotonic() + timeout_s if timeout_s is not None else None
        self._call: Any = self._start()
        self._events = _keep_failure(self, self._run())

    def __iter__(self) -> Iterator[ReplyEvent]:
        return self._events

    @property
    def done(self) -> bool:
        return self._state.done is not None

    @property
    def echo_text(self) -> str:
        """The echoed prompt, when the request asked for `echo`."""
        return self._finished().echo_text

    def text_chunks(self) -> Iterator[str]:
        """Just the text as it arrives (the echoed prompt first, when asked for)."""
        for event in self._events:
            if isinstance(event, TextChunk):
                yield event.text

    def wait(self) -> Completion:
        for _ in self._events:
            pass
        if self._error is not None:
            raise self._error
        return self

    def cancel(self) -> None:
        """Stop the completion; iteration then ends with a Done whose reason is CANCELLED."""
        self._cancel_requested = True
        self._call.cancel()

    def _finished(self) -> ReplyState:
        self.wait()
        return self._state

    def _start(self) -> Any:
        timeout = None if self._deadline_at is None else max(0.0, self._deadline_at - time.monotonic())
        return self._client._stub.Complete(self._request, metadata=self._client._metadata, timeout=timeout)

    def _run(self) -> Iterator[ReplyEvent]:
        policy, attempt = self._client._retry, 1
        while True:
            try:
                for response in self._call:
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
            if self._cancel_requested:
                yield self._state.finish_locally(FinishReason.CANCELLED)
                return
            if not policy.should_retry(error, attempt, streamed_text=self._state.streamed_text):
                raise error
            wait = policy.backoff_s(attempt, self._client._rng, error.retry_after)
            if self._deadline_at is not None and time.monotonic() + wait >= self._deadline_at:
                raise DeadlineExceededError(f"the completion's timeout passed while retrying after: {error}")
            time.sleep(wait)
            attempt += 1
            self._state = ReplyState()
            self._call = self._start()


class ChatClient:
    """A connection to a llamagate gateway.

        with ChatClient("localhost:50051", api_key="...") as client:
            session = client.chat(system_prompt="Answer briefly.")
            print(session.send("What is the capital of France?").text)

    `tls`: None for plaintext (local development), or a TlsConfig (CA, client cert/key for mTLS).
    `retry`: how replies that failed with UNAVAILABLE before any text are retried.
    `timeout`: default limit in seconds for one reply or completion (None: no limit).
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
        self._channel = open_channel(target, tls, channel_options)
        self._stub = chat_grpc.ChatServiceStub(self._channel)
        self._metadata = auth_metadata(api_key)
        self._retry = retry or RetryPolicy()
        self._timeout_s = timeout
        self._rng = rng or random.Random()
        # Closed with the client, so no stream (and its gRPC sender thread) outlives it.
        self._sessions: weakref.WeakSet[ChatSession] = weakref.WeakSet()

    @classmethod
    def from_env(cls, **kwargs: Any) -> ChatClient:
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
    ) -> ChatSession:
        """A new conversation. `history`: earlier user/assistant turns to continue from.

        Nothing is sent until the first `send`.
        """
        conversation = Conversation(system_prompt, sampling or Sampling(), list(history))
        session = ChatSession(self, conversation, timeout if timeout is not None else self._timeout_s)
        self._sessions.add(session)
        return session

    def complete(
        self,
        prompt: str,
        *,
        sampling: Sampling | None = None,
        echo: bool = False,
        timeout: float | None = None,
    ) -> Completion:
        """Continue `prompt` with a pretrained model; returns the streaming Completion."""
        request = chat_pb.CompleteRequest(prompt=prompt, sampling=(sampling or Sampling()).to_pb(), echo=echo)
        return Completion(self, request, timeout if timeout is not None else self._timeout_s)

    def close(self) -> None:
        for session in list(self._sessions):
            session.close()
        self._channel.close()

    def __enter__(self) -> ChatClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
