"""The audit record format: what the gateway writes for every safety verdict and what readers parse.

The trail is a directory of append-only JSONL files `audit-NNNNNNNN.jsonl`, one record per line, in
write order. The gateway's writer (services/gateway/audit.py) and every reader (the `llamagate audit`
command, a log shipper, tests) share this module so the two sides never disagree on the format.

`read_records` yields the records of a directory in write order with filters; it skips a torn final
line (a crash in the middle of a write whose caller was never answered).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

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
