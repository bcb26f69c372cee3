"""The InferenceService in-process on loopback with the demo model: concurrent greedy streams agree with
sequential runs, cancel ends CANCELLED and returns every KV block, bad requests get INVALID_ARGUMENT."""

from __future__ import annotations

import asyncio

import grpc
import pytest
import torch

from llamagate.v1 import inference_service_pb2 as pb
from llamagate.v1 import inference_service_pb2_grpc as pb_grpc
from llamagate.v1 import types_pb2
from services.common.server import GrpcServer, ServerConfig
from services.inference.engine.config import EngineConfig
from services.inference.engine.engine import Engine
from services.inference.engine.runner import build_runner
from services.inference.model.checkpoint import load_model
from services.inference.model.parallel import init_parallel
from services.inference.model.tokenizer import Tokenizer
from services.inference.servicer import InferenceServicer, model_info
from tests.support.inference_service import DemoModel


@pytest.fixture
async def served(demo: DemoModel):  # type: ignore[no-untyped-def]
    # The session's demo model (conftest.py): building one per test means training it each time.
    ctx = init_parallel("cpu")
    config = EngineConfig(max_seq_len=256, max_batch_size=32, num_kv_blocks=400, prefill_chunk=64)
    model = load_model(demo.ckpt_dir, ctx=ctx, dtype=torch.float32, max_seq_len=config.max_seq_len)
    tokenizer = Tokenizer(demo.tokenizer)
    runner, allocator = build_runner(model, config)
    engine = Engine(config, runner, tokenizer, allocator)
    engine.start()
    server = GrpcServer(ServerConfig(port=0), ["llamagate.v1.InferenceService"])
    info = model_info("demo", model.args, 1, config.max_batch_size, True)
    pb_grpc.add_InferenceServiceServicer_to_server(InferenceServicer(engine, tokenizer, info), server.server)
    port = await server.start()
    await server.set_serving(True)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield pb_grpc.InferenceServiceStub(channel), engine
    await server.stop()
    engine.stop(drain=False, timeout_s=10)


def start(prompt: str, n: int = 12, **sampling: object) -> pb.GenerateRequest:
    params = types_pb2.SamplingParams(**{"temperature": 0.0, "max_gen_len": n, **sampling})  # type: ignore[arg-type]
    return pb.GenerateRequest(start=pb.GenerateStart(prompt=prompt, sampling=params))


async def generate(stub: pb_grpc.InferenceServiceStub, request: pb.GenerateRequest) -> tuple[list[int], int]:
    tokens: list[int] = []
    reason = 0
    async for reply in stub.Generate(iter([request])):
        if reply.HasField("delta"):
            tokens += reply.delta.token_ids
        if reply.HasField("done"):
            reason = reply.done.finish_reason
    return tokens, reason


async def test_32_concurrent_streams_equal_sequential_runs(served) -> None:  # type: ignore[no-untyped-def]
    stub, engine = served
    prompts = [f"request number {i} says hello" for i in range(32)]
    sequential = [await generate(stub, start(p)) for p in prompts[:4]]
    concurrent = await asyncio.gather(*(generate(stub, start(p)) for p in prompts))
    assert concurrent[:4] == sequential
    assert all(len(t) > 0 for t, _ in concurrent)
    assert engine.stats().free_blocks == engine.stats().total_blocks


async def test_cancel_ends_cancelled_and_frees_blocks(served) -> None:  # type: ignore[no-untyped-def]
    stub, engine = served
    queue: asyncio.Queue[pb.GenerateRequest | None] = asyncio.Queue()
    await queue.put(start("a long story", n=200, ignore_eos=True))  # the demo model ends replies early

    async def requests():  # type: ignore[no-untyped-def]
        while (item := await queue.get()) is not None:
            yield item

    call = stub.Generate(requests())
    reason = None
    async for reply in call:
        if reply.HasField("delta"):
            await queue.put(pb.GenerateRequest(cancel=pb.GenerateCancel()))
        if reply.HasField("done"):
            reason = reply.done.finish_reason
            break
    await queue.put(None)
    assert reason == types_pb2.FINISH_REASON_CANCELLED
    for _ in range(100):
        if engine.stats().free_blocks == engine.stats().total_blocks:
            break
        await asyncio.sleep(0.05)
    assert engine.stats().free_blocks == engine.stats().total_blocks


@pytest.mark.parametrize(
    ("request_", "fragment"),
    [
        (start("x" * 3000), "at most 256 tokens"),
        (start("hi", temperature=-1.0), "temperature"),
        (start("hi", top_p=1.5), "top_p"),
        (pb.GenerateRequest(start=pb.GenerateStart()), "start.input is empty"),
    ],
)
async def test_bad_requests_are_invalid_argument(served, request_: pb.GenerateRequest, fragment: str) -> None:  # type: ignore[no-untyped-def]
    stub, _ = served
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await generate(stub, request_)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert fragment in (info.value.details() or "")
