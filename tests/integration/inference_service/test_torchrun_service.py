"""The inference service on CPU under `torchrun --nproc_per_node 2` (gloo) streams what the MP-1 service
streams; SIGTERM drains and stops every rank; a follower killed with SIGKILL fails in-flight streams
UNAVAILABLE and takes the service down instead of hanging it; so does one that stops answering
(SIGSTOP), after --step-timeout-s."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from llamagate.v1 import inference_service_pb2_grpc as pb_grpc
from llamagate.v1 import types_pb2
from tests.support.inference_service import (
    DemoModel,
    Outbox,
    alive,
    channel,
    child_pids,
    generate,
    inference_process,
    model_info,
    rank_of,
    start_request,
    start_service,
    stop_service,
)
from tests.support.processes import ServiceProcess

pytestmark = pytest.mark.slow

PROMPTS = [
    "the weather today",
    "a story about a dragon",
    "how do rivers form",
    "x",
    "1 2 3 4",
    "hello, how are you?",
]
HELD = 60  # tokens of a stream that is still running when the test acts on it (MP 2 is slower)


@pytest.fixture(scope="module")
def mp2(demo: DemoModel, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    process = start_service(inference_process(demo, tmp_path_factory.mktemp("mp2"), ranks=2, name="mp2"))
    yield process
    stop_service(process)


def ranks(process: ServiceProcess) -> dict[int, int]:
    """rank -> pid of torchrun's worker processes."""
    assert process.proc is not None
    pids = child_pids(process.proc.pid)
    found = {rank: pid for pid in pids if (rank := rank_of(pid)) is not None}
    assert sorted(found) == [0, 1], f"torchrun children {pids}"
    return found


async def test_two_ranks_stream_the_same_tokens_as_one(mp1: ServiceProcess, mp2: ServiceProcess) -> None:
    async with channel(mp1) as one, channel(mp2) as two:
        stub1, stub2 = pb_grpc.InferenceServiceStub(one), pb_grpc.InferenceServiceStub(two)
        info1, info2 = await model_info(stub1), await model_info(stub2)
        assert info2.model_parallel_size == 2 and info1.model_parallel_size == 1
        assert info2.kv_blocks_total == info1.kv_blocks_total
        for prompt in PROMPTS:
            reference = await generate(stub1, start_request(prompt, n=16))
            reply = await generate(stub2, start_request(prompt, n=16))
            assert reply.tokens == reference.tokens, prompt
            assert reply.text == reference.text
            assert reply.done == reference.done
        # A seeded sampled run too: sampling draws from the same logits with the same seed.
        sampled = start_request("sampled on two ranks", 24, temperature=1.0, seed=5, ignore_eos=True)
        reference = await generate(stub1, sampled)
        reply = await generate(stub2, sampled)
        assert reply.tokens == reference.tokens


async def test_a_long_prompt_in_chunks_on_one_rank_matches_one_chunk_on_two(
    mp1: ServiceProcess, mp2: ServiceProcess
) -> None:
    prompt = " ".join(f"item {i} is a word;" for i in range(40))
    request = start_request(prompt, 10, echo=True, logprobs=True)
    async with channel(mp1) as one, channel(mp2) as two:
        chunked = await generate(pb_grpc.InferenceServiceStub(one), request)
        whole = await generate(pb_grpc.InferenceServiceStub(two), request)
    echo_chunked, echo_whole = chunked.deltas[0], whole.deltas[0]
    assert echo_chunked.echo and len(echo_chunked.token_ids) > 3 * 64
    assert echo_chunked.token_ids == echo_whole.token_ids
    assert echo_chunked.logprobs == pytest.approx(echo_whole.logprobs, abs=1e-3)
    assert chunked.tokens == whole.tokens
    assert chunked.logprobs == pytest.approx(whole.logprobs, abs=1e-3)


async def test_two_ranks_with_concurrent_streams(mp1: ServiceProcess, mp2: ServiceProcess) -> None:
    prompts = [f"{p} ({i})" for i, p in enumerate(PROMPTS * 2)]
    async with channel(mp1) as one, channel(mp2) as two:
        stub1, stub2 = pb_grpc.InferenceServiceStub(one), pb_grpc.InferenceServiceStub(two)
        reference = [await generate(stub1, start_request(p, n=12)) for p in prompts]
        replies = await asyncio.gather(*(generate(stub2, start_request(p, n=12)) for p in prompts))
    assert [r.tokens for r in replies] == [r.tokens for r in reference]
    assert [r.done for r in replies] == [r.done for r in reference]


async def test_two_ranks_reuse_a_chats_history_like_one(mp1: ServiceProcess, mp2: ServiceProcess) -> None:
    """Rank 0's plans carry the cached blocks: both ranks read the same ones, and the tokens and
    cached counts equal the MP-1 service's."""
    # Unique, so neither service has cached it; each turn's prompt extends the last prompt + reply.
    prompt = f"{uuid.uuid4().hex}: tell me about the weather today and tomorrow"
    async with channel(mp1) as one, channel(mp2) as two:
        stub1, stub2 = pb_grpc.InferenceServiceStub(one), pb_grpc.InferenceServiceStub(two)
        for turn in range(3):
            reference = await generate(stub1, start_request(prompt, n=12, ignore_eos=True))
            reply = await generate(stub2, start_request(prompt, n=12, ignore_eos=True))
            assert reply.tokens == reference.tokens
            assert reply.done is not None and reply.done == reference.done
            assert (reply.done.usage.cached_prompt_tokens > 0) == (turn > 0)
            prompt = f"{prompt}{reply.text} and then {turn}"


