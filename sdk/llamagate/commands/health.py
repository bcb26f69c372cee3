"""`llamagate health`: ask a service whether it is serving (grpc.health.v1), as probes and scripts do.

Without --service, asks the server as a whole and, on a gateway, each backend as the gateway sees
it (llamagate.v1.InferenceService, llamagate.v1.SafetyService). Exit status 0 when everything asked
is SERVING, 1 otherwise. With --wait, keep asking until it all is or the time runs out (e.g. in a
start-up script).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

from llamagate.client import ApiError, check_health
from llamagate.client.health import backend_health
from llamagate.commands.options import (
    EXIT_ERROR,
    ConnectionConfig,
    add_connection_arguments,
    connection_config_from_args,
)

POLL_INTERVAL_S = 0.5


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "health",
        help="check a llamagate service's grpc.health.v1 status",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--service",
        action="append",
        default=[],
        help="service name to check, e.g. llamagate.v1.ChatService (repeatable; default: the whole server)",
    )
    parser.add_argument("--wait", type=float, default=0.0, help="seconds to keep asking until SERVING")
    add_connection_arguments(parser, api_key=False)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        connection = connection_config_from_args(args, os.environ)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_ERROR
    if args.wait < 0:
        print(f"error: --wait must be >= 0 seconds, got {args.wait}", file=sys.stderr)
        return EXIT_ERROR
    services = args.service or [""]
    timeout = connection.timeout_s or 5.0
    deadline = time.monotonic() + args.wait
    while True:
        statuses = {service: _status(connection.target, service, connection, timeout) for service in services}
        backends = {} if args.service else _backends(connection, timeout)
        healthy = all(status == "SERVING" for status in [*statuses.values(), *backends.values()])
        if healthy or time.monotonic() >= deadline:
            break
        time.sleep(POLL_INTERVAL_S)
    for service, status in statuses.items():
        print(f"{connection.target} {service or '(server)'}: {status}")
    for service, status in backends.items():
        print(f"{connection.target} backend {service}: {status}")
    return 0 if healthy else EXIT_ERROR


def _status(target: str, service: str, connection: ConnectionConfig, timeout: float) -> str:
    try:
        return check_health(target, service, tls=connection.tls, timeout=timeout)
    except ApiError as error:
        return f"{error.code.name} ({error.message})"


def _backends(connection: ConnectionConfig, timeout: float) -> dict[str, str]:
    try:
        return backend_health(connection.target, tls=connection.tls, timeout=timeout)
    except ApiError:
        return {}  # nothing answers: the server line already says why
