"""Bootstrap shared by every service: a grpc.aio server with standard health checking,
reflection, message-size limits, keepalive, TLS, and graceful shutdown on SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from services.common.interceptors import ClosingStreamsInterceptor, ErrorInterceptor, RefusingInterceptor
from services.common.reflection import enable_reflection
from services.common.tls import ServerTls, server_credentials

log = logging.getLogger(__name__)

SERVING = health_pb2.HealthCheckResponse.SERVING
DEFAULT_MAX_CONNECTION_AGE_GRACE_S = 900.0
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 0
    # Larger messages are refused with RESOURCE_EXHAUSTED by grpc itself.
    max_message_bytes: int = 4 * 1024 * 1024
    # In-flight streams get this long to finish after SIGTERM before they are cancelled.
    grace_s: float = 30.0
    # After SIGTERM, and before the grpc server stops (and grace_s starts), new calls are answered
    # UNAVAILABLE for this long while health says NOT_SERVING: callers and balancers that have not
    # yet seen the health change get a status they retry elsewhere (interceptors.RefusingInterceptor).
    refuse_new_calls_s: float = 1.0
    # Server pings idle clients so dead peers are noticed; clients may ping at most this often.
    keepalive_time_s: float = 60.0
    keepalive_timeout_s: float = 20.0
    min_client_ping_interval_s: float = 10.0
    max_concurrent_streams: int = 1024
    # A client's connection is closed (GOAWAY) after this long, so clients that balance over DNS
    # (`dns:///`, round robin) re-resolve and reach replicas added since they connected. New calls
    # go to a new connection at once; calls in flight get max_connection_age_grace_s to finish on the
    # old one before it is cut, so it must outlast the longest call a service allows (a generation,
    # a Chat stream).
    max_connection_age_s: float = 300.0
    max_connection_age_grace_s: float = DEFAULT_MAX_CONNECTION_AGE_GRACE_S
    tls: ServerTls | None = None
    extra_interceptors: Sequence[grpc.aio.ServerInterceptor] = field(default_factory=tuple)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def add_server_arguments(parser: argparse.ArgumentParser, default_port: int) -> None:
    """Flags every service's command line shares."""
    group = parser.add_argument_group("server")
    group.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 in containers)")
    group.add_argument("--port", type=int, default=default_port, help="gRPC port (0 picks a free one)")
    group.add_argument("--max-message-bytes", type=int, default=4 * 1024 * 1024)
    group.add_argument("--grace-s", type=float, default=30.0, help="drain time after SIGTERM")
    group.add_argument(
        "--refuse-new-calls-s",
        type=float,
        default=1.0,
        help="after SIGTERM, answer new calls UNAVAILABLE for this long before the server stops",
    )
    group.add_argument(
        "--max-connection-age-s",
        type=float,
        default=300.0,
        help="close each client connection after this long, so DNS-balancing clients find new replicas",
    )
    group.add_argument(
        "--max-connection-age-grace-s",
        type=float,
        help="time calls in flight get once their connection's age is up, then they are cut "
        f"(default {DEFAULT_MAX_CONNECTION_AGE_GRACE_S:g}; the gateway: at least its longest Chat stream)",
    )
    group.add_argument("--tls-cert", type=Path, help="server certificate (PEM); enables TLS")
    group.add_argument("--tls-key", type=Path, help="server private key (PEM)")
    group.add_argument("--tls-client-ca", type=Path, help="CA of client certificates; enables mTLS")


def server_config_from_args(args: argparse.Namespace) -> ServerConfig:
    tls = None
    if args.tls_cert or args.tls_key:
        if not (args.tls_cert and args.tls_key):
            raise SystemExit("--tls-cert and --tls-key must be given together")
        tls = ServerTls(args.tls_cert, args.tls_key, args.tls_client_ca)
    elif args.tls_client_ca:
        raise SystemExit("--tls-client-ca (mTLS) needs --tls-cert and --tls-key")
    if args.refuse_new_calls_s < 0:
        raise SystemExit("--refuse-new-calls-s must be >= 0")
    if args.max_connection_age_s <= 0:
        raise SystemExit("--max-connection-age-s must be > 0")
    if args.max_connection_age_grace_s is not None and args.max_connection_age_grace_s < 0:
        raise SystemExit("--max-connection-age-grace-s must be >= 0")
    return ServerConfig(
        host=args.host,
        port=args.port,
        max_message_bytes=args.max_message_bytes,
        grace_s=args.grace_s,
        refuse_new_calls_s=args.refuse_new_calls_s,
        max_connection_age_s=args.max_connection_age_s,
        max_connection_age_grace_s=(
            DEFAULT_MAX_CONNECTION_AGE_GRACE_S
            if args.max_connection_age_grace_s is None
            else args.max_connection_age_grace_s
        ),
        tls=tls,
    )


class GrpcServer:
    """A grpc.aio server that reports NOT_SERVING until `set_serving(True)`.

    Register servicers on `.server` before `start()`; `service_names` are the full names
    (e.g. "llamagate.v1.SafetyService") published in health and reflection.
    """

    def __init__(self, config: ServerConfig, service_names: Sequence[str]) -> None:
        self.config = config
        self.service_names = list(service_names)
        ms = lambda s: int(s * 1000)  # noqa: E731
        self.server = grpc.aio.server(
            interceptors=[
                ClosingStreamsInterceptor(),
                *config.extra_interceptors,
                ErrorInterceptor(),
                RefusingInterceptor(lambda: self._refusing),
            ],
            options=[
                ("grpc.max_receive_message_length", config.max_message_bytes),
                ("grpc.max_send_message_length", config.max_message_bytes),
                ("grpc.keepalive_time_ms", ms(config.keepalive_time_s)),
                ("grpc.keepalive_timeout_ms", ms(config.keepalive_timeout_s)),
                ("grpc.http2.min_ping_interval_without_data_ms", ms(config.min_client_ping_interval_s)),
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.max_concurrent_streams", config.max_concurrent_streams),
                ("grpc.max_connection_age_ms", ms(config.max_connection_age_s)),
                ("grpc.max_connection_age_grace_ms", ms(config.max_connection_age_grace_s)),
                # A second server on a taken port must fail to start, not silently share the port.
                ("grpc.so_reuseport", 0),
            ],
        )
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        enable_reflection([*self.service_names, health.SERVICE_NAME], self.server)
        self.port = 0
        self._stopping = asyncio.Event()
        self._refusing = False

    async def start(self) -> int:
        await self.set_serving(False)
        if self.config.tls is None:
            self.port = self.server.add_insecure_port(self.config.address)
        else:
            self.port = self.server.add_secure_port(self.config.address, server_credentials(self.config.tls))
        if self.port == 0:
            raise OSError(f"could not bind {self.config.address}")
        await self.server.start()
        return self.port

    async def set_serving(self, serving: bool) -> None:
        status = SERVING if serving else NOT_SERVING
        for name in ["", *self.service_names]:
            await self.health.set(name, status)

    def request_stop(self) -> None:
        self._stopping.set()

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)

    async def wait_for_stop_request(self) -> None:
        await self._stopping.wait()

    async def stop(self) -> None:
        """Refuse new calls and report NOT_SERVING so balancers move away, then stop the server,
        which drains the calls in flight."""
        # Refusing before the health change: a caller that sees NOT_SERVING and calls anyway is
        # already refused with UNAVAILABLE.
        self._refusing = True
        await self.set_serving(False)
        await self.health.enter_graceful_shutdown()
        await asyncio.sleep(self.config.refuse_new_calls_s)
        await self.server.stop(self.config.grace_s)
