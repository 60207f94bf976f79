"""Prometheus series of the exporter; labels are model, rule and policy versions, never call ids."""

from __future__ import annotations

import math

from prometheus_client import Counter, Gauge

from loopwise_feedback.handler import KINDS
from loopwise_feedback.quality import QualityReport

ROWS_WRITTEN = Counter(
    "loopwise_feedback_rows_written_total", "Training rows added to the store", ["kind"]
)
REDELIVERIES = Counter(
    "loopwise_feedback_redeliveries_total",
    "Events skipped because their event id was already seen",
    ["topic"],
)
SETS_PUBLISHED = Counter(
    "loopwise_feedback_sets_published_total", "Training set files rewritten", ["kind"]
)
PENDING = Gauge("loopwise_feedback_pending_decisions", "Decisions waiting for their review task")
ASR_WER = Gauge(
    "loopwise_feedback_asr_wer_ratio",
    "Word error rate of machine against reviewed transcripts in the window",
    ["model", "model_version"],
)
SENTIMENT_ACCURACY = Gauge(
    "loopwise_feedback_sentiment_accuracy_ratio",
    "Share of reviewed segments where the model's sentiment equals the reviewer's",
    ["model", "model_version"],
)
SENTIMENT_KAPPA = Gauge(
    "loopwise_feedback_sentiment_kappa",
    "Cohen's kappa between model and reviewer sentiment (NaN when undefined)",
    ["model", "model_version"],
)
RULE_PRECISION = Gauge(
    "loopwise_feedback_compliance_precision_ratio",
    "Confirmed share of a rule's judged findings in the window",
    ["pack", "pack_version", "rule_id"],
)
RELEASE_SHARE = Gauge(
    "loopwise_feedback_release_share_ratio",
    "Share of released items by how they were released (auto, sampled, reviewed, expired)",
    ["policy_version", "release"],
)
TIME_TO_DECISION = Gauge(
    "loopwise_feedback_time_to_decision_seconds",
    "Time from review task creation to decision in the window, by quantile",
    ["policy_version", "quantile"],
)
WINDOW_EXAMPLES = Gauge(
    "loopwise_feedback_window_examples",
    "Reviewed examples in the quality window",
    ["kind", "model", "model_version"],
)

_QUALITY = (
    ASR_WER,
    SENTIMENT_ACCURACY,
    SENTIMENT_KAPPA,
    RULE_PRECISION,
    RELEASE_SHARE,
    TIME_TO_DECISION,
    WINDOW_EXAMPLES,
)
_shown: dict[Gauge, set[tuple[str, ...]]] = {g: set() for g in _QUALITY}


def init_gauges() -> None:
    """Create the label sets known at start, so dashboards see zeros, not gaps."""
    for kind in KINDS:
        ROWS_WRITTEN.labels(kind)
        SETS_PUBLISHED.labels(kind)
    PENDING.set(0)


def _nan(value: float | None) -> float:
    return math.nan if value is None else value


def show_quality(report: QualityReport) -> None:
    """Set the quality gauges to a report; series of versions gone from the window are removed."""
    values: dict[Gauge, dict[tuple[str, ...], float]] = {g: {} for g in _QUALITY}
    for a in report.asr:
        values[ASR_WER][(a.model_name, a.model_version)] = _nan(a.wer)
        values[WINDOW_EXAMPLES][("asr", a.model_name, a.model_version)] = a.segments
    for s in report.sentiment:
        values[SENTIMENT_ACCURACY][(s.model_name, s.model_version)] = _nan(s.accuracy)
        values[SENTIMENT_KAPPA][(s.model_name, s.model_version)] = _nan(s.kappa)
        values[WINDOW_EXAMPLES][("sentiment", s.model_name, s.model_version)] = s.pairs
    for r in report.compliance:
        values[RULE_PRECISION][(r.pack_name, r.pack_version, r.rule_id)] = _nan(r.precision)
    for share in report.releases:
        for release, value in share.shares.items():
            values[RELEASE_SHARE][(share.policy_version, release)] = value
    for d in report.decisions:
        values[TIME_TO_DECISION][(d.policy_version, "0.5")] = _nan(d.p50_s)
        values[TIME_TO_DECISION][(d.policy_version, "0.9")] = _nan(d.p90_s)
    for gauge, series in values.items():
        for labels in _shown[gauge] - set(series):
            gauge.remove(*labels)
        for labels, value in series.items():
            gauge.labels(*labels).set(value)
        _shown[gauge] = set(series)
