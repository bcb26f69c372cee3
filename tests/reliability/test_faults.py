"""Faults: kill -9 each service during traffic, then start it again on the same port.

Throughout: not one unchecked token reaches a client (every delivered prefix is the text of a
safe audit record), replies end with Done or UNAVAILABLE (clients retry on a new stream), health
tells the truth while the process is down, the system recovers by itself when it returns, and
every completed reply has its full audit trail (input ... final).
"""

from __future__ import annotations

import os
import signal
import sys
import time

import pytest

from tests.reliability.faults import BackgroundLoad, check_fault_report
from tests.reliability.loadgen import OK_FINISHES, LoadConfig, ReplyOutcome
from tests.reliability.probes import health_status, wait_health
from tests.reliability.ranks import as_torchrun_group, kill_group, rank_pids
from tests.support.processes import ServiceProcess
from tests.support.reliability import ReliabilityStack

pytestmark = pytest.mark.slow

STREAMS = 8
NOT_UP = {"UNAVAILABLE", "DEADLINE_EXCEEDED"}  # a killed process's port: nothing answers


def _traffic(rstack: ReliabilityStack) -> BackgroundLoad:
    stack = rstack.stack
    return BackgroundLoad(
        LoadConfig(
            stack.gateway_target,
            stack.metadata,
            streams=STREAMS,
            duration_s=120.0,
            max_gen_len=24,
            reply_timeout_s=60.0,
            channels=2,
        )
    )


def _completed(n: int, since: float = 0.0):  # type: ignore[no-untyped-def]
    def predicate(outcomes: list[ReplyOutcome]) -> bool:
        return sum(o.finish in OK_FINISHES and o.ended_at > since for o in outcomes) >= n

    return predicate


def _failed_with(code: str, since: float):  # type: ignore[no-untyped-def]
    return lambda outcomes: any(o.finish == code and o.ended_at > since for o in outcomes)


def _kill_backend_during_traffic(rstack: ReliabilityStack, process: ServiceProcess, health_name: str) -> None:
    stack = rstack.stack
    with _traffic(rstack) as load:
        load.wait_for("replies before the fault", _completed(STREAMS), timeout_s=60)
        killed_at = time.monotonic()
        process.kill()
        assert health_status(process.target) in NOT_UP
        # The gateway reports its dependency down and refuses turns rather than hanging.
        wait_health(stack.gateway_target, health_name, {"NOT_SERVING"}, timeout_s=15)
        assert health_status(stack.gateway_target, "llamagate.v1.ChatService") == "SERVING"
        load.wait_for("UNAVAILABLE while the backend is down", _failed_with("UNAVAILABLE", killed_at), 30)
        process.start(timeout_s=120)  # same port; returns once it reports SERVING
        wait_health(stack.gateway_target, health_name, {"SERVING"}, timeout_s=15)
        recovered_at = time.monotonic()
        load.wait_for("replies after recovery", _completed(STREAMS, recovered_at), timeout_s=60)
        report = load.stop()
    check_fault_report(report, stack.audit_dir, recovered_at)


def test_kill_9_safety_fails_closed_and_recovers(rstack: ReliabilityStack) -> None:
    _kill_backend_during_traffic(rstack, rstack.stack.safety, "llamagate.v1.SafetyService")


def test_kill_9_inference_gives_unavailable_and_recovers(rstack: ReliabilityStack) -> None:
    _kill_backend_during_traffic(rstack, rstack.stack.inference, "llamagate.v1.InferenceService")


def test_kill_9_gateway_loses_no_audit_record_and_recovers(rstack: ReliabilityStack) -> None:
    stack = rstack.stack
    with _traffic(rstack) as load:
        load.wait_for("replies before the fault", _completed(STREAMS), timeout_s=60)
        killed_at = time.monotonic()
        stack.gateway.kill()
        assert health_status(stack.gateway_target) in NOT_UP
        load.wait_for("UNAVAILABLE while the gateway is down", _failed_with("UNAVAILABLE", killed_at), 30)
        stack.gateway.start(timeout_s=60)
        recovered_at = time.monotonic()
        load.wait_for("replies after recovery", _completed(STREAMS, recovered_at), timeout_s=60)
        report = load.stop()
    # Includes the replies cut by the kill: what they delivered was audited before release.
    check_fault_report(report, stack.audit_dir, recovered_at)


def test_kill_9_of_one_rank_of_a_2_rank_inference_group(rstack: ReliabilityStack) -> None:
    stack = rstack.stack
    as_torchrun_group(stack.inference, nproc=2)
    try:
        wait_health(stack.gateway_target, "llamagate.v1.InferenceService", {"SERVING"}, timeout_s=15)
        with _traffic(rstack) as load:
            load.wait_for("replies before the fault", _completed(STREAMS), timeout_s=60)
            ranks = rank_pids(stack.inference.proc.pid)  # type: ignore[union-attr]
            assert sorted(ranks) == [0, 1], ranks
            killed_at = time.monotonic()
            os.kill(ranks[1], signal.SIGKILL)
            # Rank 0 cannot serve without its peer: the group goes down (or reports NOT_SERVING).
            wait_health(stack.gateway_target, "llamagate.v1.InferenceService", {"NOT_SERVING"}, timeout_s=60)
            load.wait_for("UNAVAILABLE while a rank is gone", _failed_with("UNAVAILABLE", killed_at), 60)
            kill_group(stack.inference, ranks.values())  # what is left (torchrun ends it; this makes sure)
            stack.inference.start(timeout_s=180)
            wait_health(stack.gateway_target, "llamagate.v1.InferenceService", {"SERVING"}, timeout_s=15)
            recovered_at = time.monotonic()
            load.wait_for("replies after recovery", _completed(STREAMS, recovered_at), timeout_s=60)
            report = load.stop()
        check_fault_report(report, stack.audit_dir, recovered_at)
    finally:
        # Later modules get the single-process inference service back (same port).
        argv = list(stack.inference.argv)
        if "torch.distributed.run" in argv:
            kill_group(stack.inference)
            stack.inference.argv = [sys.executable, *argv[argv.index("-m", 3) :]]
            stack.inference.start(timeout_s=120)
