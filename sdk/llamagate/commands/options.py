"""Command-line options the client subcommands share: where the gateway is, how to trust it, sampling.

Flags win over the environment (LLAMAGATE_TARGET, LLAMAGATE_API_KEY); both are read once, here,
into typed config that the commands pass down.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from llamagate.client import ApiError, ChatClient, Sampling, TlsConfig, UnauthenticatedError, UnavailableError

DEFAULT_TARGET = "localhost:50051"
# Exit codes shared by the client commands.
EXIT_ERROR = 1
EXIT_REFUSED = 3
EXIT_INTERRUPTED = 130


@dataclass(frozen=True)
class ConnectionConfig:
    target: str
    api_key: str | None
    tls: TlsConfig | None
    timeout_s: float | None

    def client(self) -> ChatClient:
        return ChatClient(self.target, api_key=self.api_key, tls=self.tls, timeout=self.timeout_s)


def add_connection_arguments(parser: argparse.ArgumentParser, *, api_key: bool = True) -> None:
    group = parser.add_argument_group("connection")
    group.add_argument(
        "--target", help=f"gateway host:port (default: $LLAMAGATE_TARGET, else {DEFAULT_TARGET})"
    )
    if api_key:
        group.add_argument("--api-key", help="API key (default: $LLAMAGATE_API_KEY)")
    group.add_argument("--tls", action="store_true", help="use TLS, trusting the system's CA roots")
    group.add_argument("--ca-file", type=Path, help="use TLS, trusting this CA certificate (PEM)")
    group.add_argument("--cert-file", type=Path, help="client certificate (PEM) for mTLS")
    group.add_argument("--key-file", type=Path, help="client private key (PEM) for mTLS")
    group.add_argument("--server-name", help="name to verify the server certificate against")
    group.add_argument("--timeout", type=float, help="seconds one reply may take (default: no limit)")


def connection_config_from_args(args: argparse.Namespace, environ: Mapping[str, str]) -> ConnectionConfig:
    """Raises ValueError with what to fix for inconsistent TLS flags."""
    target = args.target or environ.get("LLAMAGATE_TARGET") or DEFAULT_TARGET
    api_key = getattr(args, "api_key", None) or environ.get("LLAMAGATE_API_KEY") or None
    wants_tls = args.tls or args.ca_file or args.cert_file or args.key_file or args.server_name
    tls = None
    if wants_tls:
        if (args.cert_file is None) != (args.key_file is None):
            raise ValueError("mTLS needs both --cert-file and --key-file")
        tls = TlsConfig(
            ca_file=args.ca_file,
            cert_file=args.cert_file,
            key_file=args.key_file,
            server_name=args.server_name,
        )
    timeout = getattr(args, "timeout", None)
    if timeout is not None and timeout <= 0:
        raise ValueError(f"--timeout must be > 0 seconds, got {timeout}")
    return ConnectionConfig(target, api_key, tls, timeout)


def add_sampling_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("sampling (unset: the server's defaults)")
    group.add_argument("--temperature", type=float, help="0 = greedy (server default 0.6)")
    group.add_argument("--top-p", type=float, help="nucleus threshold in (0, 1] (server default 0.9)")
    group.add_argument("--max-gen-len", type=int, help="most tokens per reply")
    group.add_argument("--seed", type=int, help="seed for reproducible sampling")
    group.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    group.add_argument(
        "--ignore-eos", action="store_true", help="generate past end-of-sequence up to --max-gen-len"
    )


def sampling_from_args(args: argparse.Namespace) -> Sampling:
    return Sampling(
        temperature=args.temperature,
        top_p=args.top_p,
        max_gen_len=args.max_gen_len,
        seed=args.seed,
        stop=tuple(args.stop),
        ignore_eos=args.ignore_eos,
    )


def report_error(error: ApiError, config: ConnectionConfig, err: TextIO = sys.stderr) -> int:
    """Print a failed call as one actionable line; returns the exit code."""
    hint = ""
    if isinstance(error, UnauthenticatedError):
        hint = " (pass --api-key or set LLAMAGATE_API_KEY)"
    elif isinstance(error, UnavailableError):
        hint = f" (is the gateway running at {config.target}? check with `llamagate health`)"
    print(f"error: {error}{hint}", file=err)
    for violation in error.field_violations:
        print(f"  {violation.field}: {violation.description}", file=err)
    if error.retry_after is not None:
        print(f"  retry after {error.retry_after:.1f}s", file=err)
    return EXIT_ERROR
