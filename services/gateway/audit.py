"""The audit trail: every safety verdict, durable before the response that depends on it.

Sink: append-only JSONL files `audit-NNNNNNNN.jsonl` in one directory. A record is written, flushed
and fsync'ed before `AuditSink.write` returns, so a caller that awaits it before releasing text
never releases anything whose verdict could be lost by a crash (even `kill -9`). Concurrent writers
share one fsync (group commit). Files rotate by size; a file is never rewritten, and a restarted
gateway opens a new file rather than appending after a possibly torn last line.

Retention (`AuditRetention`) keeps the directory from filling its volume: after every rotation, at
start and on a timer, closed files are deleted oldest first while the trail is larger than
`max_total_bytes`, older than `max_age_s`, or the volume has less than `min_free_bytes` left. The
file being written is never deleted. A volume full anyway (shared with something else) makes
`write` raise, and the gateway fails closed: no text without its record.

Export (`AuditExporter`): once a batch is on disk its records are handed to an exporter as well,
JSON lines on stdout for a node's log collector or OpenTelemetry log records over OTLP. Export
is at most once and after the local write; the file stays the record of truth (docs/deploy.md
lists what each path loses when).

The record format and its reader live in llamagate.formats.audit, shared with the clients that read
the trail.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol, TextIO

from llamagate.formats.audit import FILE_PATTERN, AuditCategory, AuditRecord, text_sha256

__all__ = [
    "AuditCategory",
    "AuditExporter",
    "AuditRecord",
    "AuditRetention",
    "AuditSink",
    "OtlpAuditExporter",
    "StdoutAuditExporter",
    "text_sha256",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AuditRetention:
    """Limits on the closed files of the trail; 0 turns a limit off."""

    max_total_bytes: int = 0
    max_age_s: float = 0.0
    min_free_bytes: int = 0
    interval_s: float = 60.0  # how often age and free space are looked at between rotations


class AuditExporter(Protocol):
    """Receives each batch of records after it is on disk; must not block (hand off and return)."""

    def export(self, lines: Sequence[bytes]) -> None: ...

    def shutdown(self) -> None: ...


class StdoutAuditExporter:
    """One JSON record per line on a stream (stdout: the gateway logs to stderr), for a log collector."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream or sys.stdout

    def export(self, lines: Sequence[bytes]) -> None:
        self._stream.write(b"".join(lines).decode())
        self._stream.flush()

    def shutdown(self) -> None:
        self._stream.flush()


class OtlpAuditExporter:
    """OpenTelemetry log records over OTLP/gRPC, batched by the SDK's processor.

    The endpoint comes from the standard OTEL_EXPORTER_OTLP_(LOGS_)ENDPOINT variables unless given.
    Each record is one log record: event name `llamagate.audit`, the record as attributes
    (`audit.<field>`), the JSON line as the body.
    """

    def __init__(self, service_name: str, endpoint: str | None = None, insecure: bool | None = None) -> None:
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
        from opentelemetry.sdk._logs import LoggerProvider
        from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
        from opentelemetry.sdk.resources import Resource

        self._provider = LoggerProvider(resource=Resource.create({"service.name": service_name}))
        self._provider.add_log_record_processor(
            BatchLogRecordProcessor(OTLPLogExporter(endpoint=endpoint, insecure=insecure))
        )
        self._logger = self._provider.get_logger("llamagate.audit")

    def export(self, lines: Sequence[bytes]) -> None:
        from opentelemetry._logs import SeverityNumber

        for line in lines:
            record: dict[str, Any] = json.loads(line)
            attributes = {
                f"audit.{key}": value
                for key, value in record.items()
                if isinstance(value, str | int | float | bool)
            }
            self._logger.emit(
                body=line.decode().rstrip("\n"),
                attributes=attributes,
                event_name="llamagate.audit",
                severity_number=SeverityNumber.INFO,
            )

    def flush(self, timeout_ms: int = 10_000) -> bool:
        return bool(self._provider.force_flush(timeout_ms))

    def shutdown(self) -> None:
        self._provider.shutdown()


def build_exporter(kind: str, service_name: str) -> AuditExporter | None:
    """The exporter `--audit-export` names ("none", "stdout" or "otlp")."""
    if kind == "none":
        return None
    if kind == "stdout":
        return StdoutAuditExporter()
    if kind == "otlp":
        return OtlpAuditExporter(service_name)
    raise ValueError(f"unknown audit export {kind!r}; expected none, stdout or otlp")


