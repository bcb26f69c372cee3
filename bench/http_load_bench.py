"""Load run over the OpenAI-compatible HTTP port: N concurrent streaming requests for a set time.

Starts the three real services on loopback (demo model, embedded safety classifier, the gateway
auditing judged text and serving its HTTP port; tests/support/stack.py), warms up, then runs the
HTTP load driver of tests/integration/http/loadgen.py (the official `openai` client, chat
completions and completions alternating, streamed, one prompt in eight unsafe) while sampling each
service's RSS and the inference service's KV utilisation. Reports endings, p50/p99 TTFT,
throughput, peak and final memory, and checks what bench/load_bench.py checks for gRPC: no
delivered delta lacked a safe verdict in the audit trail, no request is missing the verdicts its
ending needs, the scheduler is idle with every KV block free, every service's memory is back within
the suite's slack of its baseline. Exit status 1 if any check fails.

    python -m bench.http_load_bench --streams 100 --duration 120 [--max-tokens 16] [--json OUT]

The short variant of this run is tests/integration/http/test_openai_load.py (32 streams x 15 s).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from tests.integration.http.loadgen import HttpLoadConfig, HttpLoadReport, audit_gaps, run_http_load
from tests.reliability.conftest import reliability_stack_config
from tests.reliability.probes import (
    gauge,
    process_tree_rss_bytes,
    rss_limit_bytes,
    scrape,
    unchecked_deliveries,
    wait_scheduler_idle,
)
from tests.support.processes import ROOT, free_port
from tests.support.stack import Stack, running_stack

MIB = 2**20


def _rss(stack: Stack) -> dict[str, float]:
    return {p.name: process_tree_rss_bytes(p.proc.pid) / MIB for p in stack.processes() if p.proc is not None}


def _commit() -> str:
    result = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return result.stdout.strip() or "unknown"


def run(args: argparse.Namespace, workdir: Path) -> dict[str, object]:
    metrics_port = free_port()
    with running_stack(workdir, reliability_stack_config(metrics_port)) as stack:
        base = HttpLoadConfig(
            stack.http_base_url, stack.api_key, streams=8, duration_s=5.0, max_tokens=args.max_tokens
        )
        asyncio.run(run_http_load(base))
        wait_scheduler_idle(metrics_port)
        baseline = _rss(stack)
        peak = dict(baseline)
        peak_kv = 0.0
        config = HttpLoadConfig(
            stack.http_base_url,
            stack.api_key,
            streams=args.streams,
            duration_s=args.duration,
            max_tokens=args.max_tokens,
        )
        # The driver runs its own event loop in a thread; this one samples memory and the KV cache.
        reports: list[HttpLoadReport] = []
        driver = threading.Thread(target=lambda: reports.append(asyncio.run(run_http_load(config))))
        driver.start()
        while driver.is_alive():
            driver.join(args.sample_s)
            for name, mib in _rss(stack).items():
                peak[name] = max(peak[name], mib)
            peak_kv = max(peak_kv, gauge(scrape(metrics_port), "llamagate_kv_cache_utilization"))
        [report] = reports
        idle = wait_scheduler_idle(metrics_port, timeout_s=120)
        after = _rss(stack)
        delivered = {o.request_id: list(o.deltas) for o in report.outcomes if o.request_id}
        unchecked = unchecked_deliveries(stack.audit_dir, delivered)
        gaps = audit_gaps(stack.audit_dir, report.outcomes)
        return {
            **report.summary(),
            "max_tokens": args.max_tokens,
            "unexpected_examples": [vars(o) | {"deltas": len(o.deltas)} for o in report.unexpected[:5]],
            "unchecked_deliveries": len(unchecked),
            "audit_gaps": len(gaps),
            "audit_gap_examples": gaps[:5],
            "kv_utilization_peak": round(peak_kv, 4),
            "after": idle,
            "rss_mib": {
                name: {
                    "baseline": round(baseline[name]),
                    "peak": round(peak[name]),
                    "after": round(after[name]),
                    "limit": round(rss_limit_bytes(int(baseline[name] * MIB)) / MIB),
                }
                for name in baseline
            },
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.python_version()}",
            "commit": _commit(),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--duration", type=float, default=120.0, help="seconds of load")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--sample-s", type=float, default=5.0, help="memory/KV sampling interval")
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="http-load-bench-") as tmp:
        result = run(args, Path(tmp))
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    rss = result["rss_mib"]
    assert isinstance(rss, dict)
    over = [name for name, mib in rss.items() if mib["after"] > mib["limit"]]
    if over:
        print(f"memory not back to baseline: {', '.join(over)}", file=sys.stderr)
    idle = {"kv": 0.0, "queue": 0.0, "running": 0.0}
    failed = (
        result["unexpected"]
        or result["unchecked_deliveries"]
        or result["audit_gaps"]
        or result["after"] != idle
        or over
    )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
