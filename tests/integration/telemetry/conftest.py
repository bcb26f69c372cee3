from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.support.two_hop import Topology, open_topology


@pytest.fixture
async def topology() -> AsyncIterator[Topology]:
    async for value in open_topology(metrics_ports=False):
        yield value


@pytest.fixture
async def scraped_topology() -> AsyncIterator[Topology]:
    async for value in open_topology(metrics_ports=True):
        yield value
