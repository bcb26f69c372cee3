"""On CPU, against the real `python -m services.inference` process on loopback (demo model):
concurrent streams agree with sequential greedy runs, cancellation frees the KV cache, bad requests get
INVALID_ARGUMENT naming the field, and echo / logprobs / stop sequences behave as the proto documents."""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from llamagate.v1 import inference_service_pb2 as pb
from llamagate.v1 import inference_service_pb2_grpc as pb_grpc
from llamagate.v1 import types_pb2
from services.inference.model.tokenizer import Tokenizer
from tests.support.inference_service import (
    MAX_SEQ_LEN,
    SERVICE,
    DemoModel,
    Outbox,
    channel,
    generate,
    generate_open,
    model_info,
    start_request,
    wait_all_blocks_free,
)
from tests.support.processes import ServiceProcess

pytestmark = pytest.mark.slow

PROMPTS = [f"request {i}: the quick brown fox number {i * 7}" for i in range(32)]
LONG = 480  # tokens of a stream that is still running when the test acts on it (~1 s on CPU)
TOO_LONG = "one two three four five six seven eight nine ten " * 80


async def test_health_serving_and_reflection_lists_the_service(mp1: ServiceProcess) -> None:
    async with channel(mp1) as ch:
        health = health_pb2_grpc.HealthStub(ch)
        for name in ("", SERVICE):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(ch)
        answers = reflection.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        )
        names = [s.name async for a in answers for s in a.list_services_response.service]
        assert SERVICE in names
        info = await model_info(pb_grpc.InferenceServiceStub(ch))
        assert info.model_parallel_size == 1 and info.max_seq_len == MAX_SEQ_LEN
        assert info.kv_blocks_free == info.kv_blocks_total > 0


async def test_32_concurrent_streams_equal_sequential_greedy_runs(mp1: ServiceProcess) -> None:
    async with channel(mp1) as ch:
        stub = pb_grpc.InferenceServiceStub(ch)
        sequential = [await generate(stub, start_request(p, n=10)) for p in PROMPTS]
        concurrent = await asyncio.gather(*(generate_open(stub, start_request(p, n=10)) for p in PROMPTS))
        for alone, together in zip(sequential, concurrent, strict=True):
            assert alone.done is not None and together.done is not None
            assert together.tokens == alone.tokens
            assert together.text == alone.text
            assert together.done.finish_reason == alone.done.finish_reason
            # Only the prefix cache's share differs: the concurrent run finds the sequential one's blocks.
            assert together.done.usage.prompt_tokens == alone.done.usage.prompt_tokens
            assert together.done.usage.completion_tokens == alone.done.usage.completion_tokens
        # Distinct prompts: a server that mixed up streams would not give 32 equal pairs by chance.
        assert len({tuple(r.tokens) for r in sequential}) > 1
        await wait_all_blocks_free(stub)


async def test_a_full_kv_cache_preempts_and_recomputes_without_changing_tokens(mp1: ServiceProcess) -> None:
    requests = [
        start_request(f"stream {i} of eight", 250, temperature=1.0, seed=i, ignore_eos=True) for i in range(8)
    ]
    async with channel(mp1) as ch:
        stub = pb_grpc.InferenceServiceStub(ch)
        info = await model_info(stub)
        alone = [await generate(stub, r) for r in requests]
        together = await asyncio.gather(*(generate(stub, r) for r in requests))
        await wait_all_blocks_free(stub)
    # Together they need more blocks than the cache has: some were preempted and recomputed.
    assert sum(len(r.tokens) + 16 for r in alone) > info.kv_blocks_total * 16
    assert [r.tokens for r in together] == [r.tokens for r in alone]
    assert [r.done for r in together] == [r.done for r in alone]


async def _hold_stream(
    stub: pb_grpc.InferenceServiceStub, request_id: str
) -> tuple[Outbox, grpc.aio.StreamStreamCall]:
    """A long stream that has produced its first token and still holds KV blocks."""
    outbox = Outbox()
    outbox.send(start_request("tell me a long story", LONG, request_id=request_id, ignore_eos=True))
    call = stub.Generate(outbox.__aiter__(), timeout=60)
    first = await call.read()
    assert first.HasField("started") and first.started.request_id == request_id
    second = await call.read()
    assert second.HasField("delta"), second
    info = await model_info(stub)
    assert info.kv_blocks_free < info.kv_blocks_total, "a running stream must hold KV blocks"
    return outbox, call


