from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest

from llamagate.v1 import chat_service_pb2_grpc as chat_grpc
from tests.integration.telemetry.two_hop import Hop, make_hop, start_back, start_front
from tests.support.processes import free_port


@dataclass
class Topology:
    client: Hop
    front: Hop
    back: Hop
    channel: grpc.aio.Channel  # client -> front, with the client's interceptors

    @property
    def chat(self) -> chat_grpc.ChatServiceStub:
        return chat_grpc.ChatServiceStub(self.channel)


async def _topology(metrics_ports: bool) -> AsyncIterator[Topology]:
    back = make_hop("back", free_port() if metrics_ports else 0)
    front = make_hop("front", free_port() if metrics_ports else 0)
    client = make_hop("client")
    await start_back(back)
    back_channel = grpc.aio.insecure_channel(back.target, interceptors=front.telemetry.client_interceptors())
    await start_front(front, back_channel)
    channel = grpc.aio.insecure_channel(front.target, interceptors=client.telemetry.client_interceptors())
    try:
        yield Topology(client, front, back, channel)
    finally:
        await channel.close()
        for hop in (front, back):
            assert hop.server is not None
            await hop.server.stop()
        await back_channel.close()
        for hop in (client, front, back):
            hop.telemetry.shutdown()


@pytest.fixture
async def topology() -> AsyncIterator[Topology]:
    async for value in _topology(metrics_ports=False):
        yield value


@pytest.fixture
async def scraped_topology() -> AsyncIterator[Topology]:
    async for value in _topology(metrics_ports=True):
        yield value
