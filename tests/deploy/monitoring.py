"""What the dashboard and the alert rules ask of Prometheus: their queries and metric names."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import yaml

from tests.deploy.tools import ALERTS, DASHBOARD

# Grafana's variables, replaced by what they stand for so promtool can parse the query.
GRAFANA_VARIABLES = {
    "$__rate_interval": "5m",
    "$__interval": "1m",
    "$__range": "1h",
    "$service": ".*",
}
METRIC = re.compile(r"\b(loopwise_[a-z0-9_]+|up)\b(?!\s*\()")
# Names Prometheus makes itself (scrape health), not exported by a service.
SYNTHETIC = {"up"}
# The review console's metrics (the demo runs the console, so they are scraped with the rest).
CONSOLE_METRICS = {
    "loopwise_review_queue_depth",
    "loopwise_review_queue_oldest_age_seconds",
    "loopwise_review_decisions_total",
    "loopwise_review_claim_conflicts_total",
    "loopwise_review_outbox_backlog",
    "loopwise_review_sla_breaches_total",
}


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def panels(dash: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dash["panels"]:
        yield panel
        yield from panel.get("panels", [])


def dashboard_queries() -> dict[str, str]:
    """Every panel target's PromQL (Grafana variables substituted), by 'panel title / refId'."""
    out: dict[str, str] = {}
    for panel in panels(dashboard()):
        for target in panel.get("targets", []):
            expr = target["expr"]
            for var, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(var, value)
            out[f"{panel['title']} / {target['refId']}"] = expr
    return out


def alert_rules() -> list[dict[str, Any]]:
    return [r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]]


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression (label names and functions excluded)."""
    no_labels = re.sub(r"\{[^}]*\}", "", expr)
    no_grouping = re.sub(
        r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", no_labels
    )
    return set(METRIC.findall(no_grouping))


def names_used() -> dict[str, set[str]]:
    """Metric name -> where it is used (dashboard panel or alert)."""
    used: dict[str, set[str]] = {}
    for where, expr in dashboard_queries().items():
        for name in metric_names(expr):
            used.setdefault(name, set()).add(f"dashboard: {where}")
    for rule in alert_rules():
        for name in metric_names(rule["expr"]):
            used.setdefault(name, set()).add(f"alert: {rule['alert']}")
    return used


def exported_names(exposition: str) -> set[str]:
    """Family and sample names in a /metrics scrape (histograms give _bucket, _sum, _count)."""
    from prometheus_client.parser import text_string_to_metric_families

    names: set[str] = set()
    for family in text_string_to_metric_families(exposition):
        names.add(family.name)
        if family.type == "counter":
            names.add(family.name + "_total")
        if family.type == "histogram":
            names.update(family.name + s for s in ("_bucket", "_sum", "_count"))
        names.update(sample.name for sample in family.samples)
    return names
