"""uvicorn inside the gateway's event loop: the HTTP port beside the gRPC one, drained with it.

The gateway owns the process's signals (GrpcServer.install_signal_handlers): this server installs
none, and stops when `stop()` is called from the gateway's drain. Stopping closes the listening
socket and idle keep-alive connections at once, lets responses in flight (streams included) finish
for up to the drain time, then cancels what is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import uvicorn
from starlette.types import ASGIApp

from services.common.tls import ServerTls

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HttpConfig:
    """The OpenAI-compatible HTTP port (gateway flags --http-*)."""

    host: str
    port: int
    # The model id /v1/models lists and requests name.
    model: str = "llama-2-chat"
    grace_s: float = 30.0
    keep_alive_s: float = 75.0
    tls: ServerTls | None = None


class _EmbeddedServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The gateway's own handlers decide when to drain; see stop().
        yield


class HttpServer:
    def __init__(self, app: ASGIApp, config: HttpConfig) -> None:
        tls = config.tls
        self.config = config
        self._server = _EmbeddedServer(
            uvicorn.Config(
                app,
                host=config.host,
                port=config.port,
                http="h11",
                ws="none",
                lifespan="off",
                # The gateway configured logging already; each reply is logged by the gateway.
                log_config=None,
                access_log=False,
                timeout_keep_alive=math.ceil(config.keep_alive_s),
                timeout_graceful_shutdown=math.ceil(config.grace_s),
                ssl_certfile=_path(tls.cert_file if tls else None),
                ssl_keyfile=_path(tls.key_file if tls else None),
                ssl_ca_certs=_path(tls.client_ca_file if tls else None),
                ssl_cert_reqs=(
                    ssl.CERT_REQUIRED if tls is not None and tls.client_ca_file is not None else ssl.CERT_NONE
                ),
            )
        )
        self._task: asyncio.Task[None] | None = None

    async def start(self, on_exit: Callable[[], None] | None = None) -> None:
        """Serve in a task; return once the port is bound (raise if binding failed).

        `on_exit` is called when serving ends for any reason: the gateway stops with a port that
        failed, so the orchestrator restarts it rather than leaving half of its API down.
        """
        self._task = asyncio.create_task(self._server.serve())
        if on_exit is not None:
            self._task.add_done_callback(lambda _: on_exit())
        while not self._server.started:
            if self._task.done():
                self._task.result()
                raise OSError(f"the HTTP server on {self.config.host}:{self.config.port} did not start")
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        if self._task is None:
            return
        self._server.should_exit = True
        try:
            await self._task
        except Exception:
            # The gRPC port's drain and the backends' shutdown still run; the cause is in the log.
            log.exception("the HTTP server stopped with an error")


def _path(path: Path | None) -> str | None:
    return None if path is None else str(path)
