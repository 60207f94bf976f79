"""Service metrics: pack info, findings by level/category/severity, redeliveries, revisions."""

from __future__ import annotations

from typing import Any

from prometheus_client import REGISTRY

from loopwise_compliance import metrics
from loopwise_compliance.handler import ComplianceScorer


def value(name: str, **labels: str) -> float:
    found = REGISTRY.get_sample_value(name, labels)
    return 0.0 if found is None else found


def test_metrics_count_what_is_published(kit: Any, scorer: ComplianceScorer) -> None:
    metrics.init_metrics(scorer.packs)
    pack = scorer.packs.default
    info = {"pack": "default", "version": pack.version, "sha256": pack.content_hash[:12]}
    assert value("loopwise_compliance_rule_pack_info", **info) == 1.0
    card = {"level": "segment", "category": "card_data", "severity": "critical"}
    late = {"level": "call", "category": "disclosure", "severity": "medium"}
    # Label sets exist at zero before anything happened.
    assert REGISTRY.get_sample_value("loopwise_compliance_findings_total", card) is not None
    before_card = value("loopwise_compliance_findings_total", **card)
    before_late = value("loopwise_compliance_findings_total", **late)

    script = kit.script("call-metrics")
    text = "it is [CARD_NUMBER]"
    replay = kit.replayer(scorer)
    outcomes = replay(
        [
            script.started(),
            script.say("agent", 1.0, "Hello."),
            script.say("customer", 5.0, text, redactions=[kit.card_span(text)]),
            script.say("agent", 40.0, "This call is recorded."),
            script.ended(),
        ]
    )
    for outcome in outcomes:
        metrics.count_outputs(outcome.outputs)
    assert value("loopwise_compliance_findings_total", **card) == before_card + 1
    assert value("loopwise_compliance_findings_total", **late) == before_late + 1
