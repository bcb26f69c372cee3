"""The audit trail: every safety verdict, durable before the response that depends on it.

Sink: append-only JSONL files `audit-NNNNNNNN.jsonl` in one directory. A record is written, flushed
and fsync'ed before `AuditSink.write` returns, so a caller that awaits it before releasing text
never releases anything whose verdict could be lost by a crash (even `kill -9`). Concurrent writers
share one fsync (group commit). Files rotate by size; a file is never rewritten, and a restarted
gateway opens a new file rather than appending after a possibly torn last line.

The record format and its reader live in llamagate.formats.audit, shared with the clients that read
the trail.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from pathlib import Path
from typing import IO

from llamagate.formats.audit import FILE_PATTERN, AuditCategory, AuditRecord, text_sha256

__all__ = ["AuditCategory", "AuditRecord", "AuditSink", "text_sha256"]


class AuditSink:
    """Append-only, fsync'ed, size-rotated JSONL. One instance per process and directory."""

    def __init__(self, directory: Path, *, max_file_bytes: int = 64 * 1024 * 1024) -> None:
        if max_file_bytes <= 0:
            raise ValueError("max_file_bytes must be positive")
        self.directory = directory
        self.max_file_bytes = max_file_bytes
        directory.mkdir(parents=True, exist_ok=True)
        existing = [int(m.group(1)) for p in directory.iterdir() if (m := FILE_PATTERN.match(p.name))]
        self._next_seq = max(existing, default=0) + 1
        self._file: IO[bytes] | None = None
        self._file_bytes = 0
        # Guards the file between the flusher thread and close(); writers never touch it directly.
        self._io_lock = threading.Lock()
        self._pending: list[tuple[bytes, asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None

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
            try:
                await asyncio.to_thread(self._write_lines, [line for line, _ in batch])
            except OSError as error:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)
            else:
                for _, future in batch:
                    if not future.done():
                        future.set_result(None)

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

    async def close(self) -> None:
        if self._flusher is not None:
            with contextlib.suppress(Exception):
                await self._flusher
        with self._io_lock:
            if self._file is not None:
                self._file.close()
                self._file = None
