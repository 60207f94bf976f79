"""Sentiment evaluation on ../shared/data/sentiment/uci_amazon_yelp.jsonl (2,000 labelled reviews).

Prints, per model: accuracy (direction of the score: >= 0 is positive, as in
the 74.8% VADER reference), accuracy of the rest when the least-confident 10%
and 20% go to people, and the error rate of the least-confident 20% divided by
that of the rest.

Honest split: each review goes to `dev` or `test` by sha256(id) parity. The
calibrated model is fitted on `dev` only (`--write-calibration` writes the
shipped file from `dev`) and reported on `test`; a 5-fold cross-validation of
the whole fitting procedure over all 2,000 reviews is printed as a second view.
Nothing is reported on the data it was fitted on.

    uv run python bench/sentiment_eval.py [--write-calibration]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from loopwise.events import Envelope, ModelRef, TranscriptSegmentV1
from loopwise.kafka.intake import Incoming
from loopwise_sentiment.batch import annotate_dialogue
from loopwise_sentiment.config import AggregationSettings
from loopwise_sentiment.evaluation import Example, cross_validate, fit_examples, review_figures
from loopwise_sentiment.handler import SentimentHandler
from loopwise_sentiment.models import SentimentModel
from loopwise_sentiment.models.calibrated import CalibratedVaderModel
from loopwise_sentiment.models.calibration import DEFAULT_CALIBRATION, write_calibration
from loopwise_sentiment.models.vader import VaderModel
from loopwise_sentiment.state import MemoryStateStore, SqliteStateStore, StateStore

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "sentiment" / "uci_amazon_yelp.jsonl"
STAR = ROOT.parent / "shared" / "data" / "dialogues" / "star_dev_100.jsonl"
SHIPPED = ROOT / "services/sentiment/src/loopwise_sentiment/models" / DEFAULT_CALIBRATION

Row = dict[str, object]


def split_of(row: Row) -> str:
    """dev or test, fixed by the review id."""
    return "test" if int(hashlib.sha256(str(row["id"]).encode()).hexdigest(), 16) % 2 else "dev"


def examples(rows: Sequence[Row]) -> list[Example]:
    """Rows as labelled examples."""
    return [Example(str(r["text"]), r["label"] == 1) for r in rows]


def evaluate(model: SentimentModel, rows: Sequence[Row]) -> dict[str, float]:
    """Score rows with a model and compute the review figures."""
    right, conf, neutral = [], [], 0
    for row in rows:
        result = model.score(str(row["text"]))
        right.append((result.score >= 0) == (row["label"] == 1))
        conf.append(result.confidence)
        neutral += result.label == "neutral"
    figures = review_figures(right, conf)
    figures["neutral_share"] = neutral / len(rows)
    return figures


def auc(positives: Sequence[float], negatives: Sequence[float]) -> float:
    """Probability that a random positive outranks a random negative (ties count half)."""
    wins = sum((p > n) + 0.5 * (p == n) for p in positives for n in negatives)
    return wins / (len(positives) * len(negatives))


def star_figures(model: SentimentModel) -> str:
    """How well the call-level customer sentiment ranks STAR's annoyed users first."""
    if not STAR.exists():
        return f"STAR dialogues: skipped ({STAR} not found)"
    settings = AggregationSettings()
    calls = [
        annotate_dialogue(model, json.loads(x), settings)
        for x in STAR.read_text(encoding="utf-8").splitlines()
        if x
    ]
    annoyed = [c for c in calls if c.get("user_aggressive_or_annoyed")]
    calm = [c for c in calls if not c.get("user_aggressive_or_annoyed")]
    parts = [f"STAR {len(calls)} dialogues ({len(annoyed)} annoyed), {model.name}:"]
    for field in ("final", "worst"):
        score = auc(
            [-c["call_sentiment"][field] for c in annoyed],
            [-c["call_sentiment"][field] for c in calm],
        )
        parts.append(f"AUC(-{field}) {score:.2f}")
    negative = sum(c["call_sentiment"]["label"] == "negative" for c in calls)
    turns = [t["sentiment"] for c in calls for t in c["turns"] if "sentiment" in t]
    low = sum(t["confidence"] < 0.6 for t in turns) / len(turns)
    parts.append(f"calls labelled negative {negative}; turns with confidence < 0.6: {low:.1%}")
    return "  ".join(parts)


