"""The reply state machine on its own: fed responses, errors and timeouts, no network, a fake clock."""

from __future__ import annotations

import random

import grpc
import pytest

from llamagate.client import (
    NO_RETRY,
    Accepted,
    DeadlineExceededError,
    Done,
    FinishReason,
    Message,
    RateLimitedError,
    RetryPolicy,
    Role,
    Sampling,
    TextChunk,
    UnauthenticatedError,
    UnavailableError,
)
from llamagate.client.conversation import Conversation
from llamagate.client.reply_machine import ChatTurn, CompletionMachine, Retrying, SessionMachine, Step
from llamagate.v1 import chat_service_pb2 as chat_pb
from llamagate.v1 import types_pb2

POLICY = RetryPolicy(max_attempts=3, initial_backoff_s=0.1, max_backoff_s=1.0)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def accepted(request_id: str) -> chat_pb.ChatResponse:
    return chat_pb.ChatResponse(accepted=chat_pb.Accepted(request_id=request_id))


def delta(text: str) -> chat_pb.ChatResponse:
    return chat_pb.ChatResponse(delta=chat_pb.TextDelta(text=text, token_ids=[7]))


def done(finish: types_pb2.FinishReason.ValueType = types_pb2.FINISH_REASON_STOP) -> chat_pb.ChatResponse:
    return chat_pb.ChatResponse(
        done=chat_pb.Done(finish_reason=finish, request_id="r1", usage=types_pb2.Usage(prompt_tokens=4))
    )


def rpc_error(code: grpc.StatusCode, details: str) -> grpc.RpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details=details)


def turn_of(
    conversation: Conversation | None = None,
    *,
    policy: RetryPolicy = POLICY,
    timeout_s: float | None = None,
    clock: FakeClock | None = None,
) -> ChatTurn:
    conversation = conversation or Conversation()
    retrying = Retrying(policy, random.Random(0), clock or FakeClock())
    return ChatTurn(conversation, "hello", conversation.sampling, retrying, timeout_s)


def test_a_turn_yields_its_events_and_its_done_enters_the_conversation() -> None:
    conversation = Conversation()
    turn = turn_of(conversation)
    steps = [turn.on_response(r) for r in (accepted("r1"), delta("Hi"), delta(" there"), done())]
    assert [type(s.event) for s in steps] == [Accepted, TextChunk, TextChunk, Done]
    assert [s.final for s in steps] == [False, False, False, True]
    assert not any(s.abandon or s.error or s.retry_in_s for s in steps)
    assert turn.finished and turn.error is None
    assert turn.state.text == "Hi there" and turn.state.request_id == "r1"
    assert conversation.history == [Message(Role.USER, "hello"), Message(Role.ASSISTANT, "Hi there")]


def test_an_event_kind_it_does_not_know_is_skipped() -> None:
    turn = turn_of()
    assert turn.on_response(chat_pb.ChatResponse()) == Step()
    assert not turn.finished and turn.state.chunks == []


def test_a_turn_opens_a_stream_or_goes_on_the_open_one() -> None:
    conversation = Conversation("sys", Sampling(temperature=0.5), [Message(Role.USER, "a")])
    turn = turn_of(conversation)
    fresh = turn.submission(None)
    assert fresh.new_stream and fresh.stream_sampling == Sampling(temperature=0.5)
    assert [m.content for m in fresh.request.start.messages] == ["a", "hello"]
    assert fresh.request.start.system_prompt == "sys"
    same = turn.submission(Sampling(temperature=0.5))
    assert not same.new_stream and same.request.turn.content == "hello"
    assert not same.request.turn.HasField("sampling")
    other = turn.submission(Sampling(temperature=0.9))
    assert other.request.turn.sampling.temperature == 0.5
    assert other.stream_sampling == Sampling(temperature=0.9)


def test_unavailable_before_any_text_is_retried_after_a_jittered_backoff() -> None:
    turn = turn_of()
    turn.on_response(accepted("lost"))
    step = turn.on_error(rpc_error(grpc.StatusCode.UNAVAILABLE, "restarting"))
    expected = POLICY.backoff_s(1, random.Random(0))
    assert step == Step(abandon=True, retry_in_s=expected)
    assert turn.attempt == 2 and not turn.finished
    assert turn.state.request_id == ""  # the next attempt starts from nothing
    # The retry goes on a new stream carrying the turn again.
    assert turn.submission(None).request.start.messages[-1].content == "hello"


def test_a_reply_that_streamed_text_fails_instead_of_retrying() -> None:
    turn = turn_of()
    turn.on_response(delta("Partial"))
    step = turn.on_error(rpc_error(grpc.StatusCode.UNAVAILABLE, "rank died"))
    assert step.abandon and step.final and step.retry_in_s is None
    assert isinstance(step.error, UnavailableError) and "rank died" in step.error.message
    assert turn.error is step.error and turn.finished


