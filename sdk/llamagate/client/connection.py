"""Channels to the gateway: TLS / mTLS credentials, the API key metadata, channel options."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from llamagate.client.version import __version__
from llamagate.v1 import chat_service_pb2 as chat_pb

ChannelOptions = Sequence[tuple[str, str | int]]
Metadata = tuple[tuple[str, str], ...]
MAX_RECONNECT_BACKOFF_MS = 5000


@dataclass(frozen=True)
class TlsConfig:
    """Connect over TLS.

    `ca_file`: the CA that signed the gateway's certificate (None: the system's trusted roots).
    `cert_file` + `key_file`: this client's certificate and key, for a gateway that requires mTLS.
    `server_name`: the name to verify the certificate against when it differs from the target host.
    """

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    server_name: str | None = None

    def __post_init__(self) -> None:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("mTLS needs both cert_file and key_file (or neither)")

    def credentials(self) -> grpc.ChannelCredentials:
        def read(path: Path | None) -> bytes | None:
            return Path(path).read_bytes() if path is not None else None

        return grpc.ssl_channel_credentials(
            root_certificates=read(self.ca_file),
            private_key=read(self.key_file),
            certificate_chain=read(self.cert_file),
        )


@dataclass(frozen=True)
class Endpoint:
    """A ChatService stub (on a blocking or a grpc.aio channel) and the metadata every call carries."""

    stub: Any
    metadata: Metadata

    def complete(self, request: chat_pb.CompleteRequest, timeout_s: float | None) -> Any:
        """Start a Complete call; `timeout_s` is its gRPC deadline."""
        return self.stub.Complete(request, metadata=self.metadata, timeout=timeout_s)


def auth_metadata(api_key: str | None) -> Metadata:
    """The `authorization: Bearer <key>` metadata every ChatService call carries."""
    if api_key is None:
        return ()
    if not api_key.strip():
        raise ValueError("api_key is empty")
    return (("authorization", f"Bearer {api_key.strip()}"),)


def channel_options(tls: TlsConfig | None, extra: ChannelOptions = ()) -> list[tuple[str, str | int]]:
    options: list[tuple[str, str | int]] = [
        ("grpc.primary_user_agent", f"llamagate-python/{__version__}"),
        # gRPC's reconnect backoff grows to 120 s; capped here so that a restarted gateway is found
        # again within seconds, while the SDK's own retries are still waiting for it.
        ("grpc.max_reconnect_backoff_ms", MAX_RECONNECT_BACKOFF_MS),
    ]
    if tls is not None and tls.server_name:
        options.append(("grpc.ssl_target_name_override", tls.server_name))
    options.extend(extra)
    return options


def open_channel(target: str, tls: TlsConfig | None, extra: ChannelOptions = ()) -> grpc.Channel:
    options = channel_options(tls, extra)
    if tls is None:
        return grpc.insecure_channel(target, options=options)
    return grpc.secure_channel(target, tls.credentials(), options=options)


def open_aio_channel(target: str, tls: TlsConfig | None, extra: ChannelOptions = ()) -> grpc.aio.Channel:
    options = channel_options(tls, extra)
    if tls is None:
        return grpc.aio.insecure_channel(target, options=options)
    return grpc.aio.secure_channel(target, tls.credentials(), options=options)