async def test_cancel_message_ends_cancelled_and_frees_blocks(mp1: ServiceProcess) -> None:
    async with channel(mp1) as ch:
        stub = pb_grpc.InferenceServiceStub(ch)
        outbox, call = await _hold_stream(stub, "cancel-by-message")
        loop = asyncio.get_running_loop()
        sent = loop.time()
        outbox.send(pb.GenerateRequest(cancel=pb.GenerateCancel()))
        done = None
        generated = 0
        while (message := await call.read()) != grpc.aio.EOF:
            if message.HasField("delta"):
                generated += len(message.delta.token_ids)
            if message.HasField("done"):
                done = message.done
        assert done is not None and done.finish_reason == types_pb2.FINISH_REASON_CANCELLED
        assert loop.time() - sent < 5.0
        assert done.usage.completion_tokens == generated + 1 < LONG  # + the delta _hold_stream read
        assert await call.code() == grpc.StatusCode.OK
        outbox.close()
        await wait_all_blocks_free(stub)


async def test_closing_the_stream_cancels_and_frees_blocks(mp1: ServiceProcess) -> None:
    async with channel(mp1) as ch:
        stub = pb_grpc.InferenceServiceStub(ch)
        _, call = await _hold_stream(stub, "cancel-by-close")
        call.cancel()
        assert await call.code() == grpc.StatusCode.CANCELLED
        assert await wait_all_blocks_free(stub) < 5.0
    # The server ended the request as cancelled, not by running it to its length.
    log = mp1.log_path.read_text(errors="replace")
    assert re.search(r"request_finished request_id=cancel-by-close finish_reason=cancelled", log), log[-2000:]


def _with_unknown_field(request: pb.GenerateRequest, path: str) -> bytes:
    """The request's bytes plus field 15 (varint 1) inside the message at `path` ("" = top level)."""
    unknown = bytes([15 << 3 | 0, 1])
    if not path:
        return request.SerializeToString() + unknown
    start = request.start
    if path == "start":
        inner = start.SerializeToString() + unknown
    else:
        sampling = start.sampling.SerializeToString() + unknown
        rest = pb.GenerateStart()
        rest.CopyFrom(start)
        rest.ClearField("sampling")
        inner = rest.SerializeToString() + bytes([4 << 3 | 2, len(sampling)]) + sampling
    return bytes([1 << 3 | 2, len(inner)]) + inner


@pytest.mark.parametrize(
    ("request_", "fragments"),
    [
        (start_request(TOO_LONG), ["start.input", f"at most {MAX_SEQ_LEN}", "tokens"]),
        (start_request("hi", n=0), ["start.sampling.max_gen_len", "got 0"]),
        (start_request("hi", n=-3), ["start.sampling.max_gen_len", "got -3"]),
        (start_request("hi", temperature=-0.5), ["start.sampling.temperature", "-0.5"]),
        (start_request("hi", top_p=0.0), ["start.sampling.top_p", "(0, 1]"]),
        (start_request("hi", top_p=1.5), ["start.sampling.top_p", "1.5"]),
        (start_request("hi", stop=["x"] * 9), ["start.sampling.stop", "at most 8"]),
        (pb.GenerateRequest(start=pb.GenerateStart()), ["start.input is empty"]),
        (pb.GenerateRequest(cancel=pb.GenerateCancel()), ["first message", "GenerateStart"]),
        (
            start_request(
                dialog=types_pb2.Dialog(messages=[types_pb2.Message(role=types_pb2.ROLE_USER, content="hi")]),
                echo=True,
            ),
            ["start.echo", "text prompts"],
        ),
    ],
    ids=lambda v: "" if isinstance(v, list) else None,
)
async def test_bad_requests_are_invalid_argument_naming_the_field(
    mp1: ServiceProcess, request_: pb.GenerateRequest, fragments: list[str]
) -> None:
    async with channel(mp1) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await generate(pb_grpc.InferenceServiceStub(ch), request_)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    for fragment in fragments:
        assert fragment in (raised.value.details() or ""), raised.value.details()


