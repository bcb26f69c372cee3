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


# What a gateway publishes in its own health service about its backends (`llamagate health`).
GATEWAY_BACKENDS = ("llamagate.v1.InferenceService", "llamagate.v1.SafetyService")


def backend_health(target: str, *, tls: TlsConfig | None = None, timeout: float = 5.0) -> dict[str, str]:
    """A gateway's view of each backend: {service name: "SERVING" | "NOT_SERVING" | ...}.

    Empty when `target` publishes none of them (a backend itself, not a gateway).
    """
    statuses: dict[str, str] = {}
    with open_channel(target, tls) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for name in GATEWAY_BACKENDS:
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=timeout)
            except grpc.RpcError as error:
                if error.code() == grpc.StatusCode.NOT_FOUND:
                    continue
                raise error_from_rpc(error) from None
            statuses[name] = str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))
    return statuses
