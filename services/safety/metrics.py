"""The safety service's metrics: verdicts by direction and category, check latency, tokens read."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from opentelemetry.metrics import Counter, Histogram, Meter

from services.common.metrics import seconds_histogram

SAFETY_CHECK_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

# The category label of a verdict that violated nothing.
NO_CATEGORY = "none"


@dataclass(frozen=True)
class SafetyMetrics:
    verdicts: Counter
    check_duration: Histogram
    judged_tokens: Counter

    @classmethod
    def create(cls, meter: Meter) -> SafetyMetrics:
        return cls(
            verdicts=meter.create_counter(
                "llamagate_safety_verdicts_total",
                unit="{verdict}",
                description="Safety verdicts by direction, violated category and outcome",
            ),
            check_duration=seconds_histogram(
                meter,
                "llamagate_safety_check_seconds",
                "Time to judge one item or stream chunk",
                SAFETY_CHECK_BUCKETS_S,
            ),
            judged_tokens=meter.create_counter(
                "llamagate_safety_judged_tokens_total", unit="{token}", description="Tokens classified"
            ),
        )

    def record_verdict(
        self,
        direction: str,
        violated_categories: Iterable[str],
        duration_s: float,
        judged_tokens: int = 0,
        mode: str = "unary",
    ) -> None:
        """One judged item. `direction` is "input" or "output"; `mode` is "unary" or "stream".

        A safe verdict counts once under category "none"; an unsafe one counts once per violated
        category, so a breakdown by category sums to the violations of that category.
        """
        violated = list(violated_categories)
        if violated:
            for category in violated:
                self.verdicts.add(1, {"direction": direction, "category": category, "verdict": "unsafe"})
        else:
            self.verdicts.add(1, {"direction": direction, "category": NO_CATEGORY, "verdict": "safe"})
        self.check_duration.record(duration_s, {"direction": direction, "mode": mode})
        self.judged_tokens.add(judged_tokens, {"direction": direction})
