"""Reports whether the gateway's backends answer, in its own health service.

The gateway's overall health ("" and llamagate.v1.ChatService) only says its configuration is
loaded: with a backend down it still refuses calls cleanly (UNAVAILABLE, fail closed), and a
restart would not help. What a backend's state looks like from the gateway is published under the
backend's service name (llamagate.v1.InferenceService / llamagate.v1.SafetyService), from the
standard health check of the backend server as a whole (service ""), polled over the gateway's own
channels; every change is logged.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

log = logging.getLogger(__name__)

_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class DependencyMonitor:
    def __init__(
        self,
        health_servicer: health.aio.HealthServicer,
        channels: Mapping[str, grpc.aio.Channel],
        interval_s: float = 2.0,
        timeout_s: float = 2.0,
    ) -> None:
        self._health = health_servicer
        self._stubs = {name: health_pb2_grpc.HealthStub(channel) for name, channel in channels.items()}
        self._interval_s = interval_s
        self._timeout_s = timeout_s
        self._last: dict[str, int] = {}

    async def check_once(self) -> dict[str, int]:
        statuses = await asyncio.gather(*(self._probe(name, stub) for name, stub in self._stubs.items()))
        for name, status in zip(self._stubs, statuses, strict=True):
            if self._last.get(name) != status:
                level = logging.INFO if status == _SERVING else logging.WARNING
                log.log(
                    level,
                    "dependency %s is %s",
                    name,
                    health_pb2.HealthCheckResponse.ServingStatus.Name(status),
                )
                self._last[name] = status
            await self._health.set(name, status)
        return dict(self._last)

    async def run(self) -> None:
        while True:
            await self.check_once()
            await asyncio.sleep(self._interval_s)

    async def _probe(self, name: str, stub: health_pb2_grpc.HealthStub) -> int:
        try:
            reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=self._timeout_s)
        except grpc.aio.AioRpcError:
            return _NOT_SERVING
        return _SERVING if reply.status == _SERVING else _NOT_SERVING
