"""Slow clients: streams whose reader never reads cannot starve other clients or grow the
gateway's memory, and their resources are released when they go away."""

from __future__ import annotations

import asyncio
import queue

import grpc
import pytest

from llamagate.v1 import chat_service_pb2 as chat_pb
from llamagate.v1 import chat_service_pb2_grpc as chat_grpc
from llamagate.v1 import types_pb2
from tests.reliability.loadgen import LoadConfig, run_load
from tests.reliability.probes import process_tree_rss_bytes, wait_scheduler_idle
from tests.support.reliability import ReliabilityStack

pytestmark = pytest.mark.slow

STALLED = 32
STALLED_DEADLINE_S = 12.0
# Normal clients keep a bounded TTFT while the stalled streams are held open.
TTFT_P99_BOUND_S = 10.0
GATEWAY_RSS_GROWTH_BOUND = 64 * 1024 * 1024


def test_readers_that_never_read_do_not_exhaust_the_gateway(rstack: ReliabilityStack) -> None:
    stack = rstack.stack
    gateway_pid = stack.gateway.proc.pid  # type: ignore[union-attr]
    rss_before = process_tree_rss_bytes(gateway_pid)
    channel = stack.gateway_channel()
    outboxes: list[queue.Queue[chat_pb.ChatRequest | None]] = []
    stalled = []
    try:
        for i in range(STALLED):
            outbox: queue.Queue[chat_pb.ChatRequest | None] = queue.Queue()
            outbox.put(
                chat_pb.ChatRequest(
                    start=chat_pb.ChatStart(
                        messages=[types_pb2.Message(role=types_pb2.ROLE_USER, content=f"Tell me story {i}.")],
                        sampling=types_pb2.SamplingParams(max_gen_len=256, logprobs=True, seed=i),
                    )
                )
            )
            outboxes.append(outbox)
            # Opened (the start is sent) but the response iterator is never advanced, and the
            # request side never half-closes: a client that stopped reading.
            stalled.append(
                chat_grpc.ChatServiceStub(channel).Chat(
                    iter(outbox.get, None), metadata=stack.metadata, timeout=STALLED_DEADLINE_S
                )
            )
        report = asyncio.run(
            run_load(
                LoadConfig(stack.gateway_target, stack.metadata, streams=8, duration_s=6.0, max_gen_len=8)
            )
        )
        assert not report.unexpected, report.unexpected[:5]
        assert report.percentile(report.ttfts, 0.99) < TTFT_P99_BOUND_S, report.summary()
        assert process_tree_rss_bytes(gateway_pid) - rss_before < GATEWAY_RSS_GROWTH_BOUND
        # The stalled streams end with their deadline (DEADLINE_EXCEEDED) even though nobody reads.
        for call in stalled:
            with pytest.raises(grpc.RpcError) as info:
                for _ in call:
                    pass
            assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED, info.value
    finally:
        for outbox in outboxes:
            outbox.put(None)
        for call in stalled:
            call.cancel()
        channel.close()
    # Their generations ended and every KV block is free again.
    assert wait_scheduler_idle(rstack.inference_metrics_port, timeout_s=30)["kv"] == 0.0
