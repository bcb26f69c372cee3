"""The gateway's configuration: one dataclass, built once from the command line."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from services.common.server import ServerConfig, add_server_arguments, server_config_from_args
from services.common.telemetry import TelemetryConfig, add_telemetry_arguments, telemetry_config_from_args
from services.common.tls import ClientTls
from services.gateway.audit import AuditRetention
from services.gateway.chat_turns import StreamLimits
from services.gateway.http.server import HttpConfig
from services.gateway.moderation import ModerationConfig, ModerationMode
from services.gateway.pipeline import PipelineConfig

DEFAULT_PORT = 50051
DEFAULT_METRICS_PORT = 9101


@dataclass(frozen=True)
class GatewayConfig:
    server: ServerConfig
    pipeline: PipelineConfig
    inference_target: str
    safety_target: str
    api_keys_file: Path
    audit_dir: Path
    telemetry: TelemetryConfig
    audit_max_file_bytes: int = 64 * 1024 * 1024
    stream_limits: StreamLimits = field(default_factory=StreamLimits)
    # TLS of the gateway's own calls to the backends (None = plaintext, e.g. on loopback).
    backend_tls: ClientTls | None = None
    audit_retention: AuditRetention = field(default_factory=AuditRetention)
    audit_export: str = "none"  # "none" | "stdout" | "otlp"
    # How often the API keys file is looked at for changes.
    api_keys_reload_s: float = 2.0
    # The OpenAI-compatible HTTP port (None = not served).
    http: HttpConfig | None = None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m services.gateway", description=__doc__)
    parser.add_argument(
        "--inference-target", required=True, help="e.g. dns:///inference:50052 (all replicas)"
    )
    parser.add_argument("--safety-target", required=True, help="e.g. dns:///safety:50053 (all replicas)")
    parser.add_argument("--api-keys", type=Path, required=True, help="YAML file of tenants, keys and limits")
    parser.add_argument("--audit-dir", type=Path, required=True, help="directory of the JSONL audit trail")
    parser.add_argument(
        "--audit-max-file-mb", type=float, default=64.0, help="rotate audit files at this size"
    )
    parser.add_argument(
        "--audit-text", action="store_true", help="also store the judged text in the audit log"
    )
    parser.add_argument(
        "--audit-max-total-mb",
        type=float,
        default=0.0,
        help="delete the oldest closed audit files beyond this total (0: no limit)",
    )
    parser.add_argument(
        "--audit-max-age-h",
        type=float,
        default=0.0,
        help="delete closed audit files older than this (0: keep)",
    )
    parser.add_argument(
        "--audit-min-free-mb",
        type=float,
        default=0.0,
        help="delete the oldest closed audit files while the volume has less free space (0: off)",
    )
    parser.add_argument(
        "--audit-export",
        choices=["none", "stdout", "otlp"],
        default="none",
        help="also ship each record once on disk: JSON lines on stdout, or OTLP logs (OTEL_EXPORTER_OTLP_*)",
    )
    parser.add_argument(
        "--api-keys-reload-s",
        type=float,
        default=2.0,
        help="how often the API keys file is checked for changes",
    )
    parser.add_argument("--chunk-tokens", type=int, default=16, help="most tokens held back before a check")
    parser.add_argument(
        "--moderation",
        choices=[m.value for m in ModerationMode],
        default=ModerationMode.SENTENCE.value,
        help="sentence: release text chunk by chunk as it passes; buffer: release the reply once complete",
    )
    parser.add_argument("--safety-timeout-s", type=float, default=2.0, help="longest wait on one safety call")
    parser.add_argument(
        "--fail-open",
        action="store_true",
        help="release text unchecked when the safety service is down (audited); default: fail closed",
    )
    limits = StreamLimits()
    group = parser.add_argument_group("Chat stream limits")
    group.add_argument(
        "--max-turns",
        type=int,
        default=limits.max_turns,
        help="most replies (ChatStart + ChatTurns) on one Chat stream; more: RESOURCE_EXHAUSTED",
    )
    group.add_argument(
        "--stream-idle-timeout-s",
        type=float,
        default=limits.idle_timeout_s,
        help="longest wait for the client's next message between replies; then DEADLINE_EXCEEDED",
    )
    group.add_argument(
        "--max-stream-duration-s",
        type=float,
        default=limits.max_duration_s,
        help="longest time one Chat stream stays open, replies included; then DEADLINE_EXCEEDED",
    )
    group.add_argument(
        "--max-queued-turns",
        type=int,
        default=limits.max_queued_turns,
        help="most ChatTurns waiting behind the reply in flight on one stream; more: RESOURCE_EXHAUSTED",
    )
    group = parser.add_argument_group("backend TLS")
    group.add_argument(
        "--backend-ca", type=Path, help="CA that signed the backends' certificates; enables TLS"
    )
    group.add_argument("--backend-cert", type=Path, help="client certificate for mTLS to the backends")
    group.add_argument("--backend-key", type=Path, help="client key for mTLS to the backends")
    group.add_argument("--backend-server-name", help="expected name in the backends' certificates")
    group = parser.add_argument_group("OpenAI-compatible HTTP API (docs/gateway.md)")
    group.add_argument(
        "--http-port", type=int, help="serve /v1/chat/completions etc. on this port (unset: off)"
    )
    group.add_argument("--http-host", help="address of the HTTP port (default: --host)")
    group.add_argument("--http-model", default="llama-2-chat", help="the model id /v1/models lists")
    group.add_argument(
        "--http-keep-alive-s",
        type=float,
        default=75.0,
        help="how long an idle HTTP/1.1 connection stays open (above the clients' pool expiry)",
    )
    add_server_arguments(parser, DEFAULT_PORT)
    add_telemetry_arguments(parser, DEFAULT_METRICS_PORT)
    return parser


def config_from_args(args: argparse.Namespace) -> GatewayConfig:
    if args.safety_timeout_s <= 0:
        raise SystemExit("--safety-timeout-s must be > 0")
    if args.chunk_tokens < 1:
        raise SystemExit("--chunk-tokens must be >= 1")
    if args.max_turns < 1:
        raise SystemExit("--max-turns must be >= 1")
    if args.max_queued_turns < 0:
        raise SystemExit("--max-queued-turns must be >= 0")
    if args.stream_idle_timeout_s <= 0 or args.max_stream_duration_s <= 0:
        raise SystemExit("--stream-idle-timeout-s and --max-stream-duration-s must be > 0")
    if args.api_keys_reload_s <= 0:
        raise SystemExit("--api-keys-reload-s must be > 0")
    if min(args.audit_max_total_mb, args.audit_max_age_h, args.audit_min_free_mb) < 0:
        raise SystemExit("--audit-max-total-mb, --audit-max-age-h and --audit-min-free-mb must be >= 0")
    if args.audit_max_total_mb and args.audit_max_total_mb < 2 * args.audit_max_file_mb:
        raise SystemExit(
            "--audit-max-total-mb must be at least twice --audit-max-file-mb (the open file stays)"
        )
    backend_tls = None
    if args.backend_ca:
        backend_tls = ClientTls(
            args.backend_ca, args.backend_cert, args.backend_key, args.backend_server_name
        )
    elif args.backend_cert or args.backend_key:
        raise SystemExit("--backend-cert/--backend-key (mTLS) need --backend-ca")
    server = server_config_from_args(args)
    if args.max_connection_age_grace_s is None:
        # A connection past its age must not cut a Chat stream before the stream's own limit.
        grace_s = max(server.max_connection_age_grace_s, args.max_stream_duration_s)
        server = dataclasses.replace(server, max_connection_age_grace_s=grace_s)
    http = None
    if args.http_port is not None:
        if not 0 <= args.http_port < 65536 or args.http_keep_alive_s <= 0:
            raise SystemExit("--http-port must be a port number and --http-keep-alive-s > 0")
        # The same certificate (and client CA) as the gRPC port; the same drain time.
        http = HttpConfig(
            args.http_host or server.host,
            args.http_port,
            args.http_model,
            server.grace_s,
            args.http_keep_alive_s,
            server.tls,
        )
    return GatewayConfig(
        server=server,
        pipeline=PipelineConfig(
            moderation=ModerationConfig(ModerationMode(args.moderation), args.chunk_tokens),
            safety_timeout_s=args.safety_timeout_s,
            fail_open=args.fail_open,
            audit_text=args.audit_text,
        ),
        inference_target=args.inference_target,
        safety_target=args.safety_target,
        api_keys_file=args.api_keys,
        audit_dir=args.audit_dir,
        telemetry=telemetry_config_from_args(args, "llamagate-gateway"),
        audit_max_file_bytes=int(args.audit_max_file_mb * 1024 * 1024),
        stream_limits=StreamLimits(
            args.max_turns, args.stream_idle_timeout_s, args.max_stream_duration_s, args.max_queued_turns
        ),
        backend_tls=backend_tls,
        audit_retention=AuditRetention(
            max_total_bytes=int(args.audit_max_total_mb * 1024 * 1024),
            max_age_s=args.audit_max_age_h * 3600.0,
            min_free_bytes=int(args.audit_min_free_mb * 1024 * 1024),
        ),
        audit_export=args.audit_export,
        api_keys_reload_s=args.api_keys_reload_s,
        http=http,
    )