async def test_prompt_too_long_message_has_both_numbers(mp1: ServiceProcess, demo: DemoModel) -> None:
    n = len(Tokenizer(demo.tokenizer).encode(TOO_LONG, bos=True, eos=False))
    assert n > MAX_SEQ_LEN
    async with channel(mp1) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await generate(pb_grpc.InferenceServiceStub(ch), start_request(TOO_LONG))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = raised.value.details() or ""
    assert f"{n} tokens" in details and f"at most {MAX_SEQ_LEN} tokens" in details, details


@pytest.mark.parametrize(
    ("path", "where"), [("", "#15"), ("start", "start.#15"), ("start.sampling", "start.sampling.#15")]
)
async def test_unknown_fields_are_invalid_argument(mp1: ServiceProcess, path: str, where: str) -> None:
    raw = _with_unknown_field(start_request("hi", n=2, seed=5), path)
    async with channel(mp1) as ch:
        call = ch.stream_stream(
            f"/{SERVICE}/Generate",
            request_serializer=lambda b: b,
            response_deserializer=pb.GenerateResponse.FromString,
        )
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            async for _ in call(iter([raw]), timeout=10):
                pass
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert where in (raised.value.details() or ""), raised.value.details()


async def test_echo_returns_the_prompt_with_logprobs_then_the_same_generation(
    mp1: ServiceProcess, demo: DemoModel
) -> None:
    prompt = "the cat sat on the mat"
    prompt_ids = Tokenizer(demo.tokenizer).encode(prompt, bos=True, eos=False)
    async with channel(mp1) as ch:
        stub = pb_grpc.InferenceServiceStub(ch)
        plain = await generate(stub, start_request(prompt, n=6))
        echoed = await generate(stub, start_request(prompt, n=6, echo=True, logprobs=True))
        echo_only = await generate(stub, start_request(prompt, n=6, echo=True))
    first = echoed.deltas[0]
    assert first.echo and list(first.token_ids) == prompt_ids and first.text == prompt
    # BOS is predicted by nothing: its logprob is 0; every other prompt token is scored.
    assert len(first.logprobs) == len(prompt_ids) and first.logprobs[0] == 0.0
    assert all(lp < 0 and math.isfinite(lp) for lp in first.logprobs[1:])
    assert [d.echo for d in echoed.deltas[1:]] == [False] * (len(echoed.deltas) - 1)
    assert echoed.tokens == plain.tokens and echoed.text == plain.text
    assert len(echoed.logprobs) == len(echoed.tokens)
    assert echo_only.deltas[0].echo and not echo_only.deltas[0].logprobs
    assert echoed.done is not None and plain.done is not None
    # The echo is not counted as completion (and scores its whole prompt, so it reuses no cache).
    assert echoed.done.usage.prompt_tokens == plain.done.usage.prompt_tokens
    assert echoed.done.usage.completion_tokens == plain.done.usage.completion_tokens
    assert echoed.done.usage.cached_prompt_tokens == 0


async def test_logprobs_are_returned_per_token_only_when_asked(mp1: ServiceProcess) -> None:
    async with channel(mp1) as ch:
        stub = pb_grpc.InferenceServiceStub(ch)
        without = await generate(
            stub, start_request("logprob check", 8, temperature=1.5, seed=7, ignore_eos=True)
        )
        sampled = await generate(
            stub, start_request("logprob check", 8, logprobs=True, temperature=1.5, seed=7, ignore_eos=True)
        )
        again = await generate(
            stub, start_request("logprob check", 8, logprobs=True, temperature=1.5, seed=7, ignore_eos=True)
        )
        plain = await generate(stub, start_request("logprob check", n=8))
        greedy = await generate(stub, start_request("logprob check", n=8, logprobs=True))
    assert without.logprobs == [] and plain.logprobs == []
    assert sampled.tokens == without.tokens and greedy.tokens == plain.tokens
    assert len(sampled.tokens) == 8
    for reply in (greedy, sampled):
        assert len(reply.logprobs) == len(reply.tokens)
        assert all(lp <= 0 and math.isfinite(lp) for lp in reply.logprobs)
        assert all(len(d.logprobs) == len(d.token_ids) for d in reply.deltas)
    # A seed makes sampling reproducible, logprobs included.
    assert sampled.tokens == again.tokens and sampled.logprobs == again.logprobs


