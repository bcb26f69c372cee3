"""Hostile input: fuzzed and malformed requests to every service end with a status from the
allow-list before their deadline, and leave every service healthy."""

from __future__ import annotations

import queue
from collections.abc import Iterable, Iterator
from typing import Any

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from llamagate.v1 import chat_service_pb2 as chat_pb
from llamagate.v1 import chat_service_pb2_grpc as chat_grpc
from llamagate.v1 import inference_service_pb2_grpc as inf_grpc
from llamagate.v1 import safety_service_pb2 as safety_pb
from llamagate.v1 import safety_service_pb2_grpc as safety_grpc
from llamagate.v1 import types_pb2
from tests.reliability.hostile import (
    ALLOWED,
    FUZZ,
    chat_requests,
    check_requests,
    check_stream_requests,
    complete_requests,
    generate_requests,
    raw_chat_requests,
    raw_unary_requests,
    tokenize_requests,
)
from tests.reliability.probes import health_status
from tests.support.reliability import ReliabilityStack

pytestmark = pytest.mark.slow

# Every fuzzed call has this deadline; a call that has not ended by then is a hang (a failure).
CALL_DEADLINE_S = 20.0


def _status_of_stream(responses: Iterable[Any]) -> grpc.StatusCode:
    try:
        for _ in responses:
            pass
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


def _status_of_unary(call: Any, request: Any, **kwargs: Any) -> grpc.StatusCode:
    try:
        call(request, timeout=CALL_DEADLINE_S, **kwargs)
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


def _assert_allowed(code: grpc.StatusCode, what: object) -> None:
    assert code != grpc.StatusCode.DEADLINE_EXCEEDED, f"no answer within {CALL_DEADLINE_S}s (a hang): {what}"
    assert code in ALLOWED, f"{code.name} for {what}"


@pytest.fixture(scope="module")
def channels(rstack: ReliabilityStack) -> Iterator[dict[str, grpc.Channel]]:
    stack = rstack.stack
    opened = {
        "gateway": grpc.insecure_channel(stack.gateway_target),
        "inference": grpc.insecure_channel(stack.inference_target),
        "safety": grpc.insecure_channel(stack.safety_target),
    }
    yield opened
    for channel in opened.values():
        channel.close()


@FUZZ
@given(requests=st.lists(chat_requests, max_size=4))
def test_fuzzed_chat_streams(rstack: ReliabilityStack, channels: dict[str, grpc.Channel], requests) -> None:  # type: ignore[no-untyped-def]
    stub = chat_grpc.ChatServiceStub(channels["gateway"])
    call = stub.Chat(iter(requests), metadata=rstack.stack.metadata, timeout=CALL_DEADLINE_S)
    _assert_allowed(_status_of_stream(call), requests)


@FUZZ
@given(request=complete_requests)
def test_fuzzed_complete(rstack: ReliabilityStack, channels: dict[str, grpc.Channel], request) -> None:  # type: ignore[no-untyped-def]
    stub = chat_grpc.ChatServiceStub(channels["gateway"])
    call = stub.Complete(request, metadata=rstack.stack.metadata, timeout=CALL_DEADLINE_S)
    _assert_allowed(_status_of_stream(call), request)


@FUZZ
@given(payload=raw_chat_requests())
def test_raw_bytes_with_invalid_utf8(
    rstack: ReliabilityStack, channels: dict[str, grpc.Channel], payload: bytes
) -> None:
    # Serialized by hand: the client library would refuse to build these messages.
    chat = channels["gateway"].stream_stream(
        "/llamagate.v1.ChatService/Chat",
        request_serializer=lambda raw: raw,
        response_deserializer=chat_pb.ChatResponse.FromString,
    )
    code = _status_of_stream(chat(iter([payload]), metadata=rstack.stack.metadata, timeout=CALL_DEADLINE_S))
    _assert_allowed(code, payload)


@FUZZ
@given(call=raw_unary_requests())
def test_raw_bytes_to_the_backends(channels: dict[str, grpc.Channel], call: tuple[str, bytes]) -> None:
    method, payload = call
    channel = channels["inference" if "Inference" in method else "safety"]
    unary = channel.unary_unary(
        method, request_serializer=lambda raw: raw, response_deserializer=lambda raw: raw
    )
    _assert_allowed(_status_of_unary(unary, payload), call)


@FUZZ
@given(requests=st.lists(generate_requests, max_size=3))
def test_fuzzed_inference_generate(channels: dict[str, grpc.Channel], requests) -> None:  # type: ignore[no-untyped-def]
    stub = inf_grpc.InferenceServiceStub(channels["inference"])
    _assert_allowed(_status_of_stream(stub.Generate(iter(requests), timeout=CALL_DEADLINE_S)), requests)


