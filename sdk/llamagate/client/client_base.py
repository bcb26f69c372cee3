"""What ChatClient and AsyncChatClient share: their arguments, and how `chat()` and `complete()` set up
the state machines (reply_machine.py) that each client's transport then drives with its own gRPC calls.
"""

from __future__ import annotations

import os
import random
import threading
import weakref
from collections.abc import Callable, Sequence
from typing import Any, Generic, Protocol, Self, TypeVar

from llamagate.client.connection import ChannelOptions, Endpoint, TlsConfig, auth_metadata
from llamagate.client.conversation import Conversation
from llamagate.client.reply import EventsT, ReplyResult
from llamagate.client.reply_machine import CompletionMachine, Retrying, SessionMachine
from llamagate.client.retry import RetryPolicy
from llamagate.client.types import Message, Sampling
from llamagate.v1 import chat_service_pb2 as chat_pb
from llamagate.v1 import chat_service_pb2_grpc as chat_grpc

ChannelT = TypeVar("ChannelT")
SessionT = TypeVar("SessionT")
CompletionT = TypeVar("CompletionT")


class Cancellable(Protocol):
    def cancel(self) -> None: ...


StreamT = TypeVar("StreamT", bound=Cancellable)


class SessionBase(Generic[StreamT]):
    """A chat session: its machine, the endpoint its transport opens streams on, and its stream."""

    def __init__(self, endpoint: Endpoint, machine: SessionMachine) -> None:
        self._endpoint = endpoint
        self._machine = machine
        self._stream: StreamT | None = None
        # The blocking client also drops the stream from a reply's timer thread.
        self._lock = threading.Lock()

    @property
    def history(self) -> tuple[Message, ...]:
        """The turns so far, as the gateway remembers them."""
        return self._machine.history

    def reset(self) -> None:
        """Forget the conversation (the system prompt and sampling stay); the next turn starts afresh."""
        self._drop_stream()
        self._machine.reset()

    def _take_stream(self) -> StreamT | None:
        with self._lock:
            stream, self._stream = self._stream, None
        return stream

    def _drop_stream(self) -> None:
        stream = self._take_stream()
        if stream is not None:
            stream.cancel()

    def _stream_to_close(self) -> StreamT | None:
        """Detach the stream as the session closes: cancelled here while a reply still streams, else
        returned for the transport to half-close, so that the gateway ends it when idle."""
        stream = self._take_stream()
        if stream is not None and self._machine.streaming:
            stream.cancel()
            return None
        return stream


class CompletionBase(ReplyResult[CompletionMachine, EventsT]):
    """What Completion and AsyncCompletion share: the Complete call of each attempt, its cancel, the echo."""

    def __init__(self, endpoint: Endpoint, machine: CompletionMachine) -> None:
        super().__init__(machine)
        self._endpoint = endpoint
        self._call: Any = None
        self._start_call()

    @property
    def echo_text(self) -> str:
        """The echoed prompt, when the request asked for `echo`."""
        return self._finished().echo_text

    def cancel(self) -> None:
        """Stop the completion; iteration then ends with a Done whose reason is CANCELLED."""
        self._machine.request_cancel()
        self._call.cancel()

    def _start_call(self) -> None:
        # The completion's timeout is the call's gRPC deadline (what is left of it, on a retry).
        self._call = self._endpoint.complete(self._machine.request, self._machine.remaining_s())


class ClientBase(Generic[ChannelT, SessionT, CompletionT]):
    """A connection to a gateway; a subclass opens the channel and names its transport's classes."""

    _session_type: Callable[[Endpoint, SessionMachine], SessionT]
    _completion_type: Callable[[Endpoint, CompletionMachine], CompletionT]

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
        metadata = auth_metadata(api_key)
        self._retrying = Retrying(retry or RetryPolicy(), rng or random.Random())
        self._timeout_s = timeout
        self._channel = self._open_channel(target, tls, channel_options)
        self._endpoint = Endpoint(chat_grpc.ChatServiceStub(self._channel), metadata)
        # The blocking client closes its sessions' streams as it closes (grpc.aio's channel close
        # ends the asyncio client's).
        self._sessions: weakref.WeakSet[Any] = weakref.WeakSet()

    @classmethod
    def from_env(cls, **kwargs: Any) -> Self:
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
    ) -> SessionT:
        """A new conversation. `history`: earlier user/assistant turns to continue from.

        Nothing is sent until the first `send`.
        """
        conversation = Conversation(system_prompt, sampling or Sampling(), list(history))
        machine = SessionMachine(conversation, self._retrying, self._timeout(timeout))
        session = self._session_type(self._endpoint, machine)
        self._sessions.add(session)
        return session

    def complete(
        self,
        prompt: str,
        *,
        sampling: Sampling | None = None,
        echo: bool = False,
        timeout: float | None = None,
    ) -> CompletionT:
        """Continue `prompt` with a pretrained model; returns the streaming completion."""
        request = chat_pb.CompleteRequest(prompt=prompt, sampling=(sampling or Sampling()).to_pb(), echo=echo)
        machine = CompletionMachine(request, self._retrying, self._timeout(timeout))
        return self._completion_type(self._endpoint, machine)

    def _timeout(self, timeout: float | None) -> float | None:
        return timeout if timeout is not None else self._timeout_s

    def _open_channel(self, target: str, tls: TlsConfig | None, options: ChannelOptions) -> ChannelT:
        raise NotImplementedError
