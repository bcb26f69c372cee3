"""A synchronous Chat stream driven message by message, for the gateway's end-to-end tests."""

from __future__ import annotations

import queue
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import grpc

from llamagate.v1 import chat_service_pb2 as chat_pb
from llamagate.v1 import chat_service_pb2_grpc as chat_grpc
from llamagate.v1 import types_pb2
from tests.support.stack import Stack


def start(content: str, *, system: str = "", **sampling: object) -> chat_pb.ChatRequest:
    return chat_pb.ChatRequest(
        start=chat_pb.ChatStart(
            system_prompt=system,
            messages=[types_pb2.Message(role=types_pb2.ROLE_USER, content=content)],
            sampling=types_pb2.SamplingParams(**sampling),  # type: ignore[arg-type]
        )
    )


def turn(content: str, **sampling: object) -> chat_pb.ChatRequest:
    pb = chat_pb.ChatTurn(content=content)
    if sampling:
        pb.sampling.CopyFrom(types_pb2.SamplingParams(**sampling))  # type: ignore[arg-type]
    return chat_pb.ChatRequest(turn=pb)


CANCEL = chat_pb.ChatRequest(cancel=chat_pb.ChatCancel())


@dataclass
class Reply:
    events: list[chat_pb.ChatResponse]

    @property
    def request_id(self) -> str:
        return next(e.accepted.request_id for e in self.events if e.HasField("accepted"))

    @property
    def text(self) -> str:
        return "".join(e.delta.text for e in self.events if e.HasField("delta"))

    @property
    def deltas(self) -> list[chat_pb.TextDelta]:
        return [e.delta for e in self.events if e.HasField("delta")]

    @property
    def safety(self) -> list[chat_pb.SafetyEvent]:
        return [e.safety for e in self.events if e.HasField("safety")]

    @property
    def done(self) -> chat_pb.Done:
        assert self.events[-1].HasField("done"), self.events[-1]
        return self.events[-1].done

    @property
    def finish_reason(self) -> str:
        return types_pb2.FinishReason.Name(self.done.finish_reason)


class Gateway(Protocol):
    """What a session needs: a Stack, or a GatewayAddress for a hand-built deployment."""

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]: ...

    def gateway_channel(self) -> grpc.Channel: ...


@dataclass(frozen=True)
class GatewayAddress:
    target: str
    api_key: str

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.api_key}"),)

    def gateway_channel(self) -> grpc.Channel:
        return grpc.insecure_channel(self.target)


class ChatSession:
    """Send requests whenever the test wants; read events one at a time or a whole reply."""

    def __init__(
        self, stack: Gateway, metadata: Sequence[tuple[str, str]] | None = None, timeout_s: float = 120
    ):
        self._channel = stack.gateway_channel()
        self._requests: queue.Queue[chat_pb.ChatRequest | None] = queue.Queue()
        stub = chat_grpc.ChatServiceStub(self._channel)
        self.call = stub.Chat(
            iter(self._requests.get, None),
            metadata=stack.metadata if metadata is None else metadata,
            timeout=timeout_s,
        )
        self._responses: Iterator[chat_pb.ChatResponse] = self.call

    def send(self, request: chat_pb.ChatRequest) -> None:
        self._requests.put(request)

    def next_event(self) -> chat_pb.ChatResponse:
        return next(self._responses)

    def reply(self) -> Reply:
        events = []
        while True:
            event = self.next_event()
            events.append(event)
            if event.HasField("done"):
                return Reply(events)

    def close(self) -> None:
        # A client that goes away: the call is cancelled (RST_STREAM) before its request stream ends.
        # Ending the stream first would be a half-close, after which the gateway rightly finishes the
        # reply in flight (DRAINING) and only the cancel that follows, racing it, would stop it.
        self.call.cancel()
        self._requests.put(None)
        self._channel.close()

    def __enter__(self) -> ChatSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def finished_line(stack: Stack, request_id: str, timeout_s: float = 20.0) -> str:
    """The inference service's `request_finished` log line of request_id (bounded wait)."""
    pattern = re.compile(rf"request_finished request_id={re.escape(request_id)} finish_reason=(\w+)")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        match = pattern.search(stack.inference_log())
        if match:
            return match.group(1)
        time.sleep(0.1)
    raise AssertionError(f"inference never logged the end of {request_id}:\n{stack.inference.log_tail()}")


def rpc_error(call: object) -> grpc.RpcError:
    """Drain a response iterator and return the RpcError that ended it."""
    try:
        for _ in call:  # type: ignore[attr-defined]
            pass
    except grpc.RpcError as error:
        return error
    raise AssertionError("the call ended without an error")


def gateway_health(stack: Gateway, service: str) -> str:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with stack.gateway_channel() as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=5
        )
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def wait_for_health(stack: Gateway, service: str, status: str, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while (current := gateway_health(stack, service)) != status:
        if time.monotonic() > deadline:
            raise AssertionError(f"gateway reports {service} {current}, expected {status}")
        time.sleep(0.2)
