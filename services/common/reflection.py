"""Server reflection under both of its names, so every client finds the services.

grpcio-reflection serves `grpc.reflection.v1alpha.ServerReflection` only, while newer grpcurl,
Postman and grpcui ask `grpc.reflection.v1.ServerReflection` first. The v1 messages are the
v1alpha ones under a new package name (same fields, same numbers), so one servicer answers both:
the v1 method is a generic handler that (de)serializes with the v1alpha message classes.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc
from grpc_reflection.v1alpha._async import ReflectionServicer

V1ALPHA_SERVICE_NAME: str = reflection.SERVICE_NAME
V1_SERVICE_NAME = "grpc.reflection.v1.ServerReflection"


def enable_reflection(service_names: Sequence[str], server: grpc.aio.Server) -> None:
    """Serve reflection v1 and v1alpha on `server`, listing `service_names` and both of its own."""
    servicer = ReflectionServicer([*service_names, V1ALPHA_SERVICE_NAME, V1_SERVICE_NAME])
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
    v1 = grpc.method_handlers_generic_handler(
        V1_SERVICE_NAME,
        {
            "ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
                servicer.ServerReflectionInfo,
                request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
                response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
            )
        },
    )
    server.add_generic_rpc_handlers((v1,))