def test_only_retryable_codes_are_retried_and_only_up_to_max_attempts() -> None:
    refused = turn_of().on_error(rpc_error(grpc.StatusCode.UNAUTHENTICATED, "invalid API key"))
    assert isinstance(refused.error, UnauthenticatedError)

    turn = turn_of()
    steps = [turn.on_error(UnavailableError("down")) for _ in range(POLICY.max_attempts)]
    assert [s.retry_in_s is not None for s in steps] == [True, True, False]
    assert isinstance(steps[-1].error, UnavailableError) and turn.attempt == POLICY.max_attempts


def test_a_call_grpc_cancelled_by_itself_counts_as_unavailable() -> None:
    step = turn_of().on_error(rpc_error(grpc.StatusCode.CANCELLED, "CANCELLED"))
    assert step.retry_in_s is not None


def test_the_server_ending_the_stream_before_done_is_unavailable() -> None:
    turn = turn_of(policy=NO_RETRY)
    turn.on_response(accepted("r"))
    step = turn.on_response(None)
    assert isinstance(step.error, UnavailableError)
    assert "ended the chat stream before the reply was done" in step.error.message


def test_a_failure_after_cancel_ends_the_reply_as_cancelled_without_a_history_entry() -> None:
    conversation = Conversation()
    turn = turn_of(conversation)
    turn.on_response(delta("one "))
    assert turn.request_cancel() and not turn.request_cancel()
    step = turn.on_error(UnavailableError("stream gone"))
    assert step.abandon and step.final and step.error is None
    assert isinstance(step.event, Done) and step.event.finish_reason is FinishReason.CANCELLED
    assert turn.state.text == "one " and conversation.history == []
    assert not turn.request_cancel()  # finished: nothing left to cancel


def test_a_timeout_is_a_deadline_error() -> None:
    turn = turn_of(timeout_s=1.0)
    step = turn.on_timeout()
    assert isinstance(step.error, DeadlineExceededError) and step.abandon
    assert step.error.message == "the reply did not finish within its timeout"


def test_a_backoff_longer_than_the_time_left_ends_the_reply_with_a_deadline() -> None:
    clock = FakeClock()
    policy = RetryPolicy(max_attempts=5, initial_backoff_s=0.5, max_backoff_s=5.0)
    turn = turn_of(policy=policy, timeout_s=10.0, clock=clock)
    assert turn.remaining_s() == 10.0
    clock.now += 9.9
    limited = RateLimitedError("slow down", retry_after=2.0)
    step = turn.on_error(limited)  # RESOURCE_EXHAUSTED is not retryable by this policy
    assert step.error is limited

    retrying = RetryPolicy(max_attempts=5, retryable_codes=frozenset({grpc.StatusCode.RESOURCE_EXHAUSTED}))
    turn = turn_of(policy=retrying, timeout_s=10.0, clock=clock)
    first = turn.on_error(limited)
    assert first.retry_in_s is not None and first.retry_in_s >= 2.0  # RetryInfo is a lower bound
    clock.now += 9.0
    late = turn.on_error(limited)
    assert isinstance(late.error, DeadlineExceededError) and late.error.__cause__ is limited
    assert "timeout passed while retrying after" in late.error.message


def test_a_completion_decodes_echo_and_names_itself_in_errors() -> None:
    request = chat_pb.CompleteRequest(prompt="The sky")
    machine = CompletionMachine(request, Retrying(NO_RETRY, random.Random(0), FakeClock()), None)
    echoed = machine.on_response(chat_pb.CompleteResponse(event=delta("The sky"), echo=True))
    assert echoed.event == TextChunk("The sky", (7,), echo=True)
    machine.on_response(chat_pb.CompleteResponse(event=delta(" is blue")))
    assert machine.state.echo_text == "The sky" and machine.state.text == " is blue"
    ended = machine.on_response(None)
    assert ended.error is not None and "before the completion was done" in ended.error.message
    assert machine.remaining_s() is None


def test_a_session_has_one_streaming_turn_at_a_time() -> None:
    conversation = Conversation(sampling=Sampling(temperature=0.2))
    session = SessionMachine(conversation, Retrying(NO_RETRY, random.Random(0), FakeClock()), 30.0)
    first = session.next_turn("one", Sampling(max_gen_len=4), None)
    assert first.sampling == Sampling(temperature=0.2, max_gen_len=4)
    assert first.remaining_s() == 30.0 and session.streaming
    with pytest.raises(RuntimeError, match="still streaming"):
        session.next_turn("two", None, None)
    first.on_response(done())
    second = session.next_turn("two", None, 5.0)
    assert second.remaining_s() == 5.0 and second.sampling == Sampling(temperature=0.2)
    second.on_error(UnavailableError("down"))  # a failed turn lets the next one go
    assert not session.streaming
    assert [m.content for m in session.history] == ["one", ""]
    session.reset()
    assert session.history == ()
