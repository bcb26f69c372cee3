"""The google.rpc details of a failed call, decoded as a client would (grpcio-status)."""

from __future__ import annotations

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from services.common.errors import ERROR_DOMAIN


def details_of(error: grpc.RpcError) -> list[object]:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None, f"{error.code()} carries no google.rpc.Status"
    decoded: list[object] = []
    for packed in status.details:
        for kind in (error_details_pb2.BadRequest, error_details_pb2.ErrorInfo, error_details_pb2.RetryInfo):
            if packed.Is(kind.DESCRIPTOR):
                message = kind()
                packed.Unpack(message)
                decoded.append(message)
    return decoded


def violations_of(error: grpc.RpcError) -> list[tuple[str, str]]:
    """(field, description) of every BadRequest field violation."""
    return [
        (v.field, v.description)
        for d in details_of(error)
        if isinstance(d, error_details_pb2.BadRequest)
        for v in d.field_violations
    ]


def error_info_of(error: grpc.RpcError) -> error_details_pb2.ErrorInfo:
    infos = [d for d in details_of(error) if isinstance(d, error_details_pb2.ErrorInfo)]
    assert len(infos) == 1, f"{error.code()} carries {len(infos)} ErrorInfo details"
    assert infos[0].domain == ERROR_DOMAIN
    return infos[0]
