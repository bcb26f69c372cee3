"""On CPU, the real MP-1 inference process: health goes SERVING only once the model is loaded, a full queue
answers RESOURCE_EXHAUSTED, and SIGTERM drains (the in-flight stream completes, new ones are refused)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from llamagate.v1 import inference_service_pb2 as pb
from llamagate.v1 import inference_service_pb2_grpc as pb_grpc
from llamagate.v1 import types_pb2
from tests.support.inference_service import (
    DemoModel,
    Outbox,
    channel,
    generate,
    inference_process,
    start_request,
    start_service,
    stop_service,
    wait_all_blocks_free,
)
from tests.support.processes import ServiceProcess

pytestmark = pytest.mark.slow

SERVING = health_pb2.HealthCheckResponse.SERVING
LONG = 300  # fits the narrow cache (368 tokens) with its prompt


def test_health_is_serving_only_once_the_model_answers(demo: DemoModel, tmp_path: Path) -> None:
    process = inference_process(demo, tmp_path, name="health").start(wait=False)
    seen: list[str] = []
    try:
        deadline = time.monotonic() + 120
        # Reconnect at once: with grpc's default backoff (1 s and growing) a channel that found the
        # port closed answers UNAVAILABLE without trying again, and misses the short loading window.
        fast_reconnect = [
            ("grpc.initial_reconnect_backoff_ms", 10),
            ("grpc.min_reconnect_backoff_ms", 10),
            ("grpc.max_reconnect_backoff_ms", 20),
        ]
        with grpc.insecure_channel(process.target, options=fast_reconnect) as ch:
            health = health_pb2_grpc.HealthStub(ch)
            while time.monotonic() < deadline:
                assert process.proc is not None and process.proc.poll() is None, process.log_tail()
                try:
                    status = health.Check(
                        health_pb2.HealthCheckRequest(service="llamagate.v1.InferenceService"), timeout=2
                    )
                    seen.append(health_pb2.HealthCheckResponse.ServingStatus.Name(status.status))
                except grpc.RpcError as error:
                    seen.append(error.code().name)
                if seen[-1] == "SERVING":
                    break
                time.sleep(0.02)
            assert seen[-1] == "SERVING", seen[-5:]
            # SERVING means ready: the very next call is answered by the loaded model.
            stub = pb_grpc.InferenceServiceStub(ch)
            info = stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=5)
            assert info.kv_blocks_total > 0
            replies = list(stub.Generate(iter([start_request("hello", n=3)]), timeout=30))
            assert replies[-1].HasField("done")
        # Before SERVING the port was closed (UNAVAILABLE), the server said NOT_SERVING, or (on a busy
        # machine) did not answer within the check's 2 s; never anything else.
        assert set(seen[:-1]) <= {"UNAVAILABLE", "NOT_SERVING", "DEADLINE_EXCEEDED"}, seen
        assert "NOT_SERVING" in seen, f"health never reported NOT_SERVING while loading: {seen}"
    finally:
        stop_service(process)


@pytest.fixture(scope="module")
def narrow(demo: DemoModel, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """One sequence at a time, a queue of two (three requests fill it), 23 usable KV blocks (368 tokens)."""
    workdir = tmp_path_factory.mktemp("narrow")
    # New calls after SIGTERM are refused for 5 s before the server stops: room for the drain
    # test's late call on a loaded machine (after the stop, grpc core could cancel it instead).
    args = ("--max-batch-size", "1", "--max-queue", "2", "--num-kv-blocks", "24", "--refuse-new-calls-s", "5")
    process = inference_process(demo, workdir, *args, name="narrow")
    start_service(process)
    yield process
    stop_service(process)


async def _open(
    stub: pb_grpc.InferenceServiceStub, request: pb.GenerateRequest
) -> tuple[Outbox, grpc.aio.StreamStreamCall]:
    outbox = Outbox()
    outbox.send(request)
    call = stub.Generate(outbox.__aiter__(), timeout=120)
    first = await call.read()
    assert first.HasField("started"), first
    return outbox, call


async def _finish(call: grpc.aio.StreamStreamCall) -> tuple[list[int], pb.GenerateDone | None]:
    tokens: list[int] = []
    done = None
    while (message := await call.read()) != grpc.aio.EOF:
        if message.HasField("delta"):
            tokens += message.delta.token_ids
        elif message.HasField("done"):
            done = message.done
    return tokens, done


async def test_queue_beyond_its_bound_is_resource_exhausted(narrow: ServiceProcess) -> None:
    async with channel(narrow) as ch:
        stub = pb_grpc.InferenceServiceStub(ch)
        running, running_call = await _open(stub, start_request("hold the batch", LONG, ignore_eos=True))
        queued = [await _open(stub, start_request(f"wait {i}", 4)) for i in range(2)]
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await generate(stub, start_request("one too many", 4))
        assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "--max-queue 2" in (raised.value.details() or ""), raised.value.details()
        # The refusal cost nothing: the others still run to their end once the batch frees up.
        running.send(pb.GenerateRequest(cancel=pb.GenerateCancel()))
        _, done = await _finish(running_call)
        assert done is not None and done.finish_reason == types_pb2.FINISH_REASON_CANCELLED
        for outbox, call in queued:
            _, done = await _finish(call)
            assert done is not None and done.finish_reason != types_pb2.FINISH_REASON_CANCELLED
            outbox.close()
        running.close()
        await wait_all_blocks_free(stub)


async def test_a_request_larger_than_the_whole_cache_is_resource_exhausted(narrow: ServiceProcess) -> None:
    async with channel(narrow) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await generate(pb_grpc.InferenceServiceStub(ch), start_request("x", 500))
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "max_gen_len" in (raised.value.details() or ""), raised.value.details()


async def _serving(health: health_pb2_grpc.HealthStub) -> bool:
    try:
        return (await health.Check(health_pb2.HealthCheckRequest(), timeout=2)).status == SERVING
    except grpc.aio.AioRpcError:
        return False  # the server is already gone


async def test_sigterm_drains_the_stream_in_flight_and_refuses_new_ones(narrow: ServiceProcess) -> None:
    assert narrow.proc is not None
    async with channel(narrow) as ch:
        stub = pb_grpc.InferenceServiceStub(ch)
        request = start_request("drain me", LONG, ignore_eos=True)
        alone = await generate(stub, request)
        outbox, call = await _open(stub, request)
        assert (await call.read()).HasField("delta")
        os.killpg(narrow.proc.pid, signal.SIGTERM)
        # Health turns NOT_SERVING first, so balancers stop sending; then new calls are refused.
        deadline = time.monotonic() + 10
        health = health_pb2_grpc.HealthStub(ch)
        while await _serving(health):
            assert time.monotonic() < deadline, "still SERVING 10 s after SIGTERM"
            await asyncio.sleep(0.02)
        async with channel(narrow) as fresh:
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await generate(
                    pb_grpc.InferenceServiceStub(fresh), start_request("too late", 2), timeout_s=10
                )
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE, raised.value
        tokens, done = await _finish(call)
        outbox.close()
    assert done is not None and done.finish_reason == types_pb2.FINISH_REASON_LENGTH
    assert alone.tokens[1:] == tokens  # the first token was read above
    assert await asyncio.to_thread(narrow.proc.wait, 30) == 0