@FUZZ
@given(request=tokenize_requests)
def test_fuzzed_inference_tokenize(channels: dict[str, grpc.Channel], request) -> None:  # type: ignore[no-untyped-def]
    _assert_allowed(
        _status_of_unary(inf_grpc.InferenceServiceStub(channels["inference"]).Tokenize, request), request
    )


@FUZZ
@given(request=check_requests)
def test_fuzzed_safety_check(channels: dict[str, grpc.Channel], request) -> None:  # type: ignore[no-untyped-def]
    _assert_allowed(
        _status_of_unary(safety_grpc.SafetyServiceStub(channels["safety"]).Check, request), request
    )


@FUZZ
@given(requests=check_stream_requests)
def test_fuzzed_safety_check_stream(channels: dict[str, grpc.Channel], requests) -> None:  # type: ignore[no-untyped-def]
    stub = safety_grpc.SafetyServiceStub(channels["safety"])
    _assert_allowed(_status_of_stream(stub.CheckStream(iter(requests), timeout=CALL_DEADLINE_S)), requests)


def _start(content: str, **sampling: Any) -> chat_pb.ChatRequest:
    return chat_pb.ChatRequest(
        start=chat_pb.ChatStart(
            messages=[types_pb2.Message(role=types_pb2.ROLE_USER, content=content)],
            sampling=types_pb2.SamplingParams(**sampling),
        )
    )


def _chat_error(rstack: ReliabilityStack, requests: list[chat_pb.ChatRequest]) -> grpc.RpcError:
    with rstack.stack.gateway_channel() as channel:
        call = chat_grpc.ChatServiceStub(channel).Chat(
            iter(requests), metadata=rstack.stack.metadata, timeout=CALL_DEADLINE_S
        )
        with pytest.raises(grpc.RpcError) as info:
            for _ in call:
                pass
    return info.value


def test_message_over_the_size_limit_is_resource_exhausted(rstack: ReliabilityStack) -> None:
    error = _chat_error(rstack, [_start("x" * (4 * 1024 * 1024 + 1))])
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error.details()


def test_prompt_over_the_context_is_invalid_argument_naming_the_limit(rstack: ReliabilityStack) -> None:
    error = _chat_error(rstack, [_start("token " * 3000, max_gen_len=4)])
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "tokens" in (error.details() or ""), error.details()


def test_huge_dialog_of_many_messages_is_refused(rstack: ReliabilityStack) -> None:
    roles = [types_pb2.ROLE_USER, types_pb2.ROLE_ASSISTANT]
    dialog = [types_pb2.Message(role=roles[i % 2], content=f"m{i}") for i in range(5001)]
    request = chat_pb.ChatRequest(
        start=chat_pb.ChatStart(messages=dialog, sampling=types_pb2.SamplingParams(max_gen_len=4))
    )
    assert _chat_error(rstack, [request]).code() == grpc.StatusCode.INVALID_ARGUMENT


def test_deeply_multi_turn_conversation_ends_at_the_context_limit(rstack: ReliabilityStack) -> None:
    """The kept dialog grows every turn; the turn that no longer fits is refused with the numbers."""
    outbox: queue.Queue[chat_pb.ChatRequest | None] = queue.Queue()
    words = " ".join(f"word{i}" for i in range(30))
    outbox.put(_start(words, max_gen_len=2))
    replies = 0
    with rstack.stack.gateway_channel() as channel:
        call = chat_grpc.ChatServiceStub(channel).Chat(
            iter(outbox.get, None), metadata=rstack.stack.metadata, timeout=120
        )
        with pytest.raises(grpc.RpcError) as info:
            for event in call:
                if event.HasField("done"):
                    replies += 1
                    assert replies < 100, "the conversation never hit the context limit"
                    outbox.put(chat_pb.ChatRequest(turn=chat_pb.ChatTurn(content=words)))
        outbox.put(None)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value
    assert "tokens" in (info.value.details() or "")
    assert replies >= 2


def test_services_are_healthy_after_the_fuzzing(rstack: ReliabilityStack) -> None:
    stack = rstack.stack
    for target in (stack.gateway_target, stack.inference_target, stack.safety_target):
        assert health_status(target) == "SERVING", target
    with stack.gateway_channel() as channel:
        call = chat_grpc.ChatServiceStub(channel).Chat(
            iter([_start("Tell me a story about a garden.", max_gen_len=4)]),
            metadata=stack.metadata,
            timeout=CALL_DEADLINE_S,
        )
        events = list(call)
    assert events[-1].HasField("done"), events[-1:]
    # The safety service answers a plain request too.
    check = safety_pb.CheckRequest(
        items=[
            safety_pb.CheckItem(
                dialog=types_pb2.Dialog(messages=[types_pb2.Message(role=types_pb2.ROLE_USER, content="hi")]),
                direction=types_pb2.DIRECTION_INPUT,
            )
        ]
    )
    with grpc.insecure_channel(stack.safety_target) as channel:
        assert len(safety_grpc.SafetyServiceStub(channel).Check(check, timeout=10).verdicts) == 1
