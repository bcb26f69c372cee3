"""Limits a hostile or forgetful client must not be able to exceed (docs/reliability.md).

The message size, prompt tokens and queue limits are tested in test_hostile.py / test_load.py.
The tests here cover the gateway's per-stream limits; each first checks that the flag exists so a
missing limit fails with its name, then proves the limit is enforced with the documented status.
"""

from __future__ import annotations

import queue
import time
from pathlib import Path

import grpc
import pytest

from llamagate.v1 import chat_service_pb2 as chat_pb
from llamagate.v1 import chat_service_pb2_grpc as chat_grpc
from llamagate.v1 import types_pb2
from tests.reliability.probes import health_status
from tests.support.reliability import ReliabilityStack, gateway_options, start_extra_gateway

pytestmark = pytest.mark.slow


def _require_flag(flag: str, what: str) -> None:
    if flag not in gateway_options():
        pytest.fail(
            f"the gateway has no {flag}: {what} is unbounded (see docs/reliability.md, 'Missing limits')",
            pytrace=False,
        )


def _start(content: str) -> chat_pb.ChatRequest:
    return chat_pb.ChatRequest(
        start=chat_pb.ChatStart(
            messages=[types_pb2.Message(role=types_pb2.ROLE_USER, content=content)],
            sampling=types_pb2.SamplingParams(max_gen_len=2, temperature=0.0),
        )
    )


def test_turns_per_conversation_are_limited(rstack: ReliabilityStack, tmp_path: Path) -> None:
    _require_flag("--max-turns", "the number of turns on one Chat stream")
    gateway = start_extra_gateway(rstack, tmp_path, "--max-turns", "3")
    try:
        with grpc.insecure_channel(gateway.target) as channel:
            requests = [_start("Hi.")] + [
                chat_pb.ChatRequest(turn=chat_pb.ChatTurn(content="Hi.")) for _ in range(3)
            ]
            pending = iter(requests)
            stub = chat_grpc.ChatServiceStub(channel)
            # One turn at a time: the next is sent only after the previous reply's Done.
            outbox: queue.Queue[chat_pb.ChatRequest | None] = queue.Queue()
            outbox.put(next(pending))
            call = stub.Chat(iter(outbox.get, None), metadata=rstack.stack.metadata, timeout=60)
            dones = 0
            with pytest.raises(grpc.RpcError) as info:
                for event in call:
                    if event.HasField("done"):
                        dones += 1
                        outbox.put(next(pending, None))
        assert dones == 3
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "turn" in (info.value.details() or "")
    finally:
        gateway.terminate()


@pytest.mark.parametrize(
    ("flag", "what"),
    [
        ("--stream-idle-timeout-s", "how long a Chat stream may wait for the client's next turn"),
        ("--max-stream-duration-s", "how long one Chat stream may stay open"),
    ],
)
def test_streams_without_a_client_deadline_end_in_bounded_time(
    rstack: ReliabilityStack, tmp_path: Path, flag: str, what: str
) -> None:
    _require_flag(flag, what)
    gateway = start_extra_gateway(rstack, tmp_path, flag, "2")
    try:
        with grpc.insecure_channel(gateway.target) as channel:
            outbox: queue.Queue[chat_pb.ChatRequest | None] = queue.Queue()
            outbox.put(_start("Hi."))
            # No client deadline, never half-closed: only the server's limit can end it.
            call = chat_grpc.ChatServiceStub(channel).Chat(
                iter(outbox.get, None), metadata=rstack.stack.metadata
            )
            started = time.monotonic()
            with pytest.raises(grpc.RpcError) as info:
                for _ in call:
                    assert time.monotonic() - started < 30, "the stream outlived its limit"
            elapsed = time.monotonic() - started
            outbox.put(None)
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED, info.value
        assert 1.5 <= elapsed <= 15, elapsed
        assert health_status(gateway.target) == "SERVING"
    finally:
        gateway.terminate()
