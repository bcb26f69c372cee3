"""The SDK's mechanics against a scripted in-test ChatService: retries, resume, deadlines, cancel, auth."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import grpc
import pytest

from llamagate.client import (
    AsyncChatClient,
    ChatClient,
    DeadlineExceededError,
    FinishReason,
    RetryPolicy,
    Sampling,
    TextChunk,
    UnavailableError,
)
from llamagate.v1 import types_pb2
from services.common.errors import Unavailable
from tests.support.fake_gateway import ChatCall, FakeChatService, accepted, delta, done, serve_in_thread

FAST_RETRY = RetryPolicy(max_attempts=3, initial_backoff_s=0.01, max_backoff_s=0.05)


@pytest.fixture
def service() -> FakeChatService:
    return FakeChatService()


@pytest.fixture
def target(service: FakeChatService) -> Iterator[str]:
    with serve_in_thread(service) as address:
        yield address


async def echo_turns(call: ChatCall) -> None:
    """Answer every turn with "re: <content>"; the first turn is the last message of the start."""
    while (request := await call.next_request()) is not None:
        if request.HasField("start"):
            content = request.start.messages[-1].content
        elif request.HasField("turn"):
            content = request.turn.content
        else:
            continue
        await call.reply(f"{call.index}-{len(call.received)}", "re: ", content)


def test_turns_share_one_stream_and_send_the_api_key(service: FakeChatService, target: str) -> None:
    service.chat_script = echo_turns
    with ChatClient(target, api_key="secret-key") as client:
        session = client.chat(system_prompt="Be brief.")
        first = session.send("one")
        chunks = [e.text for e in first if isinstance(e, TextChunk)]
        assert chunks == ["re: ", "one"]
        assert first.text == "re: one" and first.finish_reason is FinishReason.STOP
        assert first.request_id == "0-1" and first.usage.prompt_tokens == 3
        assert session.send("two").text == "re: two"
    assert len(service.chat_calls) == 1
    assert service.metadata[0]["authorization"] == "Bearer secret-key"
    start, turn = service.chat_calls[0].received
    assert start.start.system_prompt == "Be brief." and turn.turn.content == "two"


def test_unavailable_before_any_text_is_retried_on_a_new_stream(
    service: FakeChatService, target: str
) -> None:
    async def flaky(call: ChatCall) -> None:
        if call.index == 0:
            await call.next_request()
            await call.send(accepted("lost"))  # accepted but no text yet: still safe to retry
            raise Unavailable("inference is restarting")
        await echo_turns(call)

    service.chat_script = flaky
    with ChatClient(target, retry=FAST_RETRY) as client:
        reply = client.chat().send("hello")
        assert reply.text == "re: hello" and reply.request_id == "1-1"
    assert len(service.chat_calls) == 2
    assert service.chat_calls[1].received[0].start.messages[-1].content == "hello"


async def _dropped_as_grpc_does_at_shutdown(call: ChatCall) -> None:
    # grpc-core cancels a call that reaches a server as it shuts down: status CANCELLED, details
    # "CANCELLED", though the client cancelled nothing.
    await call.context.abort(grpc.StatusCode.CANCELLED, "CANCELLED")


def test_a_call_the_server_dropped_as_cancelled_is_retried_like_unavailable(
    service: FakeChatService, target: str
) -> None:
    async def dropped_once(call: ChatCall) -> None:
        if call.index == 0:
            await call.next_request()
            await _dropped_as_grpc_does_at_shutdown(call)
        await echo_turns(call)

    service.chat_script = dropped_once
    with ChatClient(target, retry=FAST_RETRY) as client:
        assert client.chat().send("hello").text == "re: hello"
    assert len(service.chat_calls) == 2


async def test_async_client_reports_repeated_server_drops_as_unavailable(
    service: FakeChatService, target: str
) -> None:
    async def always_dropped(call: ChatCall) -> None:
        await call.next_request()
        await _dropped_as_grpc_does_at_shutdown(call)

    service.chat_script = always_dropped
    async with AsyncChatClient(target, retry=FAST_RETRY) as client:
        reply = await client.chat().send("hello")
        with pytest.raises(UnavailableError, match="the gateway dropped the call"):
            await reply.wait()
    assert len(service.chat_calls) == FAST_RETRY.max_attempts


def test_a_reply_that_streamed_text_fails_instead_of_retrying(service: FakeChatService, target: str) -> None:
    async def breaks_mid_reply(call: ChatCall) -> None:
        await call.next_request()
        await call.send(accepted("r"))
        await call.send(delta("Partial"))
        raise Unavailable("inference rank died")

    service.chat_script = breaks_mid_reply
    with ChatClient(target, retry=FAST_RETRY) as client:
        reply = client.chat().send("hello")
        seen = []
        with pytest.raises(UnavailableError, match="inference rank died"):
            for event in reply:
                seen.append(event)
        assert TextChunk("Partial", (7,)) in seen
    assert len(service.chat_calls) == 1


def test_a_broken_stream_between_turns_resumes_with_the_history(
    service: FakeChatService, target: str
) -> None:
    async def dies_after_first_reply(call: ChatCall) -> None:
        if call.index == 0:
            await call.next_request()
            await call.reply("r0", "first answer")
            raise Unavailable("gateway shutting down")
        await echo_turns(call)

    service.chat_script = dies_after_first_reply
    with ChatClient(target, retry=FAST_RETRY) as client:
        session = client.chat(system_prompt="sys", sampling=Sampling(temperature=0.0))
        assert session.send("first").text == "first answer"
        assert session.send("second").text == "re: second"
    resumed = service.chat_calls[1].received[0].start
    assert resumed.system_prompt == "sys" and resumed.sampling.temperature == 0.0
    assert [(m.role, m.content) for m in resumed.messages] == [
        (types_pb2.ROLE_USER, "first"),
        (types_pb2.ROLE_ASSISTANT, "first answer"),
        (types_pb2.ROLE_USER, "second"),
    ]


def test_retries_give_up_after_max_attempts(service: FakeChatService, target: str) -> None:
    async def always_down(call: ChatCall) -> None:
        await call.next_request()
        raise Unavailable("safety is down")

    service.chat_script = always_down
    with ChatClient(target, retry=FAST_RETRY) as client, pytest.raises(UnavailableError):
        client.chat().send("hello").wait()
    assert len(service.chat_calls) == FAST_RETRY.max_attempts


def test_a_reply_deadline_ends_a_stuck_reply_and_the_session_goes_on(
    service: FakeChatService, target: str
) -> None:
    async def stuck_first(call: ChatCall) -> None:
        if call.index == 0:
            await call.next_request()
            await call.send(accepted("r"))
            await asyncio.sleep(30)
        await echo_turns(call)

    service.chat_script = stuck_first
    with ChatClient(target, retry=FAST_RETRY) as client:
        session = client.chat()
        started = time.monotonic()
        with pytest.raises(DeadlineExceededError):
            session.send("hello", timeout=0.5).wait()
        assert 0.4 < time.monotonic() - started < 5
        assert session.send("again").text == "re: again"
        assert session.history[0].content == "again"


def test_cancel_ends_the_reply_and_keeps_the_stream(service: FakeChatService, target: str) -> None:
    async def until_cancelled(call: ChatCall) -> None:
        await call.next_request()
        await call.send(accepted("r"))
        await call.send(delta("one "))
        request = await call.next_request()
        assert request is not None and request.HasField("cancel")
        await call.send(done("r", types_pb2.FINISH_REASON_CANCELLED))
        await echo_turns(call)

    service.chat_script = until_cancelled
    with ChatClient(target) as client:
        session = client.chat()
        reply = session.send("count")
        for event in reply:
            if isinstance(event, TextChunk):
                reply.cancel()
        assert reply.finish_reason is FinishReason.CANCELLED and reply.text == "one "
        assert session.send("next").text == "re: next"
    assert len(service.chat_calls) == 1


def test_send_refuses_while_a_reply_streams(service: FakeChatService, target: str) -> None:
    service.chat_script = echo_turns
    with ChatClient(target) as client:
        session = client.chat()
        session.send("one")
        with pytest.raises(RuntimeError, match="still streaming"):
            session.send("two")


def test_completion_retries_before_text_and_reports_echo(service: FakeChatService, target: str) -> None:
    async def complete(request: object, call: object) -> None:
        assert hasattr(call, "index") and hasattr(call, "send")
        if call.index == 0:
            raise Unavailable("warming up")
        await call.send(accepted("c1"))
        await call.send(delta("The sky"), echo=True)
        await call.send(delta(" is blue"))
        await call.send(done("c1", types_pb2.FINISH_REASON_LENGTH))

    service.complete_script = complete
    with ChatClient(target, retry=FAST_RETRY, api_key="k") as client:
        completion = client.complete("The sky", echo=True, sampling=Sampling(max_gen_len=2))
        assert list(completion.text_chunks()) == ["The sky", " is blue"]
        assert completion.text == " is blue" and completion.echo_text == "The sky"
        assert completion.finish_reason is FinishReason.LENGTH
    assert service.complete_calls == 2


async def test_async_client_mirrors_retry_resume_and_cancel(service: FakeChatService, target: str) -> None:
    async def script(call: ChatCall) -> None:
        if call.index == 0:
            await call.next_request()
            raise Unavailable("restarting")
        if call.index == 1:
            await call.next_request()
            await call.reply("r1", "first")
            await call.next_request()
            await call.send(accepted("r2"))
            await call.send(delta("x"))
            request = await call.next_request()
            assert request is not None and request.HasField("cancel")
            await call.send(done("r2", types_pb2.FINISH_REASON_CANCELLED))
            return
        await echo_turns(call)

    service.chat_script = script
    async with AsyncChatClient(target, retry=FAST_RETRY, api_key="k") as client:
        session = client.chat()
        first = await session.send("one")
        with pytest.raises(RuntimeError, match="still streaming"):
            _ = first.text
        assert (await first.wait()).text == "first"
        second = await session.send("two")
        async for chunk in second.text_chunks():
            assert chunk == "x"
            await second.cancel()
        assert second.finish_reason is FinishReason.CANCELLED
        third = await (await session.send("three")).wait()
        assert third.text == "re: three"
        assert [m.content for m in session.history] == ["one", "first", "two", "x", "three", "re: three"]
        await session.close()
    assert len(service.chat_calls) == 3
    assert service.metadata[0]["authorization"] == "Bearer k"


async def test_async_deadline(service: FakeChatService, target: str) -> None:
    async def stuck(call: ChatCall) -> None:
        await call.next_request()
        await asyncio.sleep(30)

    service.chat_script = stuck
    async with AsyncChatClient(target) as client:
        reply = await client.chat().send("hello", timeout=0.3)
        with pytest.raises(DeadlineExceededError):
            await reply.wait()


@pytest.mark.parametrize("pause_s", [0.0, 0.2])
def test_a_stream_the_server_closed_between_turns_is_replaced(
    service: FakeChatService, target: str, pause_s: float
) -> None:
    """The server may end a stream after a reply (e.g. draining); the next turn goes on a new one."""

    async def one_reply_per_stream(call: ChatCall) -> None:
        await call.next_request()
        await call.reply(f"r{call.index}", f"answer {call.index}")

    service.chat_script = one_reply_per_stream
    with ChatClient(target, retry=FAST_RETRY) as client:
        session = client.chat()
        assert session.send("one").text == "answer 0"
        time.sleep(pause_s)  # 0: the close races the next turn; 0.2: the stream is already over
        assert session.send("two").text == "answer 1"
    assert [m.content for m in service.chat_calls[1].received[0].start.messages] == ["one", "answer 0", "two"]


async def _echo_then_stall(request: object, call: object) -> None:
    """The first Complete call fails before any text; the second echoes the prompt, then stalls."""
    assert hasattr(call, "index") and hasattr(call, "send")
    if call.index == 0:
        raise Unavailable("warming up")
    await call.send(accepted("c1"))
    await call.send(delta("The sky"), echo=True)
    await asyncio.sleep(30)


def test_cancelling_a_completion_ends_it_as_cancelled(service: FakeChatService, target: str) -> None:
    service.complete_script = _echo_then_stall
    with ChatClient(target, retry=FAST_RETRY) as client:
        completion = client.complete("The sky", echo=True)
        for event in completion:
            if isinstance(event, TextChunk):
                completion.cancel()
        assert completion.finish_reason is FinishReason.CANCELLED
        assert completion.echo_text == "The sky" and completion.text == ""
    assert service.complete_calls == 2


async def test_async_completion_retries_and_cancels(service: FakeChatService, target: str) -> None:
    service.complete_script = _echo_then_stall
    async with AsyncChatClient(target, retry=FAST_RETRY) as client:
        completion = client.complete("The sky", echo=True)
        async for event in completion:
            if isinstance(event, TextChunk):
                completion.cancel()
        assert completion.finish_reason is FinishReason.CANCELLED
        assert completion.echo_text == "The sky" and completion.text == ""
    assert service.complete_calls == 2
