"""TLS and mTLS credentials from files, for servers and for the channels between services."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc


@dataclass(frozen=True)
class ServerTls:
    """Server certificate; with `client_ca_file` set, clients must present a certificate it signed (mTLS)."""

    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None


@dataclass(frozen=True)
class ClientTls:
    """How a client verifies the server (`ca_file`) and, for mTLS, proves who it is."""

    ca_file: Path
    cert_file: Path | None = None
    key_file: Path | None = None
    server_name_override: str | None = None


def server_credentials(tls: ServerTls) -> grpc.ServerCredentials:
    pair = [(tls.key_file.read_bytes(), tls.cert_file.read_bytes())]
    if tls.client_ca_file is None:
        return grpc.ssl_server_credentials(pair)
    return grpc.ssl_server_credentials(
        pair, root_certificates=tls.client_ca_file.read_bytes(), require_client_auth=True
    )


def channel_credentials(tls: ClientTls) -> grpc.ChannelCredentials:
    if (tls.cert_file is None) != (tls.key_file is None):
        raise ValueError("client TLS needs both a certificate and a key file for mTLS, or neither")
    return grpc.ssl_channel_credentials(
        root_certificates=tls.ca_file.read_bytes(),
        private_key=tls.key_file.read_bytes() if tls.key_file else None,
        certificate_chain=tls.cert_file.read_bytes() if tls.cert_file else None,
    )


def channel_options(tls: ClientTls | None) -> list[tuple[str, str]]:
    if tls is not None and tls.server_name_override:
        return [("grpc.ssl_target_name_override", tls.server_name_override)]
    return []
