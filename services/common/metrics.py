"""What every service's metrics share: how a latency histogram is made and the latency scales.

Each service defines its own instruments (services/<service>/metrics.py): one dataclass built
from a `Meter` (`Telemetry.meter`); the service calls its methods, never the instruments directly,
so a label or bucket change happens in that one file. The same instruments are scraped from the
service's /metrics endpoint and pushed over OTLP when that is configured. Label values are bounded
sets (directions, category codes, finish reasons, configured tenants): never put request ids or
text in a label.
"""

from __future__ import annotations

from opentelemetry.metrics import Histogram, Meter

# Latency buckets in seconds, shared so the gateway's and the engine's series line up on one
# dashboard. TTFT spans queueing + prefill (ms to tens of s on a busy GPU); end-to-end covers long
# generations.
TTFT_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
REQUEST_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 320.0)
# The parts of a reply's path (a safety check, an audit write): sub-millisecond to a timeout.
STAGE_BUCKETS_S = (0.0005, 0.001, 0.002, 0.004, 0.006, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


def seconds_histogram(meter: Meter, name: str, description: str, buckets: tuple[float, ...]) -> Histogram:
    return meter.create_histogram(
        name, unit="s", description=description, explicit_bucket_boundaries_advisory=buckets
    )