def throughput(model: SentimentModel, texts: Sequence[str]) -> float:
    """Texts scored per second (one thread)."""
    started = time.perf_counter()
    for text in texts:
        model.score(text)
    return len(texts) / (time.perf_counter() - started)


def handler_throughput(texts: Sequence[str], store: StateStore) -> float:
    """Customer segments per second through the service handler (scoring + per-call state)."""
    handler = SentimentHandler(
        CalibratedVaderModel(), store, AggregationSettings(), "loopwise.cx.sentiment.v1"
    )
    asr = ModelRef(name="bench", version="1")
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    events = [
        TranscriptSegmentV1(
            tenant_id="bench",
            call_id=f"call-{i % 100}",
            occurred_at=t0,
            producer=asr,
            segment_id=f"s{i}",
            speaker="customer",
            start_s=float(i),
            end_s=float(i) + 1,
            text=text,
            confidence=0.9,
            language="en",
            source="realtime",
        )
        for i, text in enumerate(texts)
    ]
    started = time.perf_counter()
    for i, event in enumerate(events):
        envelope = Envelope(type=event.event_type, source="bench", id=f"e{i}")
        handler(Incoming(envelope, event, "t", 0, i))
    return len(events) / (time.perf_counter() - started)


def line(name: str, f: dict[str, float]) -> str:
    """One printed row of figures."""
    return (
        f"{name:42} n={int(f['n']):5}  acc {f['accuracy']:6.1%}  "
        f"rest acc (10% to people) {f['rest_accuracy_10']:6.1%}  "
        f"(20%) {f['rest_accuracy_20']:6.1%}  "
        f"err low20 {f['low20_error']:5.1%} vs rest {f['rest_error']:5.1%} "
        f"ratio {f['error_ratio_20']:4.2f}"
    )


def main() -> int:
    """Run the evaluation and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--write-calibration",
        action="store_true",
        help=f"fit on the dev split and write the shipped {DEFAULT_CALIBRATION}",
    )
    args = parser.parse_args()
    if not DATA.exists():
        print(f"skipped: {DATA} not found (the dev data lives in ../shared/data)")
        return 0
    rows: list[Row] = [json.loads(x) for x in DATA.read_text(encoding="utf-8").splitlines() if x]
    dev = [r for r in rows if split_of(r) == "dev"]
    test = [r for r in rows if split_of(r) == "test"]
    if args.write_calibration:
        fitted = fit_examples(
            examples(dev),
            version="cal-v1",
            fitted_on={"data": DATA.name, "split": "dev = sha256(id) even"},
        )
        write_calibration(fitted, SHIPPED)
        print(f"wrote {SHIPPED.relative_to(ROOT)} (fitted on {len(dev)} dev rows)")
    started = time.perf_counter()
    vader = VaderModel()
    calibrated = CalibratedVaderModel()
    print(f"data: {DATA.name}, {len(rows)} rows; dev {len(dev)} (fitting), test {len(test)}")
    print(line("VADER alone, rule confidence, all rows", evaluate(vader, rows)))
    print(line("VADER alone, rule confidence, test", evaluate(vader, test)))
    fitted_on = calibrated.calibration.fitted_on.get("split", "?")
    print(f"vader-calibrated {calibrated.version} fitted on: {fitted_on}")
    test_figures = evaluate(calibrated, test)
    print(line("vader-calibrated (shipped), test", test_figures))
    print(f"{'':42} neutral labels on test: {test_figures['neutral_share']:.1%}")
    print(line("vader-calibrated, 5-fold CV, all rows", cross_validate(examples(rows))))
    for model in (vader, calibrated):
        print(star_figures(model))
    texts = [str(r["text"]) for r in rows]
    for model in (vader, calibrated):
        print(f"throughput {model.name}: {throughput(model, texts):,.0f} texts/s (one thread)")
    memory = handler_throughput(texts, MemoryStateStore())
    with tempfile.TemporaryDirectory() as tmp:
        sqlite = SqliteStateStore(Path(tmp) / "state.sqlite3")
        durable = handler_throughput(texts, sqlite)
        sqlite.close()
    print(
        f"handler (score + rolling call state), 100 calls: in memory {memory:,.0f} segments/s, "
        f"SQLite (WAL, synchronous=FULL) {durable:,.0f} segments/s"
    )
    elapsed = time.perf_counter() - started
    print(f"elapsed {elapsed:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
