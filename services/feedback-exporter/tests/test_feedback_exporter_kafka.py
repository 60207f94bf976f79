"""The exporter on a real broker: sets written, re-read with pyarrow, replay adds nothing."""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import ModuleType
from typing import Any

import pyarrow.parquet as pq
import pytest
from prometheus_client import REGISTRY

from loopwise.events import CallStartedV1, ReviewDecisionV1, encode
from loopwise.events.examples import example_events
from loopwise.kafka.deadletter import DLQ_HEADERS
from loopwise_feedback.cli import main
from loopwise_feedback.config import FeedbackSettings
from loopwise_feedback.export import partition_dir
from loopwise_feedback.store import Partition
from loopwise_feedback.worker import Publisher, build_worker
from tests.support.kafka_io import produce_events, produce_raw, read_topic, wait_for

pytestmark = pytest.mark.kafka


@dataclass
class Topics:
    tasks: str
    decisions: str
    outcomes: str
    dlq: str


@dataclass
class Exported:
    root: Path
    topics: Topics
    cases: list[Any]
    event_count: int
    dead: list[Any]


def settings_for(bootstrap: str, topics: Topics, root: Path, group: str) -> FeedbackSettings:
    return FeedbackSettings(
        kafka={"bootstrap_servers": bootstrap},  # type: ignore[arg-type]
        group_id=group,
        input_topics=[topics.tasks, topics.decisions, topics.outcomes],
        dead_letter_topic=topics.dlq,
        root=root,
        batch_size=50,
        poll_timeout_s=0.2,
    )


def store_counts(root: Path) -> dict[str, int]:
    conn = sqlite3.connect(root / "feedback.sqlite")
    try:
        counts = dict(conn.execute("SELECT kind, count(*) FROM rows GROUP BY kind").fetchall())
        counts["outcomes"] = conn.execute("SELECT count(*) FROM outcomes").fetchone()[0]
        counts["pending"] = conn.execute("SELECT count(*) FROM pending_decisions").fetchone()[0]
        counts["seen"] = conn.execute("SELECT count(*) FROM seen_events").fetchone()[0]
        return counts
    finally:
        conn.close()


