"""Long load run: N concurrent bidirectional Chat streams through the gateway for a set time.

Starts the three real services on loopback (demo model, embedded safety classifier, the gateway
auditing judged text; tests/support/stack.py), warms up, then runs the load driver of
tests/reliability/loadgen.py while sampling each service's RSS and the inference service's KV
utilisation. Reports reply endings, p50/p99 TTFT, throughput, peak and final memory, and checks
that afterwards the scheduler is idle with every KV block free, that every service's memory is
back within the suite's slack of its baseline (probes.rss_limit_bytes), and that no delivered
token lacked a safe verdict in the audit trail. Exit status 1 if any check fails.

    python -m bench.load_bench --streams 200 --duration 600 [--max-gen-len 16] [--json OUT]

The short variant of this run is tests/reliability/test_load.py (64 streams x 20 s, in make test).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from tests.reliability.conftest import reliability_stack_config
from tests.reliability.faults import BackgroundLoad
from tests.reliability.loadgen import LoadConfig, run_load
from tests.reliability.probes import (
    gauge,
    process_tree_rss_bytes,
    rss_limit_bytes,
    scrape,
    unchecked_deliveries,
    wait_scheduler_idle,
)
from tests.support.processes import free_port
from tests.support.stack import Stack, running_stack

MIB = 2**20


def _rss(stack: Stack) -> dict[str, float]:
    return {p.name: process_tree_rss_bytes(p.proc.pid) / MIB for p in stack.processes() if p.proc is not None}


def run(args: argparse.Namespace, workdir: Path) -> dict[str, object]:
    metrics_port = free_port()
    config = reliability_stack_config(metrics_port)
    with running_stack(workdir, config) as stack:
        base = LoadConfig(
            stack.gateway_target, stack.metadata, streams=8, duration_s=5.0, max_gen_len=args.max_gen_len
        )
        asyncio.run(run_load(base))
        wait_scheduler_idle(metrics_port)
        baseline = _rss(stack)
        peak = dict(baseline)
        peak_kv = 0.0
        load_config = LoadConfig(
            stack.gateway_target,
            stack.metadata,
            streams=args.streams,
            duration_s=args.duration,
            max_gen_len=args.max_gen_len,
            channels=args.channels,
        )
        started = time.monotonic()
        with BackgroundLoad(load_config) as load:
            # Sample while the load runs (its own thread); the run ends at its duration.
            while time.monotonic() - started < args.duration:
                time.sleep(min(args.sample_s, max(0.1, args.duration - (time.monotonic() - started))))
                for name, mib in _rss(stack).items():
                    peak[name] = max(peak[name], mib)
                peak_kv = max(peak_kv, gauge(scrape(metrics_port), "llamagate_kv_cache_utilization"))
            report = load.stop()
        idle = wait_scheduler_idle(metrics_port, timeout_s=120)
        after = _rss(stack)
        unchecked = unchecked_deliveries(
            stack.audit_dir, {o.request_id: list(o.deltas) for o in report.outcomes}
        )
        summary = report.summary()
        return {
            **summary,
            "max_gen_len": args.max_gen_len,
            "unexpected_examples": [vars(o) | {"deltas": len(o.deltas)} for o in report.unexpected[:5]],
            "unchecked_deliveries": len(unchecked),
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
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of load")
    parser.add_argument("--max-gen-len", type=int, default=16)
    parser.add_argument("--channels", type=int, default=8, help="client channels the streams share")
    parser.add_argument("--sample-s", type=float, default=5.0, help="memory/KV sampling interval")
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="load-bench-") as tmp:
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
    failed = result["unexpected"] or result["unchecked_deliveries"] or result["after"] != idle or over
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
