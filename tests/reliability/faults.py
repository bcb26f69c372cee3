"""Background traffic for fault tests: the load driver run in a thread while a test kills and
restarts services, plus the checks every fault must pass."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path

from tests.reliability.loadgen import OK_FINISHES, LoadConfig, LoadReport, ReplyOutcome, run_load
from tests.reliability.probes import audit_stages, unchecked_deliveries

# Endings a reply may have while a service is killed (docs/reliability.md): UNAVAILABLE (a
# backend or the gateway is down, retry), RESOURCE_EXHAUSTED (shed), and CANCELLED /
# DEADLINE_EXCEEDED never (the clients neither cancel nor set short deadlines here).
FAULT_STATUSES = frozenset({"UNAVAILABLE", "RESOURCE_EXHAUSTED"})


class BackgroundLoad:
    """`run_load(config)` on its own thread and event loop; `join()` returns its report."""

    def __init__(self, config: LoadConfig) -> None:
        self._config = config
        self.report = LoadReport(config)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="background-load", daemon=True)

    def _run(self) -> None:
        try:
            asyncio.run(run_load(self._config, self.report))
        except BaseException as error:  # reported to the test by join()
            self._error = error

    def __enter__(self) -> BackgroundLoad:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.report.stop_requested = True
        self._thread.join(self._config.reply_timeout_s + 30)

    def wait_for(self, what: str, predicate: Callable[[list[ReplyOutcome]], bool], timeout_s: float) -> None:
        """Bounded wait until `predicate(outcomes so far)` holds."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate(list(self.report.outcomes)):
                return
            if not self._thread.is_alive():
                break
            time.sleep(0.1)
        raise AssertionError(f"traffic never showed {what}: {self.report.finishes}")

    def stop(self) -> LoadReport:
        """Stop the traffic (replies in flight finish) and return its report."""
        self.report.stop_requested = True
        self._thread.join(self._config.reply_timeout_s + 30)
        if self._error is not None:
            raise self._error
        assert not self._thread.is_alive(), "the background load did not stop in time"
        return self.report


def check_fault_report(report: LoadReport, audit_dir: Path, recovered_at: float) -> None:
    """Every reply ended with Done or a documented fault status; nothing unchecked was delivered;
    clients that retried after the restart were served; every completed reply is fully audited."""
    endings = report.finishes
    odd = {k: v for k, v in endings.items() if k not in OK_FINISHES | FAULT_STATUSES}
    assert not odd, f"undocumented endings {odd}; e.g. {[o for o in report.outcomes if o.finish in odd][:3]}"
    problems = unchecked_deliveries(audit_dir, {o.request_id: list(o.deltas) for o in report.outcomes})
    assert problems == [], problems[:5]
    after = [o for o in report.outcomes if o.ended_at > recovered_at]
    assert any(o.finish in OK_FINISHES for o in after), f"no reply completed after recovery: {endings}"
    audited = audit_stages(audit_dir)
    for outcome in report.outcomes:
        if outcome.finish in ("FINISH_REASON_STOP", "FINISH_REASON_LENGTH"):
            stages = audited.get(outcome.request_id, [])
            assert stages[:1] == ["input"] and stages[-1:] == ["final"], (outcome.request_id, stages)
