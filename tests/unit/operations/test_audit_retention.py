"""The audit trail stays within its volume: size, age and free-space retention delete closed files
oldest first and never the file being written; exporters see each record once it is on disk."""

from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path

import pytest

from llamagate.formats.audit import audit_files, read_records
from services.gateway.audit import AuditRecord, AuditRetention, AuditSink, StdoutAuditExporter

FILE_BYTES = 2_000


def record(n: int) -> AuditRecord:
    return AuditRecord(
        request_id=f"req-{n:06d}",
        tenant="acme",
        direction="output",
        stage="chunk",
        verdict="safe",
        categories=[],
        classifier_id="test",
        classifier_version="1",
        text_sha256="0" * 64,
        chunk_index=n,
    )


def trail_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in audit_files(directory))


async def test_size_retention_keeps_the_trail_under_its_limit_and_the_newest_records(tmp_path: Path) -> None:
    limit = 5 * FILE_BYTES
    sink = AuditSink(tmp_path, max_file_bytes=FILE_BYTES, retention=AuditRetention(max_total_bytes=limit))
    largest = 0
    for n in range(400):  # ~80 KB of records: many times the limit
        await sink.write(record(n))
        largest = max(largest, trail_bytes(tmp_path))
    await sink.close()
    assert largest <= limit, f"the trail reached {largest} bytes, over its {limit}-byte limit"
    kept = [r["chunk_index"] for r in read_records(tmp_path)]
    # What is left is an unbroken run ending with the last record written: only the oldest went.
    assert kept == list(range(kept[0], 400))
    assert kept[0] > 0
    assert trail_bytes(tmp_path) > limit - 2 * FILE_BYTES  # deleted only what it had to


async def test_size_retention_never_deletes_the_open_file(tmp_path: Path) -> None:
    sink = AuditSink(
        tmp_path, max_file_bytes=FILE_BYTES, retention=AuditRetention(max_total_bytes=2 * FILE_BYTES)
    )
    for n in range(100):
        await sink.write(record(n))
        files = audit_files(tmp_path)
        # The file being written is always there, and holds the record just acknowledged.
        assert files, "the open file was deleted"
        last = files[-1].read_text().splitlines()[-1]
        assert json.loads(last)["chunk_index"] == n
    await sink.close()


async def test_age_retention_deletes_old_closed_files_and_keeps_the_open_one(tmp_path: Path) -> None:
    first = AuditSink(tmp_path, max_file_bytes=FILE_BYTES)
    for n in range(60):
        await first.write(record(n))
    await first.close()
    old_files = audit_files(tmp_path)
    assert len(old_files) >= 3
    two_days_ago = time.time() - 2 * 86400
    for path in old_files[:-1]:
        os.utime(path, (two_days_ago, two_days_ago))

    # A restart applies the limits at once: the old files go, the recent one stays.
    sink = AuditSink(tmp_path, max_file_bytes=FILE_BYTES, retention=AuditRetention(max_age_s=86400))
    assert audit_files(tmp_path) == old_files[-1:]
    await sink.write(record(1000))
    open_file = audit_files(tmp_path)[-1]
    # Even when the open file itself looks old, it is not a candidate.
    os.utime(open_file, (two_days_ago, two_days_ago))
    os.utime(old_files[-1], (two_days_ago, two_days_ago))
    assert sink.enforce_retention() == [old_files[-1]]
    assert audit_files(tmp_path) == [open_file]
    await sink.write(record(1001))
    await sink.close()
    assert [r["chunk_index"] for r in read_records(tmp_path)] == [1000, 1001]


async def test_free_space_retention_deletes_closed_files_but_never_the_open_one(tmp_path: Path) -> None:
    unreachable = os.statvfs(tmp_path).f_blocks * os.statvfs(tmp_path).f_frsize * 2  # more than the disk
    sink = AuditSink(tmp_path, max_file_bytes=FILE_BYTES)
    for n in range(40):
        await sink.write(record(n))
    assert len(audit_files(tmp_path)) >= 3
    sink.retention = AuditRetention(min_free_bytes=unreachable)
    sink.enforce_retention()
    (left,) = audit_files(tmp_path)
    await sink.write(record(40))
    await sink.close()
    assert left.exists() and [r["chunk_index"] for r in read_records(tmp_path)][-1] == 40


def test_a_total_limit_below_two_files_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="twice"):
        AuditSink(tmp_path, max_file_bytes=FILE_BYTES, retention=AuditRetention(max_total_bytes=FILE_BYTES))


async def test_stdout_export_carries_every_record_after_it_is_on_disk(tmp_path: Path) -> None:
    stream = io.StringIO()
    sink = AuditSink(tmp_path, max_file_bytes=FILE_BYTES, exporter=StdoutAuditExporter(stream))
    for n in range(30):
        await sink.write(record(n))
    await sink.close()
    shipped = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert shipped == list(read_records(tmp_path))
    assert [r["chunk_index"] for r in shipped] == list(range(30))
