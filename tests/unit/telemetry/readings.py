"""Reading what an InMemoryMetricReader collected, keyed by instrument name and label set."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader, NumberDataPoint


@dataclass(frozen=True)
class Point:
    value: float  # counter/gauge value, or histogram count
    total: float = 0.0  # histogram sum
    bucket_counts: tuple[int, ...] = ()
    bounds: tuple[float, ...] = ()


def collect(reader: InMemoryMetricReader) -> dict[str, dict[frozenset[tuple[str, Any]], Point]]:
    data = reader.get_metrics_data()
    out: dict[str, dict[frozenset[tuple[str, Any]], Point]] = {}
    if data is None:
        return out
    for resource_metrics in data.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                points = out.setdefault(metric.name, {})
                for point in metric.data.data_points:
                    key = frozenset((point.attributes or {}).items())
                    if isinstance(point, HistogramDataPoint):
                        points[key] = Point(
                            point.count, point.sum, tuple(point.bucket_counts), tuple(point.explicit_bounds)
                        )
                    elif isinstance(point, NumberDataPoint):
                        points[key] = Point(point.value)
    return out


def labels(**kv: Any) -> frozenset[tuple[str, Any]]:
    return frozenset(kv.items())
