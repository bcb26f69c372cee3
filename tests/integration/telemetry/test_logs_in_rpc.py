"""Log lines written while serving an RPC carry that RPC's trace and request ids, and no prompt."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from llamagate.v1 import chat_service_pb2 as chat_pb
from services.common.logs import JsonFormatter
from services.gateway.tracing import TURN_SPAN
from tests.support.two_hop import FRONT_LOGGER, Topology

PROMPT = "my very private question about soup"


@pytest.fixture
def front_log() -> Iterator[tuple[io.StringIO, logging.Handler]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger(FRONT_LOGGER)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield stream, handler
    logger.removeHandler(handler)


@pytest.mark.parametrize("log_prompts", [False, True])
async def test_front_logs_join_the_trace(
    topology: Topology, front_log: tuple[io.StringIO, logging.Handler], log_prompts: bool
) -> None:
    stream, handler = front_log
    handler.setFormatter(JsonFormatter("front", log_prompts=log_prompts))
    events = [r.event async for r in topology.chat.Complete(chat_pb.CompleteRequest(prompt=PROMPT))]
    request_id = events[0].accepted.request_id

    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["msg"] for line in lines] == ["turn accepted", "turn done"]
    (turn,) = [s for s in topology.front.spans.get_finished_spans() if s.name == TURN_SPAN]
    for line in lines:
        assert line["trace_id"] == format(turn.context.trace_id, "032x")
        assert line["request_id"] == request_id
    assert (PROMPT in stream.getvalue()) is log_prompts