class AuditSink:
    """Append-only, fsync'ed, size-rotated JSONL. One instance per process and directory."""

    def __init__(
        self,
        directory: Path,
        *,
        max_file_bytes: int = 64 * 1024 * 1024,
        retention: AuditRetention | None = None,
        exporter: AuditExporter | None = None,
    ) -> None:
        if max_file_bytes <= 0:
            raise ValueError("max_file_bytes must be positive")
        self.retention = retention or AuditRetention()
        if self.retention.max_total_bytes and self.retention.max_total_bytes < 2 * max_file_bytes:
            # The open file alone may reach max_file_bytes and is never deleted.
            raise ValueError("retention max_total_bytes must be at least twice max_file_bytes")
        self.directory = directory
        self.max_file_bytes = max_file_bytes
        self.exporter = exporter
        directory.mkdir(parents=True, exist_ok=True)
        existing = [int(m.group(1)) for p in directory.iterdir() if (m := FILE_PATTERN.match(p.name))]
        self._next_seq = max(existing, default=0) + 1
        self._file: IO[bytes] | None = None
        self._file_seq = 0  # sequence number of the open file; it and later ones are never deleted
        self._file_bytes = 0
        # Guards the file between the flusher thread and close(); writers never touch it directly.
        self._io_lock = threading.Lock()
        self._pending: list[tuple[bytes, asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._apply_retention()  # a restart after a long stop starts within the limits

    async def write(self, record: AuditRecord) -> None:
        """Return once `record` is on disk (write + flush + fsync); raise OSError if it could not be."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append(((record.to_json() + "\n").encode(), future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_pending())
        await asyncio.shield(future)

    async def _flush_pending(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            lines = [line for line, _ in batch]
            try:
                await asyncio.to_thread(self._write_lines, lines)
            except OSError as error:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)
            else:
                for _, future in batch:
                    if not future.done():
                        future.set_result(None)
                if self.exporter is not None:
                    # Off the event loop: a slow stdout pipe must not stall the replies.
                    await asyncio.to_thread(self._export, lines)

    def _export(self, lines: list[bytes]) -> None:
        assert self.exporter is not None
        try:
            self.exporter.export(lines)
        except Exception:
            # The records are on disk already: a broken exporter must not fail the replies.
            log.exception("audit export failed for %d records (they are in the local trail)", len(lines))

    def _write_lines(self, lines: list[bytes]) -> None:
        with self._io_lock:
            for line in lines:
                if self._file is None or (
                    self._file_bytes > 0 and self._file_bytes + len(line) > self.max_file_bytes
                ):
                    self._rotate()
                assert self._file is not None
                self._file.write(line)
                self._file_bytes += len(line)
            assert self._file is not None
            self._file.flush()
            os.fsync(self._file.fileno())

    def _rotate(self) -> None:
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
        self._file_seq = self._next_seq
        path = self.directory / f"audit-{self._next_seq:08d}.jsonl"
        self._next_seq += 1
        # "x": a file is created once and only ever appended to.
        self._file = path.open("xb", buffering=0)
        self._file_bytes = 0
        # The new directory entry must survive a crash too.
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        self._apply_retention()

    def enforce_retention(self) -> list[Path]:
        """Delete what the retention limits say must go now; the deleted paths, oldest first."""
        with self._io_lock:
            return self._apply_retention()

    def _apply_retention(self) -> list[Path]:
        limits = self.retention
        if not (limits.max_total_bytes or limits.max_age_s or limits.min_free_bytes):
            return []
        files: list[tuple[int, Path, os.stat_result]] = []
        for path in self.directory.iterdir():
            match = FILE_PATTERN.match(path.name)
            if match:
                with contextlib.suppress(FileNotFoundError):
                    files.append((int(match.group(1)), path, path.stat()))
        files.sort()
        # The open file (and anything newer) is never a candidate; it may still grow to
        # max_file_bytes, so the closed files get what is left of max_total_bytes.
        open_seq = self._file_seq if self._file is not None else self._next_seq
        closed = [(seq, path, st) for seq, path, st in files if seq < open_seq]
        total = sum(st.st_size for _, _, st in closed)
        budget = limits.max_total_bytes - self.max_file_bytes
        now = time.time()
        deleted: list[Path] = []
        for _, path, st in closed:
            too_big = bool(limits.max_total_bytes) and total > budget
            too_old = bool(limits.max_age_s) and now - st.st_mtime > limits.max_age_s
            too_full = bool(limits.min_free_bytes) and self._free_bytes() < limits.min_free_bytes
            if not (too_big or too_old or too_full):
                break  # in write order: the later files are newer, and the total is within the budget
            path.unlink(missing_ok=True)
            total -= st.st_size
            deleted.append(path)
        if deleted:
            log.info(
                "audit retention deleted %d files (%s .. %s); %d bytes left in closed files",
                len(deleted),
                deleted[0].name,
                deleted[-1].name,
                total,
            )
        return deleted

    def _free_bytes(self) -> int:
        st = os.statvfs(self.directory)
        return st.f_bavail * st.f_frsize

    async def run_retention(self) -> None:
        """Apply the age and free-space limits on a timer (rotation alone would wait for traffic)."""
        while True:
            await asyncio.sleep(self.retention.interval_s)
            try:
                await asyncio.to_thread(self.enforce_retention)
            except OSError:
                log.exception("audit retention could not run")

    async def close(self) -> None:
        if self._flusher is not None:
            with contextlib.suppress(Exception):
                await self._flusher
        with self._io_lock:
            if self._file is not None:
                self._file.close()
                self._file = None
        if self.exporter is not None:
            # Flushes what is queued; may wait out the export timeout while the collector is down.
            await asyncio.to_thread(self.exporter.shutdown)
