"""Prometheus metrics of the compliance service (labels bounded by the loaded rule packs)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from loopwise.events import CallComplianceV1, SegmentComplianceV1, TenantEvent
from loopwise_compliance.rules import PackIndex

CALL_TYPES = ("required_phrase", "verify_before")

FINDINGS = Counter(
    "loopwise_compliance_findings_total",
    "Compliance findings published, by level (segment or call), category and severity",
    ["level", "category", "severity"],
)
REDELIVERED = Counter(
    "loopwise_compliance_redelivered_events_total",
    "Input events recognised as already counted (by event or segment id)",
)
REVISIONS = Counter(
    "loopwise_compliance_call_revisions_total",
    "Call results decided again because a segment arrived after the call ended",
)
RULE_PACK = Gauge(
    "loopwise_compliance_rule_pack_info",
    "Loaded rule packs (value 1) with name, version and content hash",
    ["pack", "version", "sha256"],
)


def init_metrics(packs: PackIndex) -> None:
    """Publish the loaded packs and create every label set at zero."""
    for pack in packs.packs():
        RULE_PACK.labels(pack.name, pack.version, pack.content_hash[:12]).set(1)
        for rule in pack.rules:
            severities = {rule.severity, getattr(rule, "late_severity", None) or rule.severity}
            for severity in severities:
                FINDINGS.labels(
                    "call" if rule.type in CALL_TYPES else "segment", rule.category, severity
                )


def count_outputs(outputs: list[TenantEvent]) -> None:
    """Count the findings of the events about to be published."""
    for event in outputs:
        if isinstance(event, SegmentComplianceV1):
            level = "segment"
        elif isinstance(event, CallComplianceV1):
            level = "call"
        else:
            continue
        for finding in event.findings:
            FINDINGS.labels(level, finding.category, finding.severity).inc()