class Running:
    """A feedback worker in a thread of this process."""

    def __init__(self, settings: FeedbackSettings) -> None:
        self.worker, self.exporter = build_worker(settings)
        self.thread = threading.Thread(target=self.worker.run, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.worker.stop()
        self.thread.join(60)
        assert not self.thread.is_alive(), "worker did not stop"
        self.exporter.store.close()


def the_cases(fb: ModuleType) -> list[Any]:
    seg = fb.Seg
    return [
        fb.make_case(
            1,
            [
                seg("my card is blocked", "my card was blocked today", "negative", "negative"),
                seg("thanks for calling", None, "positive", None),
            ],
            verdicts=(("card_data.spoken", True),),
            decide_after_s=60,
        ),
        fb.make_case(
            2,
            [seg("I want to cancel", "I want to cancel", "negative", "negative")],
            verdicts=(("card_data.spoken", True), ("disclosure.missing", True)),
            decide_after_s=120,
        ),
        fb.make_case(
            3,
            [seg("hello there", "hello", "negative", "neutral", fb.ASR_V2)],
            verdicts=(("card_data.spoken", False),),
            decide_after_s=180,
        ),
        fb.make_case(
            4,
            [seg("all good now", None, "neutral", "neutral")],
            verdicts=(("card_data.spoken", True), ("disclosure.missing", False)),
            decide_after_s=240,
        ),
        fb.make_case(
            5,
            [seg("great service", None, "positive", "positive")],
            decide_after_s=300,
        ),
        fb.make_case(
            6,
            [
                seg(
                    "my number is [CARD_NUMBER]",
                    "my number is 4111 1111 1111 1111",
                    "positive",
                    "negative",
                )
            ],
            decide_after_s=600,
        ),
    ]


@pytest.fixture(scope="module")
def exported(
    kafka_bootstrap: str, kafka_admin: Any, tmp_path_factory: pytest.TempPathFactory, fb: ModuleType
) -> Iterator[Exported]:
    """Produce six reviewed cases and five released-without-review outcomes, export them."""
    from confluent_kafka.admin import NewTopic

    names = {k: f"test.fb-{k}.{uuid.uuid4().hex[:12]}" for k in ("tasks", "dec", "out", "dlq")}
    for future in kafka_admin.create_topics(
        [NewTopic(n, num_partitions=3, replication_factor=1) for n in names.values()]
    ).values():
        future.result(timeout=30)
    topics = Topics(names["tasks"], names["dec"], names["out"], names["dlq"])
    root = tmp_path_factory.mktemp("feedback")
    cases = the_cases(fb)
    autos = [fb.auto_outcome(i) for i in range(4)] + [fb.auto_outcome(9, "sampled")]

    # The first decision arrives before its task: it must wait, then be applied.
    running = Running(settings_for(kafka_bootstrap, topics, root, f"g-{uuid.uuid4().hex}"))
    try:
        produce_events(kafka_bootstrap, topics.decisions, [cases[0].decision])
        assert wait_for(lambda: store_counts(root)["pending"] == 1, 60)
        produce_events(kafka_bootstrap, topics.tasks, [c.task for c in cases])
        produce_events(kafka_bootstrap, topics.decisions, [c.decision for c in cases[1:]])
        produce_events(kafka_bootstrap, topics.outcomes, [c.outcome for c in cases] + autos)
        # Redelivered copies (same event ids) and bad input.
        key, value, headers, _ = encode(cases[1].decision, source="test")
        produce_raw(kafka_bootstrap, topics.decisions, [(key, value, headers)])
        started = next(e for e in example_events() if isinstance(e, CallStartedV1))
        _, s_value, s_headers, _ = encode(started, source="test")
        dec_type = [(n, v) for n, v in headers if n != "ce_id"] + [("ce_id", b"bad-json-1")]
        produce_raw(
            kafka_bootstrap,
            topics.decisions,
            [(b"call-0002", b"{not json", dec_type), (b"call-0002", s_value, s_headers)],
        )
        expected_asr = 7  # every segment of the approved tasks
        assert wait_for(
            lambda: (
                store_counts(root).get("asr") == expected_asr
                and store_counts(root)["outcomes"] == 11
            ),
            90,
        ), store_counts(root)
        dead = read_topic(kafka_bootstrap, topics.dlq, expect=2, settle_s=0.5)
    finally:
        running.stop()
    publisher = Publisher(settings_for(kafka_bootstrap, topics, root, "unused"))
    publisher.close()  # the final publish a service does on SIGTERM
    event_count = 3 * len(cases) + len(autos)
    yield Exported(root, topics, cases, event_count, dead)


def sets(root: Path, kind: str) -> list[Path]:
    return sorted((root / "datasets" / kind).glob("v1/tenant=*/date=*/model=*"))


def test_parquet_reread_matches_the_decisions_row_by_row(exported: Exported) -> None:
    asr: dict[str, dict[str, Any]] = {}
    for folder in sets(exported.root, "asr"):
        for row in pq.read_table(folder / "data.parquet").to_pylist():
            assert row["row_id"] not in asr
            asr[row["row_id"]] = row
    sentiment = {
        r["row_id"]: r
        for folder in sets(exported.root, "sentiment")
        for r in pq.read_table(folder / "data.parquet").to_pylist()
    }
    compliance = {
        r["row_id"]: r
        for folder in sets(exported.root, "compliance")
        for r in pq.read_table(folder / "data.parquet").to_pylist()
    }
    want_asr, want_sentiment, want_compliance = set(), set(), set()
    for case in exported.cases:
        d: ReviewDecisionV1 = case.decision
        corrections = {c.segment_id: c.text for c in d.transcript_corrections}
        for seg in case.task.segments:
            row = asr[f"{d.decision_id}/{seg.segment_id}"]
            want_asr.add(row["row_id"])
            expected_text = corrections.get(seg.segment_id, seg.text)
            if "4111" in expected_text:
                expected_text = "my number is [CARD_NUMBER]"
            assert row["text"] == expected_text
            assert row["pred_text"] == seg.text
            assert row["offset"] == seg.start_s
            assert row["duration"] == pytest.approx(seg.end_s - seg.start_s)
            assert row["corrected"] == (expected_text != seg.text)
            assert row["model_version"] == seg.asr_model.version
            assert row["decided_at"] == d.occurred_at
            assert row["reviewer_id"] == d.reviewer_id
            assert row["audio_filepath"] == f"audio/acme/{d.call_id}/{seg.speaker}.wav"
        for label in d.sentiment_labels:
            row = sentiment[f"{d.decision_id}/{label.segment_id}"]
            want_sentiment.add(row["row_id"])
            seg = next(s for s in case.task.segments if s.segment_id == label.segment_id)
            assert (row["label"], row["model_label"]) == (label.label, seg.sentiment_label)
            assert row["agree"] == (label.label == seg.sentiment_label)
        for verdict in d.finding_verdicts:
            row = compliance[f"{d.decision_id}/{verdict.finding_id}"]
            want_compliance.add(row["row_id"])
            assert row["rule_id"] == verdict.rule_id
            assert row["true_positive"] == (verdict.verdict == "confirmed")
            assert row["pack_version"] == "1"
    assert set(asr) == want_asr
    assert set(sentiment) == want_sentiment
    assert set(compliance) == want_compliance
    # Only redacted text is written, anywhere under the root.
    for path in exported.root.rglob("*"):
        if path.is_file() and path.suffix in (".jsonl", ".json", ".parquet"):
            data = path.read_bytes()  # the whole number: hashes and timestamps can hold "4111"
            assert b"4111 1111" not in data and b"4111111111111111" not in data, path


def test_sets_are_partitioned_by_date_and_model_version_with_manifests(
    exported: Exported,
) -> None:
    folders = [p.relative_to(exported.root).as_posix() for p in sets(exported.root, "asr")]
    assert folders == [
        "datasets/asr/v1/tenant=acme/date=2026-11-25/model=faster-whisper_whisper-tiny@ct2-int8",
        "datasets/asr/v1/tenant=acme/date=2026-11-25/model=faster-whisper_whisper-tiny@ct2-int8-v2",
    ]
    for kind in ("asr", "sentiment", "compliance"):
        for folder in sets(exported.root, kind):
            manifest = json.loads((folder / "manifest.json").read_text())
            assert manifest["kind"] == kind
            jsonl = "nemo.jsonl" if kind == "asr" else "data.jsonl"
            lines = (folder / jsonl).read_text().splitlines()
            assert (
                manifest["counts"]["rows"]
                == len(lines)
                == pq.read_metadata(folder / "data.parquet").num_rows
            )
            for name, entry in manifest["files"].items():
                data = (folder / name).read_bytes()
                assert entry["sha256"] == hashlib.sha256(data).hexdigest()
                assert entry["bytes"] == len(data)
    v1 = sets(exported.root, "asr")[0]
    nemo = [json.loads(line) for line in (v1 / "nemo.jsonl").read_text().splitlines()]
    for entry in nemo:
        assert {"audio_filepath", "offset", "duration", "text"} <= set(entry)
    manifest = json.loads((v1 / "manifest.json").read_text())
    assert manifest["model"] == {"name": "faster-whisper/whisper-tiny", "version": "ct2-int8"}
    # Only case 1 changed words: case 2 retyped the same text, case 6 matches once redacted.
    assert manifest["counts"]["corrected"] == 1
    ls = exported.root / "label-studio" / "tenant=acme" / "date=2026-11-25" / "tasks.json"
    tasks = json.loads(ls.read_text())
    assert len(tasks) == 7
    assert all(t["predictions"] and t["annotations"] for t in tasks)
    index = json.loads((exported.root / "index.json").read_text())
    assert len(index["sets"]) == len(list(exported.root.rglob("manifest.json")))


def test_bad_input_is_dead_lettered(exported: Exported) -> None:
    classes = sorted(r.headers["dlq_error_class"].decode() for r in exported.dead)
    assert classes == ["InvalidJson", "UnknownEventType"]
    for record in exported.dead:
        for header in DLQ_HEADERS:
            assert header in record.headers
        assert record.headers["dlq_original_topic"].decode() == exported.topics.decisions


def _snapshot(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file() and not p.name.startswith("feedback.sqlite")
    }


def test_replaying_every_topic_from_the_start_adds_no_training_row(
    exported: Exported, kafka_bootstrap: str
) -> None:
    before_counts = store_counts(exported.root)
    before_files = _snapshot(exported.root)
    topics = [exported.topics.tasks, exported.topics.decisions, exported.topics.outcomes]

    def skipped() -> float:
        return sum(
            REGISTRY.get_sample_value("loopwise_feedback_redeliveries_total", {"topic": t}) or 0.0
            for t in topics
        )

    already = skipped()
    # A new consumer group reads every topic from the start.
    settings = settings_for(
        kafka_bootstrap, exported.topics, exported.root, f"replay-{uuid.uuid4()}"
    )
    running = Running(settings)
    try:
        # Every valid event (and the one duplicate) comes back, and is recognised as seen.
        assert wait_for(lambda: skipped() - already >= exported.event_count + 1, 90), (
            skipped() - already
        )
    finally:
        running.stop()
    Publisher(settings).close()
    assert store_counts(exported.root) == before_counts
    assert _snapshot(exported.root) == before_files


def test_partition_folder_layout(tmp_path: Path) -> None:
    p = Partition("sentiment", "acme", "2026-11-25", "vader@3.3.2")
    assert partition_dir(tmp_path, p) == (
        tmp_path / "datasets/sentiment/v1/tenant=acme/date=2026-11-25/model=vader@3.3.2"
    )


def _words(text: str) -> list[str]:
    return re.sub(r"[^\w\s]", "", text.lower()).split()


def _edit_distance(ref: list[str], hyp: list[str]) -> int:
    """Word-level Levenshtein distance, written out here to check jiwer independently."""
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1]


