"""Load: many concurrent Chat streams through the gateway for a bounded time, nothing lost.

The short variant of `bench/load_bench.py` (which runs 200 streams for 10 minutes): every reply
ends with Done or a documented status, TTFT and throughput are reported, and afterwards the
inference scheduler is idle with every KV block free and no service has grown its memory.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace

import pytest

from tests.reliability.loadgen import LoadConfig, run_load
from tests.reliability.probes import (
    process_tree_rss_bytes,
    rss_limit_bytes,
    unchecked_deliveries,
    wait_health,
    wait_scheduler_idle,
)
from tests.support.reliability import ReliabilityStack

pytestmark = pytest.mark.slow

STREAMS = 64
DURATION_S = 20.0


def _rss(rstack: ReliabilityStack) -> dict[str, int]:
    return {
        p.name: process_tree_rss_bytes(p.proc.pid) for p in rstack.stack.processes() if p.proc is not None
    }


def test_concurrent_streams_complete_and_resources_return(rstack: ReliabilityStack) -> None:
    stack = rstack.stack
    base = LoadConfig(stack.gateway_target, stack.metadata, streams=8, duration_s=3.0, max_gen_len=8)
    warm = asyncio.run(run_load(base))
    assert not warm.unexpected, warm.unexpected[:5]
    wait_scheduler_idle(rstack.inference_metrics_port)
    baseline = _rss(rstack)

    report = asyncio.run(run_load(replace(base, streams=STREAMS, duration_s=DURATION_S)))
    summary = report.summary()
    print("load summary:", json.dumps(summary))

    assert not report.unexpected, f"{len(report.unexpected)} unexpected endings, e.g. {report.unexpected[:5]}"
    assert report.streams_opened >= STREAMS
    assert len(report.outcomes) >= STREAMS, summary
    assert report.tokens > 0 and report.ttfts, summary
    # Every delivered token was judged safe before release (the gateway audits the judged text).
    assert (
        unchecked_deliveries(stack.audit_dir, {o.request_id: list(o.deltas) for o in report.outcomes}) == []
    )

    idle = wait_scheduler_idle(rstack.inference_metrics_port)
    assert idle["kv"] == 0.0
    after = _rss(rstack)
    print(
        "RSS MiB before -> after:", {n: f"{baseline[n] / 2**20:.0f} -> {after[n] / 2**20:.0f}" for n in after}
    )
    for name, before in baseline.items():
        assert after[name] <= rss_limit_bytes(before), (
            f"{name} RSS {before / 2**20:.0f} -> {after[name] / 2**20:.0f} MiB"
        )
    wait_health(stack.gateway_target, "", {"SERVING"}, timeout_s=5)
