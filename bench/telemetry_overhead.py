"""Cost of the telemetry layer on one gRPC hop: unary and bidi-streaming calls over loopback,
with and without the OpenTelemetry interceptors (spans recorded in memory, metrics on).

    .venv/bin/python -m bench.telemetry_overhead --calls 2000
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import AsyncIterator

import grpc
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from llamagate.v1 import safety_service_pb2 as safety_pb
from llamagate.v1 import safety_service_pb2_grpc as safety_grpc
from llamagate.v1 import types_pb2 as types_pb
from services.common.server import GrpcServer, ServerConfig
from services.common.telemetry import Telemetry, TelemetryConfig, setup_telemetry

VERDICT = types_pb.SafetyVerdict(safe=True, direction=types_pb.DIRECTION_OUTPUT)


class EchoSafety(safety_grpc.SafetyServiceServicer):
    async def Check(
        self, request: safety_pb.CheckRequest, context: grpc.aio.ServicerContext
    ) -> safety_pb.CheckResponse:
        return safety_pb.CheckResponse(verdicts=[VERDICT for _ in request.items])

    async def CheckStream(
        self, requests: AsyncIterator[safety_pb.CheckStreamRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[safety_pb.CheckStreamResponse]:
        index = 0
        async for request in requests:
            if request.WhichOneof("action") == "chunk":
                yield safety_pb.CheckStreamResponse(chunk_index=index, verdict=VERDICT)
                index += 1

    async def GetPolicy(
        self, request: safety_pb.GetPolicyRequest, context: grpc.aio.ServicerContext
    ) -> safety_pb.GetPolicyResponse:
        return safety_pb.GetPolicyResponse()


async def measure(telemetry: Telemetry | None, calls: int, chunks: int) -> tuple[list[float], list[float]]:
    interceptors = telemetry.server_interceptors() if telemetry else ()
    server = GrpcServer(
        ServerConfig(port=0, grace_s=1.0, extra_interceptors=interceptors), ["llamagate.v1.SafetyService"]
    )
    safety_grpc.add_SafetyServiceServicer_to_server(EchoSafety(), server.server)
    await server.start()
    client_interceptors = telemetry.client_interceptors() if telemetry else None
    item = safety_pb.CheckItem(
        dialog=types_pb.Dialog(messages=[types_pb.Message(role=types_pb.ROLE_USER, content="hi")]),
        direction=types_pb.DIRECTION_INPUT,
    )
    unary, stream = [], []
    async with grpc.aio.insecure_channel(
        f"127.0.0.1:{server.port}", interceptors=client_interceptors
    ) as channel:
        stub = safety_grpc.SafetyServiceStub(channel)
        for _ in range(50):  # warm-up
            await stub.Check(safety_pb.CheckRequest(items=[item]))
        for _ in range(calls):
            start = time.perf_counter()
            await stub.Check(safety_pb.CheckRequest(items=[item]))
            unary.append(time.perf_counter() - start)
        for _ in range(max(calls // 10, 1)):
            start = time.perf_counter()
            call = stub.CheckStream()
            await call.write(safety_pb.CheckStreamRequest(context=item.dialog))
            for _ in range(chunks):
                await call.write(safety_pb.CheckStreamRequest(chunk="more text"))
                await call.read()
            await call.done_writing()
            while await call.read() != grpc.aio.EOF:
                pass
            stream.append(time.perf_counter() - start)
    await server.stop()
    return unary, stream


def summary(samples: list[float]) -> str:
    ordered = sorted(samples)
    p50, p99 = ordered[len(ordered) // 2], ordered[int(len(ordered) * 0.99)]
    return f"mean {statistics.mean(samples) * 1e6:7.0f} us  p50 {p50 * 1e6:7.0f} us  p99 {p99 * 1e6:7.0f} us"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--chunks", type=int, default=16, help="chunks per CheckStream call")
    args = parser.parse_args()
    exporter = InMemorySpanExporter()
    telemetry = setup_telemetry(TelemetryConfig("bench"), span_exporters=[exporter])
    for label, value in (("without telemetry", None), ("with telemetry", telemetry)):
        unary, stream = await measure(value, args.calls, args.chunks)
        print(f"{label:18s} unary Check      {summary(unary)}  ({len(unary)} calls)")
        print(f"{label:18s} CheckStream x{args.chunks:<3d} {summary(stream)}  ({len(stream)} calls)")
    print(f"spans recorded: {len(exporter.get_finished_spans())}")
    telemetry.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
