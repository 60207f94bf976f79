"""Model-versus-human quality over a sliding window of event time, read from the state store."""

from __future__ import annotations

import json
import sqlite3
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import jiwer

_NORMALISE = jiwer.Compose(
    [
        jiwer.ToLowerCase(),
        jiwer.RemovePunctuation(),  # type: ignore[no-untyped-call]
        jiwer.RemoveMultipleSpaces(),
        jiwer.Strip(),
        jiwer.ReduceToListOfListOfWords(),
    ]
)


@dataclass(frozen=True)
class WordErrors:
    """Word errors of machine transcripts against the reviewers' text."""

    errors: int
    reference_words: int

    @property
    def wer(self) -> float | None:
        """Word error rate, or None without reference words."""
        return self.errors / self.reference_words if self.reference_words else None


def word_errors(references: Sequence[str], hypotheses: Sequence[str]) -> WordErrors:
    """Corpus WER counts (lower-cased, punctuation removed); empty references count insertions."""
    refs, hyps, errors = [], [], 0
    for ref, hyp in zip(references, hypotheses, strict=True):
        if _NORMALISE(ref) == [[]]:
            errors += len(_NORMALISE(hyp)[0]) if hyp.strip() else 0
        else:
            refs.append(ref)
            hyps.append(hyp)
    if not refs:
        return WordErrors(errors, 0)
    out = jiwer.process_words(
        refs, hyps, reference_transform=_NORMALISE, hypothesis_transform=_NORMALISE
    )
    errors += out.substitutions + out.deletions + out.insertions
    return WordErrors(errors, out.hits + out.substitutions + out.deletions)


def cohen_kappa(first: Sequence[str], second: Sequence[str]) -> float | None:
    """Cohen's kappa of two raters; None when chance agreement is total (kappa undefined)."""
    n = len(first)
    if n == 0 or n != len(second):
        return None
    observed = sum(1 for a, b in zip(first, second, strict=True) if a == b) / n
    ca, cb = Counter(first), Counter(second)
    expected = sum(ca[label] * cb[label] for label in ca) / (n * n)
    if expected >= 1.0:
        return None
    return (observed - expected) / (1.0 - expected)


