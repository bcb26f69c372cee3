"""`python -m services.gateway`: load keys, open the audit trail and backend channels, serve."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import sys

from llamagate.v1 import chat_service_pb2_grpc as chat_grpc
from services.common.logs import configure_logging
from services.common.server import GrpcServer
from services.common.telemetry import setup_telemetry
from services.gateway.audit import AuditSink, build_exporter
from services.gateway.auth import ApiKeyFileWatcher, load_api_keys
from services.gateway.config import GatewayConfig, build_parser, config_from_args
from services.gateway.dependencies import DependencyMonitor
from services.gateway.grpc_backends import GrpcInference, GrpcSafety, open_channel
from services.gateway.http.app import OpenAIRoutes, openai_app
from services.gateway.http.server import HttpServer
from services.gateway.metrics import GatewayMetrics
from services.gateway.pipeline import ReplyPipeline
from services.gateway.ratelimit import RateLimiter
from services.gateway.readiness import Readiness
from services.gateway.replies import Replies
from services.gateway.servicer import ChatServicer

SERVICE_NAME = "llamagate.v1.ChatService"
log = logging.getLogger("services.gateway")


async def serve(config: GatewayConfig) -> None:
    telemetry = setup_telemetry(config.telemetry)
    server = GrpcServer(
        dataclasses.replace(config.server, extra_interceptors=telemetry.server_interceptors()), [SERVICE_NAME]
    )
    api_keys = load_api_keys(config.api_keys_file)
    audit = AuditSink(
        config.audit_dir,
        max_file_bytes=config.audit_max_file_bytes,
        retention=config.audit_retention,
        exporter=build_exporter(config.audit_export, config.telemetry.service_name),
    )
    interceptors = telemetry.client_interceptors()
    inference_channel = open_channel(config.inference_target, config.backend_tls, interceptors)
    safety_channel = open_channel(config.safety_target, config.backend_tls, interceptors)
    # One limiter and one set of metrics for both transports: a tenant's limits span gRPC and HTTP.
    limiter = RateLimiter()
    metrics = GatewayMetrics.create(telemetry.meter)
    pipeline = ReplyPipeline(
        config.pipeline,
        GrpcInference(inference_channel),
        GrpcSafety(safety_channel),
        audit,
        tracer=telemetry.tracer,
        metrics=metrics,
    )
    servicer = ChatServicer(
        pipeline,
        api_keys,
        limiter,
        metrics,
        config.stream_limits,
        tracer=telemetry.tracer,
    )
    chat_grpc.add_ChatServiceServicer_to_server(servicer, server.server)
    port = await server.start()
    server.install_signal_handlers()
    if config.pipeline.fail_open:
        log.warning("FAIL-OPEN is on: text is released unchecked while the safety service is down (audited)")
    monitor = DependencyMonitor(
        server.health,
        {"llamagate.v1.InferenceService": inference_channel, "llamagate.v1.SafetyService": safety_channel},
    )
    # Readiness ("readiness") follows the backends; liveness ("") stays SERVING (readiness.py).
    required = ["llamagate.v1.InferenceService"]
    if not config.pipeline.fail_open:
        required.append("llamagate.v1.SafetyService")
    readiness = Readiness(server.health, monitor, required)
    http = None
    if config.http is not None:
        # The OpenAI-compatible port: the same pipeline, keys, limits and metrics (docs/gateway.md).
        # Bound before the gateway reports SERVING, so SERVING means both ports answer.
        routes = OpenAIRoutes(
            Replies(pipeline, limiter, metrics, telemetry.tracer),
            api_keys,
            config.http.model,
            lambda: readiness.ready,
        )
        http = HttpServer(openai_app(routes, telemetry.tracer, telemetry.meter), config.http)
        await http.start(on_exit=server.request_stop)
        log.info("OpenAI-compatible HTTP API on %s:%d", config.http.host, config.http.port)
    # Serving as soon as the configuration is loaded: the backends are reached per call, and a
    # backend that is down fails those calls with UNAVAILABLE (never with unchecked text).
    await server.set_serving(True)
    background = [
        asyncio.create_task(readiness.run()),
        asyncio.create_task(
            ApiKeyFileWatcher(api_keys, config.api_keys_file, config.api_keys_reload_s).run()
        ),
        asyncio.create_task(audit.run_retention()),
    ]
    log.info(
        "gateway serving on %s:%d (inference %s, safety %s, %d tenants, audit %s, moderation %s/%d tokens)",
        config.server.host,
        port,
        config.inference_target,
        config.safety_target,
        len(api_keys.tenants),
        config.audit_dir,
        config.pipeline.moderation.mode,
        config.pipeline.moderation.chunk_tokens,
    )
    try:
        await server.wait_for_stop_request()
    finally:
        for task in background:
            task.cancel()
        # Both ports drain at once, each within the drain time.
        await asyncio.gather(server.stop(), http.stop() if http is not None else asyncio.sleep(0))
        await inference_channel.close()
        await safety_channel.close()
        await audit.close()
        telemetry.shutdown()


def main(argv: list[str] | None = None) -> int:
    config = config_from_args(build_parser().parse_args(argv))
    configure_logging(config.telemetry)
    asyncio.run(serve(config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
