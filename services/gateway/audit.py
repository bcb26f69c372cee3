"""The audit trail: every safety verdict, durable before the response that depends on it.

Sink: append-only JSONL files `audit-NNNNNNNN.jsonl` in one directory. A record is written, flushed
and fsync'ed before `AuditSink.write` returns, so a caller that awaits it before releasing text
never releases anything whose verdict could be lost by a crash (even `kill -9`). Concurrent writers
share one fsync (group commit). Files rotate by size; a file is never rewritten, and a restarted
gateway opens a new file rather than appending after a possibly torn last line.

Reader: `read_records` yields the records of a directory in write order with filters; it skips a
torn final line (a crash in the middle of a write whose caller was never answered).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

FILE_PATTERN = re.compile(r"^audit-(\d{8})\.jsonl$")


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class AuditCategory:
    code: str
    name: str
    score: float
    violated: bool


@dataclass(frozen=True)
class AuditRecord:
    """One verdict. `verdict` is "safe", "unsafe", or "unchecked" (fail-open: the check could not run)."""

    request_id: str
    tenant: str
    direction: str  # "input" | "output"
    stage: str  # "input" | "chunk" | "final"
    verdict: str
    categories: list[AuditCategory]
    classifier_id: str
    classifier_version: str
    text_sha256: str
    time: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="microseconds"))
    chunk_index: int | None = None
    # How the classifier read the text (absent when no verdict came back): tokens read, inputs it
    # scored (sentences, pairs, windows; the verdict is the worst of them), any part left unread.
    judged_tokens: int | None = None
    judged_segments: int | None = None
    truncated: bool | None = None
    text: str | None = None
    error: str | None = None

    def to_json(self) -> str:
        return json.dumps({k: v for k, v in asdict(self).items() if v is not None}, ensure_ascii=False)


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

    @property
    def current_path(self) -> Path | None:
        return Path(self._file.name) if self._file is not None else None

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


@dataclass(frozen=True)
class AuditFilter:
    request_id: str | None = None
    tenant: str | None = None
    direction: str | None = None
    unsafe_only: bool = False
    since: datetime | None = None
    until: datetime | None = None

    def matches(self, record: dict[str, Any]) -> bool:
        if self.request_id is not None and record.get("request_id") != self.request_id:
            return False
        if self.tenant is not None and record.get("tenant") != self.tenant:
            return False
        if self.direction is not None and record.get("direction") != self.direction:
            return False
        if self.unsafe_only and record.get("verdict") == "safe":
            return False
        if self.since is not None or self.until is not None:
            when = datetime.fromisoformat(record["time"])
            if self.since is not None and when < self.since:
                return False
            if self.until is not None and when >= self.until:
                return False
        return True


def audit_files(directory: Path) -> list[Path]:
    files = [(int(m.group(1)), p) for p in directory.iterdir() if (m := FILE_PATTERN.match(p.name))]
    return [p for _, p in sorted(files)]


def read_records(directory: Path, where: AuditFilter | None = None) -> Iterator[dict[str, Any]]:
    """Records in write order. A line that does not parse is an error unless it is a file's torn tail."""
    where = where or AuditFilter()
    for path in audit_files(directory):
        with path.open("rb") as f:
            lines = f.read().split(b"\n")
        for i, raw in enumerate(lines):
            if not raw:
                continue
            try:
                record = json.loads(raw)
            except json.JSONDecodeError:
                if i == len(lines) - 1:  # no newline after it: a write cut short by a crash
                    continue
                raise ValueError(f"{path}:{i + 1}: not a JSON audit record") from None
            if where.matches(record):
                yield record
