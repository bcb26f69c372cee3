"""Audit records shipped as OpenTelemetry log records over OTLP/gRPC to a collector on loopback; with
the collector gone the trail on disk is still complete (export is best effort, the file is the truth)."""

from __future__ import annotations

import threading
from concurrent import futures
from pathlib import Path

import grpc
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc

from llamagate.formats.audit import audit_files, read_records
from services.gateway.audit import AuditRecord, AuditSink, OtlpAuditExporter
from tests.support.processes import free_port


class LogsCollector(logs_service_pb2_grpc.LogsServiceServicer):
    def __init__(self) -> None:
        self.bodies: list[str] = []
        self.attributes: list[dict[str, object]] = []
        self.services: set[str] = set()
        self.lock = threading.Lock()

    def Export(self, request, context):  # type: ignore[no-untyped-def]
        with self.lock:
            for resource_logs in request.resource_logs:
                for attr in resource_logs.resource.attributes:
                    if attr.key == "service.name":
                        self.services.add(attr.value.string_value)
                for scope_logs in resource_logs.scope_logs:
                    for log_record in scope_logs.log_records:
                        self.bodies.append(log_record.body.string_value)
                        self.attributes.append(
                            {a.key: a.value.string_value or a.value.int_value for a in log_record.attributes}
                        )
        return logs_service_pb2.ExportLogsServiceResponse()


def record(n: int) -> AuditRecord:
    return AuditRecord(
        request_id=f"req-{n}",
        tenant="acme",
        direction="input",
        stage="input",
        verdict="unsafe" if n % 2 else "safe",
        categories=[],
        classifier_id="test",
        classifier_version="1",
        text_sha256="0" * 64,
    )


async def test_records_reach_an_otlp_collector(tmp_path: Path) -> None:
    collector = LogsCollector()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    logs_service_pb2_grpc.add_LogsServiceServicer_to_server(collector, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        exporter = OtlpAuditExporter("llamagate-gateway", endpoint=f"http://127.0.0.1:{port}", insecure=True)
        sink = AuditSink(tmp_path, exporter=exporter)
        for n in range(5):
            await sink.write(record(n))
        assert exporter.flush(), "the collector did not take the records"
        await sink.close()
    finally:
        server.stop(None)
    on_disk = list(read_records(tmp_path))
    assert [r["request_id"] for r in on_disk] == [f"req-{n}" for n in range(5)]
    assert collector.services == {"llamagate-gateway"}
    # The body is the record's line in the trail, byte for byte.
    lines = [line for f in audit_files(tmp_path) for line in f.read_text().splitlines()]
    assert sorted(collector.bodies) == sorted(lines)
    shipped = {a["audit.request_id"]: a for a in collector.attributes}
    assert set(shipped) == {f"req-{n}" for n in range(5)}
    assert shipped["req-1"]["audit.verdict"] == "unsafe" and shipped["req-2"]["audit.verdict"] == "safe"


async def test_writes_succeed_and_stay_on_disk_while_the_collector_is_down(tmp_path: Path) -> None:
    exporter = OtlpAuditExporter(
        "llamagate-gateway", endpoint=f"http://127.0.0.1:{free_port()}", insecure=True
    )
    sink = AuditSink(tmp_path, exporter=exporter)
    for n in range(5):
        await sink.write(record(n))  # returns once on disk, whatever the exporter does
    await sink.close()
    assert [r["request_id"] for r in read_records(tmp_path)] == [f"req-{n}" for n in range(5)]
