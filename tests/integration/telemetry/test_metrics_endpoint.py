"""After real traffic, each hop's metrics match what happened, in memory and on /metrics."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from llamagate.v1 import chat_service_pb2 as chat_pb
from tests.support.two_hop import GENERATED_WORDS, TENANT, UNSAFE_WORD, Hop, Topology
from tests.unit.telemetry.readings import collect, labels

SAFE_TURNS = 3


async def _traffic(topology: Topology) -> None:
    for index in range(SAFE_TURNS):
        async for _ in topology.chat.Complete(chat_pb.CompleteRequest(prompt=f"tell me a story {index}")):
            pass
    async for _ in topology.chat.Complete(chat_pb.CompleteRequest(prompt=f"a {UNSAFE_WORD} plan")):
        pass


async def _scrape(hop: Hop) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    async with httpx.AsyncClient() as client:
        reply = await client.get(f"http://127.0.0.1:{hop.telemetry.metrics_port}/metrics", timeout=10)
    reply.raise_for_status()
    assert reply.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(reply.text)
        for sample in family.samples
    }


async def test_instruments_record_the_traffic(topology: Topology) -> None:
    await _traffic(topology)
    back, front = collect(topology.back.metrics), collect(topology.front.metrics)
    words = len(GENERATED_WORDS)
    assert back["llamagate_generate_requests_total"][labels(finish_reason="stop")].value == SAFE_TURNS
    assert back["llamagate_generated_tokens_total"][labels()].value == SAFE_TURNS * words
    assert back["llamagate_ttft_seconds"][labels()].value == SAFE_TURNS
    assert back["llamagate_inter_token_latency_seconds"][labels()].value == SAFE_TURNS * (words - 1)
    verdicts = back["llamagate_safety_verdicts_total"]
    assert verdicts[labels(direction="input", category="none", verdict="safe")].value == SAFE_TURNS
    assert verdicts[labels(direction="input", category="O3", verdict="unsafe")].value == 1
    assert verdicts[labels(direction="output", category="none", verdict="safe")].value == SAFE_TURNS * words
    assert front["llamagate_requests_total"][labels(tenant=TENANT, finish_reason="stop")].value == SAFE_TURNS
    assert front["llamagate_requests_total"][labels(tenant=TENANT, finish_reason="safety")].value == 1
    assert front["llamagate_safety_blocks_total"][labels(tenant=TENANT, direction="input")].value == 1
    assert front["llamagate_gateway_ttft_seconds"][labels(tenant=TENANT)].value == SAFE_TURNS


async def test_prometheus_endpoints_serve_parsable_text_with_matching_counts(
    scraped_topology: Topology,
) -> None:
    await _traffic(scraped_topology)
    back, front = await _scrape(scraped_topology.back), await _scrape(scraped_topology.front)
    words = len(GENERATED_WORDS)
    assert back[("llamagate_generated_tokens_total", frozenset())] == SAFE_TURNS * words
    assert back[("llamagate_ttft_seconds_count", frozenset())] == SAFE_TURNS
    assert back[("llamagate_ttft_seconds_bucket", frozenset({("le", "+Inf")}))] == SAFE_TURNS
    assert back[("llamagate_queue_depth", frozenset())] == 2
    assert back[("llamagate_running_batch_size", frozenset())] == 1
    assert back[("llamagate_kv_cache_utilization", frozenset())] == 0.125
    unsafe = frozenset({("direction", "input"), ("category", "O3"), ("verdict", "unsafe")})
    assert back[("llamagate_safety_verdicts_total", unsafe)] == 1
    assert back[
        ("llamagate_safety_check_seconds_count", frozenset({("direction", "output"), ("mode", "stream")}))
    ] == (SAFE_TURNS * words)
    stop = frozenset({("tenant", TENANT), ("finish_reason", "stop")})
    assert front[("llamagate_requests_total", stop)] == SAFE_TURNS
    prompt_tokens = sum(len(f"tell me a story {i}".split()) for i in range(SAFE_TURNS))
    assert front[("llamagate_tenant_tokens_total", frozenset({("tenant", TENANT), ("kind", "prompt")}))] == (
        prompt_tokens
    )
    # Each process exports only its own instruments.
    assert not any(name.startswith("llamagate_requests") for name, _ in back)
