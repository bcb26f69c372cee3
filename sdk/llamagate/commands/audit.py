"""`llamagate audit`: list the gateway's safety audit trail, filtered.

Reads the append-only JSONL files of a gateway's --audit-dir (read-only; safe while the gateway
writes). One record per safety verdict: request id, tenant, time, direction, stage (input, chunk,
final), verdict (safe, unsafe, or unchecked under fail-open), categories with scores, classifier id
and version, how the text was read (tokens, segments scored, whether any part went unread), sha256
of the judged text (and the text when the gateway ran with --audit-text).

    llamagate audit --dir /var/lib/llamagate/audit --unsafe --since 2026-11-24T00:00:00Z
    llamagate audit --dir DIR --request-id 3f2a... --json
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from llamagate.formats.audit import AuditFilter, read_records


def _time(value: str) -> datetime:
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not an ISO 8601 time, e.g. 2026-11-24T03:00:00Z"
        ) from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "audit",
        help="list and filter the gateway's safety audit records",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--dir", type=Path, required=True, help="the gateway's --audit-dir")
    parser.add_argument("--request-id", help="only this request")
    parser.add_argument("--tenant", help="only this tenant")
    parser.add_argument("--direction", choices=["input", "output"], help="only this side")
    parser.add_argument("--unsafe", action="store_true", help="only unsafe (and unchecked) verdicts")
    parser.add_argument("--since", type=_time, help="records at or after this ISO 8601 time (UTC if no zone)")
    parser.add_argument("--until", type=_time, help="records before this ISO 8601 time")
    parser.add_argument("--json", action="store_true", help="print the records as JSON lines")
    parser.set_defaults(func=run)


def _line(record: dict[str, Any]) -> str:
    violated = [c["code"] for c in record.get("categories", []) if c.get("violated")]
    top = max(record.get("categories", []), key=lambda c: c.get("score", 0.0), default=None)
    score = f"{top['code']}={top['score']:.3f}" if top else "-"
    chunk = f"#{record['chunk_index']}" if record.get("chunk_index") is not None else ""
    return (
        f"{record['time']}  {record['request_id']}  {record['tenant']:<12} {record['direction']:<6} "
        f"{record['stage'] + chunk:<8} {record['verdict']:<9} {','.join(violated) or '-':<8} top {score}  "
        f"{record.get('classifier_id', '')}@{record.get('classifier_version', '')}  {_read(record)}  "
        f"sha256 {record['text_sha256'][:16]}"
    )


def _read(record: dict[str, Any]) -> str:
    """How the classifier read the text: "57 tok/3 seg", "TRUNCATED" when part went unread."""
    if record.get("judged_tokens") is None:  # unchecked, or written before these fields existed
        return "-"
    read = f"{record['judged_tokens']} tok/{record.get('judged_segments', '?')} seg"
    return f"{read} TRUNCATED" if record.get("truncated") else read


def run(args: argparse.Namespace) -> int:
    if not args.dir.is_dir():
        print(
            f"llamagate audit: {args.dir} is not a directory (give the gateway's --audit-dir)",
            file=sys.stderr,
        )
        return 2
    where = AuditFilter(
        request_id=args.request_id,
        tenant=args.tenant,
        direction=args.direction,
        unsafe_only=args.unsafe,
        since=args.since,
        until=args.until,
    )
    count = 0
    try:
        for record in read_records(args.dir, where):
            print(json.dumps(record, ensure_ascii=False) if args.json else _line(record))
            count += 1
    except ValueError as error:
        print(f"llamagate audit: {error}", file=sys.stderr)
        return 1
    if not args.json:
        print(f"{count} record(s)", file=sys.stderr)
    return 0