def quantile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated quantile (numpy's default), None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


@dataclass
class AsrQuality:
    """WER of one ASR model version."""

    model_name: str
    model_version: str
    segments: int
    corrected: int
    reference_words: int
    errors: int
    wer: float | None


@dataclass
class SentimentQuality:
    """Agreement of one sentiment model version with reviewers."""

    model_name: str
    model_version: str
    pairs: int
    agree: int
    accuracy: float | None
    kappa: float | None


@dataclass
class RuleQuality:
    """Precision of one compliance rule in one pack version."""

    pack_name: str
    pack_version: str
    rule_id: str
    confirmed: int
    dismissed: int
    precision: float | None


@dataclass
class ReleaseShare:
    """How items were released under one policy version."""

    policy_version: str
    total: int
    counts: dict[str, int]
    shares: dict[str, float]


@dataclass
class DecisionTimes:
    """Time from a task's creation to its decision, under one policy version."""

    policy_version: str
    decisions: int
    mean_s: float | None
    p50_s: float | None
    p90_s: float | None
    mean_handling_s: float | None


@dataclass
class QualityReport:
    """Every quality figure of one window."""

    window_start: str | None
    window_end: str | None
    window_s: float
    asr: list[AsrQuality] = field(default_factory=list)
    sentiment: list[SentimentQuality] = field(default_factory=list)
    compliance: list[RuleQuality] = field(default_factory=list)
    releases: list[ReleaseShare] = field(default_factory=list)
    decisions: list[DecisionTimes] = field(default_factory=list)
    rows_in_window: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain data, for --json."""
        return asdict(self)


RELEASES = ("auto", "sampled", "reviewed", "expired")


def watermark(conn: sqlite3.Connection) -> float | None:
    """Newest event time in the store: decisions and outcomes."""
    found = conn.execute(
        "SELECT max(t) FROM (SELECT max(decided_at) AS t FROM decisions"
        " UNION ALL SELECT max(occurred_at) FROM outcomes)"
    ).fetchone()
    return float(found[0]) if found and found[0] is not None else None


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


def _bodies(conn: sqlite3.Connection, kind: str, start: float, end: float) -> list[dict[str, Any]]:
    found = conn.execute(
        "SELECT body FROM rows WHERE kind = ? AND decided_at > ? AND decided_at <= ?"
        " ORDER BY row_id",
        (kind, start, end),
    ).fetchall()
    return [json.loads(r[0]) for r in found]


def quality_report(
    conn: sqlite3.Connection, window_s: float, until: float | None = None
) -> QualityReport:
    """Quality figures over (until - window_s, until]; until defaults to the store's watermark."""
    end = until if until is not None else watermark(conn)
    if end is None:
        return QualityReport(None, None, window_s)
    start = end - window_s
    report = QualityReport(_iso(start), _iso(end), window_s)

    asr_rows = _bodies(conn, "asr", start, end)
    by_model: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in asr_rows:
        by_model[(r["model_name"], r["model_version"])].append(r)
    for (name, version), rows in sorted(by_model.items()):
        we = word_errors([r["text"] for r in rows], [r["pred_text"] for r in rows])
        report.asr.append(
            AsrQuality(
                name,
                version,
                len(rows),
                sum(1 for r in rows if r["corrected"]),
                we.reference_words,
                we.errors,
                we.wer,
            )
        )

    sentiment_rows = [r for r in _bodies(conn, "sentiment", start, end) if r["model_label"]]
    by_model = defaultdict(list)
    for r in sentiment_rows:
        by_model[(r["model_name"], r["model_version"])].append(r)
    for (name, version), rows in sorted(by_model.items()):
        agree = sum(1 for r in rows if r["model_label"] == r["label"])
        report.sentiment.append(
            SentimentQuality(
                name,
                version,
                len(rows),
                agree,
                agree / len(rows),
                cohen_kappa([r["model_label"] for r in rows], [r["label"] for r in rows]),
            )
        )

    compliance_rows = _bodies(conn, "compliance", start, end)
    per_rule: dict[tuple[str, str, str], list[bool]] = defaultdict(list)
    for r in compliance_rows:
        per_rule[(r["pack_name"], r["pack_version"], r["rule_id"])].append(r["true_positive"])
    for (pack, version, rule), verdicts in sorted(per_rule.items()):
        confirmed = sum(verdicts)
        report.compliance.append(
            RuleQuality(
                pack, version, rule, confirmed, len(verdicts) - confirmed, confirmed / len(verdicts)
            )
        )

    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for policy, release, n in conn.execute(
        "SELECT policy_version, release, count(*) FROM outcomes"
        " WHERE occurred_at > ? AND occurred_at <= ? GROUP BY policy_version, release",
        (start, end),
    ).fetchall():
        counts[str(policy)][str(release)] += int(n)
    for policy, c in sorted(counts.items()):
        total = sum(c.values())
        report.releases.append(
            ReleaseShare(
                policy,
                total,
                {r: c[r] for r in RELEASES},
                {r: c[r] / total for r in RELEASES},
            )
        )

    waits: dict[str, list[float]] = defaultdict(list)
    handling: dict[str, list[float]] = defaultdict(list)
    for policy, created, decided, seconds in conn.execute(
        "SELECT policy_version, task_created_at, decided_at, seconds_to_decide FROM decisions"
        " WHERE decided_at > ? AND decided_at <= ?",
        (start, end),
    ).fetchall():
        waits[str(policy)].append(max(float(decided) - float(created), 0.0))
        if seconds is not None:
            handling[str(policy)].append(float(seconds))
    for policy, values in sorted(waits.items()):
        hs = handling.get(policy, [])
        report.decisions.append(
            DecisionTimes(
                policy,
                len(values),
                sum(values) / len(values),
                quantile(values, 0.5),
                quantile(values, 0.9),
                sum(hs) / len(hs) if hs else None,
            )
        )
    report.rows_in_window = {
        "asr": len(asr_rows),
        "sentiment": len(_bodies(conn, "sentiment", start, end)),
        "compliance": len(compliance_rows),
    }
    return report