async def _held_stream(stub: pb_grpc.InferenceServiceStub) -> tuple[Outbox, grpc.aio.StreamStreamCall]:
    """A stream of HELD tokens that has streamed its first one."""
    outbox = Outbox()
    outbox.send(start_request("keep going", HELD, ignore_eos=True))
    call = stub.Generate(outbox.__aiter__(), timeout=120)
    assert (await call.read()).HasField("started")
    assert (await call.read()).HasField("delta")
    return outbox, call


async def test_sigterm_drains_and_stops_every_rank(demo: DemoModel, tmp_path: Path) -> None:
    process = start_service(inference_process(demo, tmp_path, ranks=2, name="mp2-sigterm"))
    try:
        pids = ranks(process)
        assert process.proc is not None
        async with channel(process) as ch:
            stub = pb_grpc.InferenceServiceStub(ch)
            outbox, call = await _held_stream(stub)
            os.killpg(process.proc.pid, signal.SIGTERM)
            tokens = 1  # read by _held_stream
            done = None
            while (message := await call.read()) != grpc.aio.EOF:
                if message.HasField("delta"):
                    tokens += len(message.delta.token_ids)
                elif message.HasField("done"):
                    done = message.done
            outbox.close()
        assert done is not None and done.finish_reason == types_pb2.FINISH_REASON_LENGTH
        assert tokens == done.usage.completion_tokens == HELD
        # torchrun itself exits 1 after forwarding a SIGTERM; what matters is that every rank is gone.
        await asyncio.to_thread(process.proc.wait, 60)
        assert not any(alive(pid) for pid in pids.values())
        assert " ERROR " not in process.log_path.read_text(errors="replace"), process.log_tail()
    finally:
        stop_service(process)


async def test_killed_follower_fails_streams_unavailable_and_stops_the_service(
    demo: DemoModel, tmp_path: Path
) -> None:
    process = start_service(inference_process(demo, tmp_path, ranks=2, name="mp2-sigkill"))
    try:
        pids = ranks(process)
        assert process.proc is not None
        async with channel(process) as ch:
            stub = pb_grpc.InferenceServiceStub(ch)
            outbox, call = await _held_stream(stub)
            os.kill(pids[1], signal.SIGKILL)
            killed = time.monotonic()
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                while await call.read() != grpc.aio.EOF:
                    pass
            assert raised.value.code() == grpc.StatusCode.UNAVAILABLE, raised.value
            assert "retry" in (raised.value.details() or "")
            assert time.monotonic() - killed < 30
            outbox.close()
            # The watchdog turns health NOT_SERVING at once; then the service goes away.
            failed = time.monotonic()
            health = health_pb2_grpc.HealthStub(ch)
            seen = []
            while process.proc.poll() is None:
                assert time.monotonic() - killed < 60, "the service did not stop after a rank died"
                try:
                    reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=2)
                    seen.append((time.monotonic() - failed, reply.status))
                except grpc.aio.AioRpcError:
                    pass  # already shutting down
                await asyncio.sleep(0.05)
        serving_after = [t for t, status in seen if status == health_pb2.HealthCheckResponse.SERVING]
        assert not serving_after or max(serving_after) < 1.0, seen
        assert process.proc.returncode != 0
        assert not alive(pids[0])
    finally:
        stop_service(process)


async def test_hung_follower_fails_streams_after_the_step_timeout(demo: DemoModel, tmp_path: Path) -> None:
    """A follower that stops answering while the service is idle: the next request's step blocks in
    the collectives, and the watchdog fails it UNAVAILABLE and stops the service."""
    timeout_s = 3.0
    process = start_service(
        inference_process(demo, tmp_path, "--step-timeout-s", str(timeout_s), ranks=2, name="mp2-sigstop")
    )
    pids = ranks(process)
    try:
        assert process.proc is not None
        async with channel(process) as ch:
            stub = pb_grpc.InferenceServiceStub(ch)
            os.kill(pids[1], signal.SIGSTOP)
            stopped = time.monotonic()
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await generate(stub, start_request("hello", 8), timeout_s=60)
            waited = time.monotonic() - stopped
            assert raised.value.code() == grpc.StatusCode.UNAVAILABLE, raised.value
            assert "stopped answering" in (raised.value.details() or "")
            assert timeout_s <= waited < timeout_s + 10, waited
            health = health_pb2_grpc.HealthStub(ch)
            with contextlib.suppress(grpc.aio.AioRpcError):  # or already gone
                reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=2)
                assert reply.status != health_pb2.HealthCheckResponse.SERVING
        # Rank 0 exits by itself. torchrun then stops the failed group: SIGTERM, which the stopped rank
        # cannot handle, and SIGKILL 30 s later (a fixed wait for a failed group, whatever
        # --shutdown-timeout says). That wait is torchrun's, so the test kills the stopped rank itself
        # once rank 0 is gone, and torchrun must then exit with the group's failure.
        deadline = time.monotonic() + 30
        while alive(pids[0]):
            assert time.monotonic() < deadline, "rank 0 did not exit after its watchdog fired"
            await asyncio.sleep(0.1)
        os.kill(pids[1], signal.SIGKILL)
        await asyncio.to_thread(process.proc.wait, 30)
        assert process.proc.returncode != 0
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pids[1], signal.SIGKILL)
        stop_service(process)
