"""Ask a llamagate service whether it is serving (the standard grpc.health.v1 protocol)."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from llamagate.client.connection import TlsConfig, open_channel
from llamagate.client.errors import error_from_rpc


def check_health(
    target: str, service: str = "", *, tls: TlsConfig | None = None, timeout: float = 5.0
) -> str:
    """The serving status of `service` ("" = the whole server): "SERVING", "NOT_SERVING", ...

    Raises the ApiError of the call, e.g. NotFoundError for a service the server does not know,
    UnavailableError when nothing answers at `target`.
    """
    with open_channel(target, tls) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError as error:
            raise error_from_rpc(error) from None
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))