async def test_stop_sequence_ends_with_stop_and_is_not_returned(mp1: ServiceProcess) -> None:
    prompt = "stop sequences are checked on the text"
    async with channel(mp1) as ch:
        stub = pb_grpc.InferenceServiceStub(ch)
        full = await generate(stub, start_request(prompt, 24, temperature=1.0, seed=11, ignore_eos=True))
        text = full.text
        assert len(text) > 6, text
        # A stop string that first appears in the middle of the text, possibly across tokens.
        begin = len(text) // 2
        stop = text[begin : begin + 3]
        cut = text.find(stop)
        stopped = await generate(
            stub, start_request(prompt, 24, temperature=1.0, seed=11, ignore_eos=True, stop=[stop, "zq!"])
        )
        await wait_all_blocks_free(stub)
    assert stopped.done is not None and stopped.done.finish_reason == types_pb2.FINISH_REASON_STOP
    assert stopped.text == text[:cut]
    assert stop not in stopped.text
    # Tokens are a prefix of the unstopped run's; generation stopped once the string appeared.
    assert stopped.tokens == full.tokens[: len(stopped.tokens)]
    assert len(stopped.tokens) < len(full.tokens) or cut + len(stop) == len(text)
    assert stopped.done.usage.completion_tokens == len(stopped.tokens)


async def test_dialog_input_streams_and_counts_prompt_tokens(mp1: ServiceProcess) -> None:
    dialog = types_pb2.Dialog(messages=[types_pb2.Message(role=types_pb2.ROLE_USER, content="hello there")])
    async with channel(mp1) as ch:
        stub = pb_grpc.InferenceServiceStub(ch)
        reply = await generate(stub, start_request(dialog=dialog, n=5))
        ids = await stub.Tokenize(pb.TokenizeRequest(dialog=dialog), timeout=10)
    assert reply.started is not None and reply.started.prompt_tokens == len(ids.token_ids)
    assert reply.done is not None and reply.done.usage.prompt_tokens == len(ids.token_ids)
    assert 0 < len(reply.tokens) <= 5


@pytest.mark.parametrize(
    ("second", "fragment"),
    [
        (start_request("again", 4).SerializeToString(), "a second `start`"),
        (b"", "an empty GenerateRequest"),
        (bytes([2 << 3 | 2, 2, 15 << 3 | 0, 1]), "cancel.#15"),  # a cancel carrying field 15
    ],
    ids=["second-start", "empty", "cancel-with-unknown-field"],
)
async def test_a_bad_message_after_the_start_fails_the_stream_and_frees_blocks(
    mp1: ServiceProcess, second: bytes, fragment: str
) -> None:
    async with channel(mp1) as ch:
        generate_raw = ch.stream_stream(
            f"/{SERVICE}/Generate",
            request_serializer=lambda b: b,
            response_deserializer=pb.GenerateResponse.FromString,
        )
        outbox: asyncio.Queue[bytes | None] = asyncio.Queue()
        outbox.put_nowait(start_request("a long reply", LONG, ignore_eos=True).SerializeToString())

        async def requests() -> AsyncIterator[bytes]:
            while (item := await outbox.get()) is not None:
                yield item

        call = generate_raw(requests(), timeout=60)
        assert (await call.read()).HasField("started")
        assert (await call.read()).HasField("delta")
        outbox.put_nowait(second)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            while await call.read() != grpc.aio.EOF:
                pass
        outbox.put_nowait(None)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert fragment in (raised.value.details() or ""), raised.value.details()
        assert await wait_all_blocks_free(pb_grpc.InferenceServiceStub(ch)) < 5.0