def test_report_figures_on_the_known_set(
    exported: Exported, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", "--root", str(exported.root), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)

    # WER per ASR version, from the pairs the cases define.
    pairs: dict[str, list[tuple[str, str]]] = {}
    for case in exported.cases:
        fixes = {c.segment_id: c.text for c in case.decision.transcript_corrections}
        for seg in case.task.segments:
            ref = fixes.get(seg.segment_id, seg.text).replace(
                "4111 1111 1111 1111", "[CARD_NUMBER]"
            )
            pairs.setdefault(seg.asr_model.version, []).append((ref, seg.text))
    for row in report["asr"]:
        expected = pairs[row["model_version"]]
        errors = sum(_edit_distance(_words(r), _words(h)) for r, h in expected)
        words = sum(len(_words(r)) for r, _ in expected)
        assert (row["errors"], row["reference_words"]) == (errors, words)
        assert row["wer"] == pytest.approx(errors / words)
    assert {r["model_version"]: r["wer"] for r in report["asr"]} == pytest.approx(
        {"ct2-int8": 2 / 21, "ct2-int8-v2": 1.0}
    )

    # Sentiment (model, reviewer): (neg,neg) (neg,neg) (neg,neu) (neu,neu) (pos,pos) (pos,neg).
    # Observed agreement 4/6; chance from the marginals: model neg 3 neu 1 pos 2,
    # reviewer neg 3 neu 2 pos 1 -> (3*3 + 1*2 + 2*1) / 36 = 13/36.
    p_o, p_e = Fraction(4, 6), Fraction(13, 36)
    (sentiment,) = report["sentiment"]
    assert (sentiment["pairs"], sentiment["agree"]) == (6, 4)
    assert sentiment["accuracy"] == pytest.approx(float(p_o))
    assert sentiment["kappa"] == pytest.approx(float((p_o - p_e) / (1 - p_e)))  # 11/23

    precision = {
        r["rule_id"]: (r["confirmed"], r["dismissed"], r["precision"]) for r in report["compliance"]
    }
    assert precision == {"card_data.spoken": (3, 1, 0.75), "disclosure.missing": (1, 1, 0.5)}

    (releases,) = report["releases"]
    assert releases["counts"] == {"auto": 4, "sampled": 1, "reviewed": 6, "expired": 0}
    assert releases["shares"]["auto"] == pytest.approx(4 / 11)

    # Task created -> decided: 60, 120, 180, 240, 300, 600 s.
    (times,) = report["decisions"]
    assert times["decisions"] == 6
    assert times["mean_s"] == pytest.approx(250.0)
    assert times["p50_s"] == pytest.approx((180 + 240) / 2)
    assert times["p90_s"] == pytest.approx(300 + 0.5 * (600 - 300))
    assert times["mean_handling_s"] == pytest.approx(30.0)
    assert report["totals"]["rows"] == {
        "asr": 7,
        "compliance": 6,
        "label_studio": 7,
        "sentiment": 6,
    }

    # The same figures as Prometheus gauges, labelled by version only.
    kappa = REGISTRY.get_sample_value(
        "loopwise_feedback_sentiment_kappa", {"model": "vader", "model_version": "3.3.2"}
    )
    assert kappa == pytest.approx(11 / 23)
    wer = REGISTRY.get_sample_value(
        "loopwise_feedback_asr_wer_ratio",
        {"model": "faster-whisper/whisper-tiny", "model_version": "ct2-int8-v2"},
    )
    assert wer == pytest.approx(1.0)


def test_report_window_slides_over_event_time(
    exported: Exported, capsys: pytest.CaptureFixture[str]
) -> None:
    # Case n is decided at T0 + n min + its wait: cases 2 and 3 at T0+240 s and T0+360 s.
    until = (exported.cases[2].decision.occurred_at).isoformat()
    assert (
        main(
            ["report", "--root", str(exported.root), "--json", "--window", "200s", "--until", until]
        )
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert report["decisions"][0]["decisions"] == 2
    assert sorted((r["model_version"], r["segments"]) for r in report["asr"]) == [
        ("ct2-int8", 1),
        ("ct2-int8-v2", 1),
    ]
    assert main(["report", "--root", str(exported.root)]) == 0
    text = capsys.readouterr().out
    assert "Sentiment agreement" in text and "card_data.spoken" in text
