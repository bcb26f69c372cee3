"""The audit sink: durable before write() returns, append-only, rotated by size; the reader's filters."""

import asyncio
import hashlib
import os
from datetime import UTC, datetime, timedelta

import pytest

from llamagate.formats.audit import AuditCategory, AuditFilter, AuditRecord, audit_files, read_records
from services.gateway.audit import AuditSink


def record(i: int, **overrides) -> AuditRecord:
    fields = dict(
        request_id=f"r{i}",
        tenant="acme" if i % 2 == 0 else "umbrella",
        direction="input" if i % 3 == 0 else "output",
        stage="input" if i % 3 == 0 else "chunk",
        verdict="unsafe" if i % 5 == 0 else "safe",
        categories=[AuditCategory("O1", "Violence and Hate", 0.9 if i % 5 == 0 else 0.1, i % 5 == 0)],
        classifier_id="embedded-minilm",
        classifier_version="v1",
        text_sha256=hashlib.sha256(str(i).encode()).hexdigest(),
    )
    fields.update(overrides)
    return AuditRecord(**fields)


async def test_write_returns_after_the_record_is_fsynced(tmp_path, monkeypatch):
    synced: list[bytes] = []
    real_fsync = os.fsync

    def spying_fsync(fd: int) -> None:
        real_fsync(fd)
        path = os.readlink(f"/proc/self/fd/{fd}")
        if path.endswith(".jsonl"):
            with open(path, "rb") as f:
                synced.append(f.read())

    monkeypatch.setattr(os, "fsync", spying_fsync)
    sink = AuditSink(tmp_path)
    await sink.write(record(1, text="hello"))
    # By the time write() returned, an fsync had covered the record.
    assert synced and b'"request_id": "r1"' in synced[-1]
    await sink.close()
    [only] = list(read_records(tmp_path))
    assert only["text"] == "hello" and only["categories"][0]["code"] == "O1"


async def test_concurrent_writers_share_fsyncs_and_keep_every_record(tmp_path, monkeypatch):
    calls = 0
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:
        nonlocal calls
        calls += 1
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counting_fsync)
    sink = AuditSink(tmp_path)
    await asyncio.gather(*(sink.write(record(i)) for i in range(200)))
    await sink.close()
    assert sorted(r["request_id"] for r in read_records(tmp_path)) == sorted(f"r{i}" for i in range(200))
    assert calls < 100  # group commit: far fewer fsyncs than records


async def test_files_rotate_by_size_and_are_never_rewritten(tmp_path):
    sink = AuditSink(tmp_path, max_file_bytes=2000)
    for i in range(40):
        await sink.write(record(i))
    await sink.close()
    files = audit_files(tmp_path)
    assert len(files) > 3
    assert all(f.stat().st_size <= 2000 for f in files)
    before = {f: f.read_bytes() for f in files}

    # A restarted gateway starts a new file and leaves the old ones untouched.
    sink = AuditSink(tmp_path, max_file_bytes=2000)
    await sink.write(record(99))
    await sink.close()
    assert all(f.read_bytes() == content for f, content in before.items())
    assert audit_files(tmp_path)[-1] not in before
    assert [r["request_id"] for r in read_records(tmp_path)] == [f"r{i}" for i in range(40)] + ["r99"]


async def test_reader_skips_a_torn_tail_but_not_corruption(tmp_path):
    sink = AuditSink(tmp_path)
    await sink.write(record(1))
    await sink.close()
    path = audit_files(tmp_path)[-1]
    with path.open("ab") as f:
        f.write(b'{"request_id": "r2", "ten')  # kill -9 in the middle of a write
    assert [r["request_id"] for r in read_records(tmp_path)] == ["r1"]
    with path.open("ab") as f:
        f.write(b"\n" + record(3).to_json().encode() + b"\n")
    with pytest.raises(ValueError, match="not a JSON audit record"):
        list(read_records(tmp_path))


async def test_filters(tmp_path):
    sink = AuditSink(tmp_path)
    for i in range(30):
        await sink.write(record(i))
    late = record(100, time=(datetime.now(UTC) + timedelta(hours=1)).isoformat())
    await sink.write(late)
    await sink.close()

    def ids(**kw):
        return [r["request_id"] for r in read_records(tmp_path, AuditFilter(**kw))]

    assert ids(request_id="r7") == ["r7"]
    assert set(ids(tenant="umbrella")) == {f"r{i}" for i in range(30) if i % 2}
    assert set(ids(direction="input")) == {f"r{i}" for i in range(30) if i % 3 == 0}
    assert set(ids(unsafe_only=True)) == {f"r{i}" for i in range(30) if i % 5 == 0} | {"r100"}
    assert ids(since=datetime.now(UTC) + timedelta(minutes=30)) == ["r100"]
    assert "r100" not in ids(until=datetime.now(UTC) + timedelta(minutes=30))
    assert ids(tenant="acme", unsafe_only=True, direction="input") == ["r0"]
