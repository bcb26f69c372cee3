"""The Grafana dashboard only queries metrics we export, and covers the main ones."""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider

from services.gateway.metrics import GatewayMetrics
from services.inference.metrics import InferenceMetrics, SchedulerSnapshot
from services.safety.metrics import SafetyMetrics
from tests.support.processes import ROOT

DASHBOARD = ROOT / "deploy" / "grafana" / "llamagate.json"
HISTOGRAM_SERIES = re.compile(r"_(bucket|count|sum)$")


def _exported() -> set[str]:
    """Instrument names, from the metric sets themselves."""
    meter = MeterProvider().get_meter("t")
    metric_sets: list[Any] = [
        InferenceMetrics.create(meter, lambda: SchedulerSnapshot(0, 0, 0.0)),
        SafetyMetrics.create(meter),
        GatewayMetrics.create(meter),
    ]
    return {
        getattr(metric_set, field.name).name
        for metric_set in metric_sets
        for field in dataclasses.fields(metric_set)
    }


def _queries(dashboard: dict[str, Any]) -> list[str]:
    return [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]


def test_dashboard_is_valid_grafana_json_with_unique_panels() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"] == "llamagate"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        position = panel["gridPos"]
        assert position["x"] + position["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
            assert panel["targets"], panel["title"]
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "tenant"} <= variables


def test_every_queried_metric_is_exported_and_the_main_ones_are_shown() -> None:
    exported = _exported()
    queried = {
        HISTOGRAM_SERIES.sub("", name)
        for expr in _queries(json.loads(DASHBOARD.read_text()))
        for name in re.findall(r"\bllamagate_[a-z_]+", expr)
    }
    assert queried <= exported, sorted(queried - exported)
    main = {
        "llamagate_ttft_seconds",
        "llamagate_inter_token_latency_seconds",
        "llamagate_request_duration_seconds",
        "llamagate_prompt_tokens_total",
        "llamagate_generated_tokens_total",
        "llamagate_queue_depth",
        "llamagate_running_batch_size",
        "llamagate_kv_cache_utilization",
        "llamagate_safety_verdicts_total",
        "llamagate_safety_check_seconds",
        "llamagate_rate_limited_total",
        "llamagate_requests_total",
        "llamagate_tenant_tokens_total",
    }
    assert main <= queried, sorted(main - queried)
