"""Long fault run: kill -9 services again and again under traffic and prove nothing is lost.

Starts the three services on loopback (as tests/support/stack.py), runs N Chat streams
continuously, and for each round kills (SIGKILL) the safety service, the inference service and
the gateway in turn, keeps each down for --down-s, starts it again on the same port and waits for
the system to recover. At the end it checks, over the whole run: every reply ended with Done or
UNAVAILABLE / RESOURCE_EXHAUSTED; not one delivered token lacks a safe verdict in the audit trail;
every completed reply has its input and final audit records; replies completed after the last
recovery. Exit status 1 if any check fails.

    python -m bench.fault_bench [--streams 32] [--rounds 3] [--down-s 5] [--json OUT]

The short variant is tests/reliability/test_faults.py (one kill of each, 8 streams; plus one rank
of a 2-rank torchrun inference group).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from tests.reliability.conftest import reliability_stack_config
from tests.reliability.faults import BackgroundLoad, check_fault_report
from tests.reliability.loadgen import OK_FINISHES, LoadConfig, ReplyOutcome
from tests.reliability.probes import wait_health
from tests.support.processes import free_port
from tests.support.stack import running_stack

HEALTH_NAMES = {"safety": "llamagate.v1.SafetyService", "inference": "llamagate.v1.InferenceService"}


def _completed_since(since: float, n: int) -> Callable[[list[ReplyOutcome]], bool]:
    return lambda outcomes: sum(o.finish in OK_FINISHES and o.ended_at > since for o in outcomes) >= n


def run(args: argparse.Namespace, workdir: Path) -> dict[str, object]:
    events: list[dict[str, object]] = []
    with running_stack(workdir, reliability_stack_config(free_port())) as stack:
        config = LoadConfig(
            stack.gateway_target,
            stack.metadata,
            streams=args.streams,
            duration_s=24 * 3600.0,  # stopped explicitly after the last round
            max_gen_len=args.max_gen_len,
            reply_timeout_s=60.0,
        )
        start = time.monotonic()
        recovered_at = start
        with BackgroundLoad(config) as load:
            for round_ in range(args.rounds):
                for name in ("safety", "inference", "gateway"):
                    process = getattr(stack, name)
                    before = len(load.report.outcomes)
                    killed = time.monotonic()
                    process.kill()
                    if name in HEALTH_NAMES:
                        wait_health(stack.gateway_target, HEALTH_NAMES[name], {"NOT_SERVING"}, timeout_s=15)
                    time.sleep(args.down_s)  # the outage itself
                    process.start(timeout_s=180)
                    if name in HEALTH_NAMES:
                        wait_health(stack.gateway_target, HEALTH_NAMES[name], {"SERVING"}, timeout_s=15)
                    recovered_at = time.monotonic()
                    load.wait_for("replies after recovery", _completed_since(recovered_at, args.streams), 120)
                    window = load.report.outcomes[before:]
                    events.append(
                        {
                            "round": round_,
                            "killed": name,
                            "down_s": round(recovered_at - killed, 2),
                            "time_to_first_ok_after_recovery_s": round(
                                min(
                                    o.ended_at
                                    for o in window
                                    if o.finish in OK_FINISHES and o.ended_at > recovered_at
                                )
                                - recovered_at,
                                2,
                            ),
                            "endings_in_window": dict(Counter(o.finish for o in window)),
                        }
                    )
            report = load.stop()
        failure = ""
        try:
            check_fault_report(report, stack.audit_dir, recovered_at)
        except AssertionError as error:
            failure = str(error)[:2000]
        return {
            **report.summary(),
            "faults": events,
            "checks": "passed" if not failure else f"FAILED: {failure}",
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.python_version()}",
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--streams", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--down-s", type=float, default=5.0, help="how long each killed service stays down")
    parser.add_argument("--max-gen-len", type=int, default=24)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fault-bench-") as tmp:
        result = run(args, Path(tmp))
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0 if result["checks"] == "passed" else 1


if __name__ == "__main__":
    raise SystemExit(main())
