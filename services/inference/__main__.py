"""`torchrun --nproc_per_node MP -m services.inference --ckpt-dir DIR --tokenizer-path FILE ...`

Every rank loads its shard and builds the same runner; rank 0 serves gRPC and schedules, the
others run each broadcast step until rank 0 sends the end. Plain `python -m` is MP 1.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal

import torch

from services.common.errors import Unavailable
from services.common.logs import configure_logging
from services.common.server import GrpcServer
from services.common.telemetry import setup_telemetry
from services.inference.config import InferenceConfig, parse_config
from services.inference.engine.blocks import BlockAllocator
from services.inference.engine.engine import Engine, run_follower
from services.inference.engine.ranks import StepBroadcaster
from services.inference.engine.runner import ModelRunner, build_runner
from services.inference.metrics import InferenceMetrics, SchedulerSnapshot, snapshot_of
from services.inference.model.checkpoint import load_model
from services.inference.model.parallel import ParallelContext, init_parallel
from services.inference.model.tokenizer import Tokenizer
from services.inference.model.transformer import ModelArgs

log = logging.getLogger("services.inference")
SERVICE = "llamagate.v1.InferenceService"


def scheduler_snapshot(engine: Engine | None) -> SchedulerSnapshot:
    """The scheduler gauges; called on the metrics exporter's thread (`stats()` copies under a lock)."""
    if engine is None:
        return SchedulerSnapshot(0, 0, 0.0)  # still loading
    return snapshot_of(engine.stats())


def load_engine(
    config: InferenceConfig, ctx: ParallelContext, tokenizer: Tokenizer
) -> tuple[ModelRunner, BlockAllocator, ModelArgs]:
    """This rank's shard and a runner over a KV cache of as many blocks as every rank can hold."""
    model = load_model(
        config.ckpt_dir,
        ctx=ctx,
        dtype=getattr(torch, config.engine.dtype),
        max_seq_len=config.engine.max_seq_len,
        vocab_size=tokenizer.n_words,
        fp8_weights=config.weights_dtype == "fp8",
    )
    if config.weights_dtype == "fp8":
        log.info(
            "weights: layer projections in FP8 (e4m3, per-channel scales), the rest in %s",
            config.engine.dtype,
        )
    runner, allocator = build_runner(model, config.engine)
    runner.capture()
    return runner, allocator, model.args


async def serve(config: InferenceConfig, tokenizer: Tokenizer, ctx: ParallelContext) -> int:
    from llamagate.v1 import inference_service_pb2_grpc as pb_grpc
    from services.inference.demo import is_demo_checkpoint
    from services.inference.servicer import InferenceServicer, model_info

    telemetry = setup_telemetry(config.telemetry)
    # The gauges' callback reads `servicer`, assigned next, only when metrics are collected.
    metrics = InferenceMetrics.create(telemetry.meter, lambda: scheduler_snapshot(servicer.engine))
    servicer = InferenceServicer(None, tokenizer, None, tracer=telemetry.tracer, metrics=metrics)
    server = GrpcServer(
        dataclasses.replace(config.server, extra_interceptors=telemetry.server_interceptors()), [SERVICE]
    )
    pb_grpc.add_InferenceServiceServicer_to_server(servicer, server.server)
    try:
        # Listening before the model loads, so health says NOT_SERVING (not "connection refused")
        # for the minutes a large checkpoint takes.
        port = await server.start()
        server.install_signal_handlers()
        runner, allocator, args = await asyncio.to_thread(load_engine, config, ctx, tokenizer)
        broadcaster = StepBroadcaster(ctx.rank) if ctx.world_size > 1 else None
        engine = Engine(config.engine, runner, tokenizer, allocator, broadcaster)
        demo = is_demo_checkpoint(config.ckpt_dir)
        info = model_info(config.model_name, args, ctx.world_size, config.engine.max_batch_size, demo)
        servicer.attach(engine, info)
        engine.start()
        await server.set_serving(True)
        log.info("inference service SERVING on %s:%d (MP %d)", config.server.host, port, ctx.world_size)

        async def watchdog() -> None:
            while engine.failure is None:
                if engine.stalled_for() > config.engine.step_timeout_s:
                    # Health first, so a client retrying on the UNAVAILABLE is not sent back here.
                    await server.set_serving(False)
                    engine.fail(Unavailable("an inference rank stopped answering; retry on another replica"))
                # Often: streams already got UNAVAILABLE, health must follow before clients retry here.
                await asyncio.sleep(0.1)
            await server.set_serving(False)
            server.request_stop()

        dog = asyncio.create_task(watchdog())
        await server.wait_for_stop_request()
        dog.cancel()
        await server.stop()
        if engine.failure is None:
            await asyncio.to_thread(engine.stop, True, config.server.grace_s)
            return 0
        # Every stream has already failed: nothing to drain, and the step thread may be stuck in a
        # collective with a rank that is gone or hung (main() then exits without waiting for it).
        await asyncio.to_thread(engine.stop, False, 1.0)
        return 1
    finally:
        telemetry.shutdown()  # last: flushes spans and metrics


def main(argv: list[str] | None = None) -> None:
    config = parse_config(argv)
    # Every rank logs in the configured format; only rank 0 (in serve) sets up traces and metrics.
    configure_logging(config.telemetry)
    ctx = init_parallel(config.engine.device)
    if not ctx.is_main:
        # Followers stop when rank 0 broadcasts the end, after its drain; torchrun's SIGTERM must not cut it short.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    tokenizer = Tokenizer(config.tokenizer_path)
    if not ctx.is_main:
        runner, _, _ = load_engine(config, ctx, tokenizer)
        run_follower(runner, StepBroadcaster(ctx.rank))
        return
    code = asyncio.run(serve(config, tokenizer, ctx))
    if code:
        os._exit(code)  # a step thread may be stuck in a collective with a dead rank


if __name__ == "__main__":
    main()
