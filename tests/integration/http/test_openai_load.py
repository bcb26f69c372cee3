"""Load over HTTP: concurrent streaming requests with the openai client for a bounded time, with
the gRPC load test's checks: every request ends with a finish reason or a documented status,
every delivered delta was judged safe before release, nothing is missing from the audit trail,
and afterwards the inference scheduler is idle with every KV block free.

The short variant of `bench/http_load_bench.py` (100 streams for 2 minutes).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest

from tests.integration.http.loadgen import HttpLoadConfig, audit_gaps, run_http_load
from tests.reliability.probes import unchecked_deliveries, wait_scheduler_idle
from tests.support.processes import free_port
from tests.support.reliability import reliability_stack_config
from tests.support.stack import Stack, require_services, running_stack

pytestmark = pytest.mark.slow

STREAMS = 32
DURATION_S = 15.0


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, int]]:
    require_services()
    metrics_port = free_port()
    with running_stack(tmp_path_factory.mktemp("http-load"), reliability_stack_config(metrics_port)) as stack:
        yield stack, metrics_port


def test_concurrent_streams_deliver_only_checked_text_and_lose_nothing(loaded: tuple[Stack, int]) -> None:
    stack, metrics_port = loaded
    config = HttpLoadConfig(stack.http_base_url, stack.api_key, streams=STREAMS, duration_s=DURATION_S)
    report = asyncio.run(run_http_load(config))
    summary = report.summary()
    print("http load summary:", json.dumps(summary))

    assert not report.unexpected, f"{len(report.unexpected)} unexpected endings, e.g. {report.unexpected[:3]}"
    assert len(report.outcomes) >= STREAMS and report.summary()["tokens"], summary
    finishes = {o.finish for o in report.outcomes}
    assert "content_filter" in finishes and finishes & {"stop", "length"}, summary
    delivered = {o.request_id: list(o.deltas) for o in report.outcomes if o.request_id}
    assert unchecked_deliveries(stack.audit_dir, delivered) == []
    assert audit_gaps(stack.audit_dir, report.outcomes) == []
    assert wait_scheduler_idle(metrics_port, timeout_s=60)["kv"] == 0.0
