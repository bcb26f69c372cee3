"""The gateway's readiness, published in its health service under READINESS.

Liveness is the overall status ("" and llamagate.v1.ChatService): SERVING once the configuration is
loaded, for as long as the process can answer; restarting the gateway would not bring a backend
back. Readiness follows the backends: NOT_SERVING while a backend the gateway needs does not
answer its health check, so the gateway's Service and load balancers send new chats to a replica
that can serve them instead of one that would fail them closed. The safety service is not needed
when the gateway runs fail-open.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection

from grpc_health.v1 import health, health_pb2

from services.gateway.dependencies import DependencyMonitor

READINESS = "readiness"
log = logging.getLogger(__name__)

_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class Readiness:
    def __init__(
        self,
        health_servicer: health.aio.HealthServicer,
        monitor: DependencyMonitor,
        required: Collection[str],
        interval_s: float = 2.0,
    ) -> None:
        self._health = health_servicer
        self._monitor = monitor
        self._required = frozenset(required)
        self._interval_s = interval_s
        self.ready = False

    async def check_once(self) -> bool:
        statuses = await self._monitor.check_once()
        ready = all(statuses.get(name) == _SERVING for name in self._required)
        if ready != self.ready:
            down = sorted(name for name in self._required if statuses.get(name) != _SERVING)
            if ready:
                log.info("gateway ready: every backend answers")
            else:
                log.warning("gateway not ready: %s not answering", ", ".join(down))
        self.ready = ready
        await self._health.set(READINESS, _SERVING if ready else _NOT_SERVING)
        return ready

    async def run(self) -> None:
        await self._health.set(READINESS, _NOT_SERVING)
        while True:
            await self.check_once()
            await asyncio.sleep(self._interval_s)
