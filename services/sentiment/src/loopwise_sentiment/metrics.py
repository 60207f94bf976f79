"""Sentiment-specific metrics (on top of the shared worker's), with bounded labels."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

SEGMENT_CONFIDENCE = Histogram(
    "loopwise_sentiment_segment_confidence_ratio",
    "Confidence of segment sentiment answers, by label (low values go to reviewers)",
    ["label"],
    buckets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0),
)
CALL_PUBLICATIONS = Counter(
    "loopwise_sentiment_call_publications_total",
    "Rolling call sentiment events published, by reason",
    ["reason"],
)
REDELIVERED = Counter(
    "loopwise_sentiment_redelivered_events_total",
    "Input events already applied to call state (redeliveries): outputs replayed, not recounted",
)


def init_metrics() -> None:
    """Create every label set so dashboards see zeros, not gaps."""
    for label in ("negative", "neutral", "positive"):
        SEGMENT_CONFIDENCE.labels(label)
    for reason in ("call_ended", "significant_change"):
        CALL_PUBLICATIONS.labels(reason)
