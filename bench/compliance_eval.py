"""Compliance findings on the STAR dev dialogues, and phrase matching under simulated ASR noise.

Run from the repository root: `uv run python bench/compliance_eval.py [--packs PATH]`.

1. Scores `dialogues/star_dev_100.jsonl` with the shipped default pack, twice: on
   the text as given, and after `loopwise.redaction` (as the transcription service
   would publish it), and prints findings per rule and how the dialogues with a
   finding relate to the `user_aggressive_or_annoyed` label.
2. Puts every phrase of the pack's phrase rules into a carrier sentence, garbles
   it the way recognisers do (a letter substituted in one word, a dropped
   apostrophe, a filler word, a word split in two), and prints how many each
   rule still finds with fuzzy matching on and off.
3. With `--stream` (and KAFKA_BOOTSTRAP_SERVERS set): runs `loopwise-compliance run`
   on fresh topics of that broker, sends N calls and measures how fast the
   service turns segments into compliance events.
PII/PCI precision and recall per entity type are measured by bench/redaction_eval.py.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from loopwise_compliance.batch import BatchScorer
from loopwise_compliance.engine import CompiledPack, Segment, check_segment
from loopwise_compliance.handler import ComplianceScorer
from loopwise_compliance.rules import MatchSettings, PhraseRule, RulePack, load_packs

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "dialogues" / "star_dev_100.jsonl"
LABEL = "user_aggressive_or_annoyed"


def redacted_copy(dialogue: dict[str, Any]) -> dict[str, Any] | None:
    """The dialogue with every turn redacted as transcription would; None without the library."""
    try:
        from loopwise.redaction import redact
    except ImportError:
        return None
    turns = []
    previous: dict[str, str] = {}
    for turn in dialogue["turns"]:
        speaker = turn["speaker"]
        done = redact(turn["text"], context=previous.get(speaker, ""), count=False)
        previous[speaker] = turn["text"]
        turns.append(
            {
                **turn,
                "text": done.text,
                "redactions": [s.model_dump(mode="json") for s in done.spans],
            }
        )
    return {**dialogue, "turns": turns}


def score(scorer: ComplianceScorer, dialogues: list[dict[str, Any]]) -> list[dict[str, Any]]:
    batch = BatchScorer(scorer)
    out: list[dict[str, Any]] = []
    for dialogue in dialogues:
        out.extend(batch.line(dialogue))
    return out


def report(title: str, scored: list[dict[str, Any]]) -> None:
    labelled = sum(1 for d in scored if d[LABEL])
    unlabelled = len(scored) - labelled
    print(f"\n## {title}")
    print(f"{len(scored)} dialogues, {labelled} labelled {LABEL}, {unlabelled} not")
    seg_counts: Counter[str] = Counter()
    calls_with: dict[str, set[str]] = defaultdict(set)
    category_of: dict[str, str] = {}
    severity_of: dict[str, str] = {}
    for d in scored:
        for turn in d["turns"]:
            for f in turn["findings"]:
                seg_counts[f["rule_id"]] += 1
                calls_with[f["rule_id"]].add(d["id"])
                category_of[f["rule_id"]] = f["category"]
                severity_of[f["rule_id"]] = f["severity"]
        for f in d["call_findings"]:
            seg_counts[f["rule_id"]] += 1
            calls_with[f["rule_id"]].add(d["id"])
            category_of[f["rule_id"]] = f["category"]
            severity_of[f["rule_id"]] = f["severity"]
    label_of = {d["id"]: bool(d[LABEL]) for d in scored}
    near = [
        (f["rule_id"], f["evidence"]["text"], turn["text"][:80])
        for d in scored
        for turn in d["turns"]
        for f in turn["findings"]
        if f["score"] < 1.0 and f.get("matched_phrase", "").find("[") < 0
    ]
    print(f"segment findings that only a near (fuzzy) match made: {len(near)}")
    for rule, evidence, text in near:
        print(f"  {rule}: {evidence!r} in {text!r}")
    print(
        f"\n| rule | category | severity | findings | dialogues | of them {LABEL} "
        "| share of labelled | share of unlabelled |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for rule, n in sorted(seg_counts.items(), key=lambda kv: (category_of[kv[0]], kv[0])):
        ids = calls_with[rule]
        pos = sum(label_of[i] for i in ids)
        print(
            f"| {rule} | {category_of[rule]} | {severity_of[rule]} | {n} | {len(ids)} | {pos} "
            f"| {pos / max(labelled, 1):.1%} | {(len(ids) - pos) / max(unlabelled, 1):.1%} |"
        )
    print(f"\nAs a detector of {LABEL} (dialogue flagged when it has a segment finding of):")
    print("| findings of | flagged | precision | recall | F1 |")
    print("|---|---:|---:|---:|---:|")
    groups = {
        "escalation (any rule)": lambda f: f["category"] == "escalation",
        "escalation, not frustration": lambda f: (
            f["category"] == "escalation" and f["rule_id"] != "escalation-frustration"
        ),
        "escalation or vulnerable_customer": lambda f: (
            f["category"] in ("escalation", "vulnerable_customer")
        ),
        "any segment rule": lambda f: True,
    }
    for name, keep in groups.items():
        flagged = {d["id"] for d in scored for t in d["turns"] for f in t["findings"] if keep(f)}
        tp = sum(label_of[i] for i in flagged)
        precision = tp / len(flagged) if flagged else 0.0
        recall = tp / labelled if labelled else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        print(f"| {name} | {len(flagged)} | {precision:.2f} | {recall:.2f} | {f1:.2f} |")


CARRIERS = ("well {p} you know", "{p}", "okay so {p} right", "um {p}")
FILLERS = ("um", "uh", "you know")


def garble(phrase: str, rng: random.Random) -> str:
    """One recogniser-like error in the phrase: a letter, an apostrophe, a filler or a split."""
    words = phrase.split()
    choice = rng.randrange(4)
    long_words = [i for i, w in enumerate(words) if len(w) >= 5 and w.isalpha()]
    if choice == 0 and long_words:  # one letter wrong in a long word
        i = rng.choice(long_words)
        j = rng.randrange(1, len(words[i]) - 1)
        letter = rng.choice([c for c in "aeiourstnl" if c != words[i][j]])
        words[i] = words[i][:j] + letter + words[i][j + 1 :]
    elif choice == 1 and any("'" in w for w in words):  # apostrophe dropped
        words = [w.replace("'", "") for w in words]
    elif choice == 2 and len(words) > 1:  # a filler inside the phrase
        words.insert(rng.randrange(1, len(words)), rng.choice(FILLERS))
    elif long_words:  # a word split in two
        i = rng.choice(long_words)
        cut = rng.randrange(2, len(words[i]) - 2)
        words[i : i + 1] = [words[i][:cut], words[i][cut:]]
    else:
        words.insert(len(words), rng.choice(FILLERS))
    return " ".join(words)


def noise_experiment(pack: RulePack, seed: int) -> None:
    rng = random.Random(seed)
    exact_pack = pack.model_copy(
        update={
            "match": MatchSettings(fuzzy=False),
            "rules": tuple(
                r.model_copy(update={"match": None}) if isinstance(r, PhraseRule) else r
                for r in pack.rules
            ),
        }
    )
    fuzzy_cp, exact_cp = CompiledPack.compile(pack), CompiledPack.compile(exact_pack)
    rows: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for rule in pack.rules:
        if not isinstance(rule, PhraseRule) or not rule.phrases:
            continue
        for phrase in rule.phrases:
            for carrier in CARRIERS:
                for noisy in (False, True):
                    said = garble(phrase, rng) if noisy else phrase
                    segment = Segment("s", rule.speakers[0], 0.0, 3.0, carrier.format(p=said))
                    col = 2 if noisy else 0
                    for k, cp in enumerate((fuzzy_cp, exact_cp)):
                        ids = {f.rule_id for f in check_segment(cp, segment, "c", None)}
                        if rule.id in ids:
                            rows[rule.id][col + k] += 1
            rows[rule.id].append(len(CARRIERS))
    print("\n## Phrase rules under simulated ASR errors (every phrase x 4 carrier sentences)")
    print("| rule | utterances | clean: fuzzy | clean: exact | garbled: fuzzy | garbled: exact |")
    print("|---|---:|---:|---:|---:|---:|")
    totals = [0, 0, 0, 0, 0]
    for rule_id, row in rows.items():
        n = sum(row[4:])
        cells = row[:4]
        totals = [t + c for t, c in zip(totals, [*cells, n], strict=True)]
        print(f"| {rule_id} | {n} | " + " | ".join(f"{c / n:.0%}" for c in cells) + " |")
    n = totals[4]
    print(f"| all | {n} | " + " | ".join(f"{c / n:.0%}" for c in totals[:4]) + " |")


def stream_bench(packs: Path, calls: int, per_call: int) -> None:
    """Throughput of the service on a real broker (startup excluded)."""
    import os
    import signal
    import socket
    import subprocess
    import sys
    import urllib.request
    import uuid
    from datetime import UTC, datetime

    from confluent_kafka import Consumer, Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    from loopwise.events import (
        CallEndedV1,
        CallStartedV1,
        ChannelSpec,
        ModelRef,
        TranscriptSegmentV1,
        encode,
    )

    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if not bootstrap:
        print("\nskipped the stream part: KAFKA_BOOTSTRAP_SERVERS is not set")
        return
    tag = uuid.uuid4().hex[:8]
    names = {n: f"bench.compliance.{n}.{tag}" for n in ("calls", "tx", "out", "dlq")}
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics(
        [NewTopic(t, num_partitions=3, replication_factor=1) for t in names.values()]
    ).values():
        future.result(30)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {
        **os.environ,
        "LOOPWISE_COMPLIANCE_GROUP_ID": f"bench-compliance-{tag}",
        "LOOPWISE_COMPLIANCE_CALLS_TOPIC": names["calls"],
        "LOOPWISE_COMPLIANCE_TRANSCRIPTS_TOPIC": names["tx"],
        "LOOPWISE_COMPLIANCE_OUTPUT_TOPIC": names["out"],
        "LOOPWISE_COMPLIANCE_DEAD_LETTER_TOPIC": names["dlq"],
        "LOOPWISE_COMPLIANCE_RULE_PACKS": str(packs),
        "LOOPWISE_COMPLIANCE_OBSERVABILITY__PORT": str(port),
        "LOOPWISE_COMPLIANCE_OBSERVABILITY__LOG_LEVEL": "WARNING",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "loopwise_compliance", "run"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz").status == 200:
                    break
            except OSError:
                pass
            time.sleep(0.5)
        texts = [
            "Hello, this call is recorded, how can I help?",
            "I have been waiting forever, this is ridiculous",
            "Can I take your date of birth and your postcode?",
            "My card number is [CARD_NUMBER] and I want to make a complaint",
            "Thanks, your balance is forty dollars",
        ]
        now = datetime.now(UTC)
        asr = ModelRef(name="bench", version="1")
        producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
        started = time.perf_counter()
        for c in range(calls):
            call_id = f"bench-{c}"
            events: list[tuple[str, Any]] = [
                (
                    names["calls"],
                    CallStartedV1(
                        tenant_id="acme",
                        call_id=call_id,
                        occurred_at=now,
                        queue="billing",
                        region="eu",
                        channels=[ChannelSpec(index=0, role="mixed")],
                    ),
                )
            ]
            for i in range(per_call):
                events.append(
                    (
                        names["tx"],
                        TranscriptSegmentV1(
                            tenant_id="acme",
                            call_id=call_id,
                            occurred_at=now,
                            producer=asr,
                            segment_id=f"s{i}",
                            speaker="agent" if i % 2 == 0 else "customer",
                            start_s=i * 5.0,
                            end_s=i * 5.0 + 4,
                            text=texts[i % len(texts)],
                            confidence=0.9,
                            language="en",
                            source="realtime",
                        ),
                    )
                )
            events.append(
                (names["calls"], CallEndedV1(tenant_id="acme", call_id=call_id, occurred_at=now))
            )
            for topic, event in events:
                key, value, headers, _ = encode(event, source="bench")
                producer.produce(topic, key=key, value=value, headers=headers)  # type: ignore[arg-type]
            producer.poll(0)
        producer.flush(60)
        expected = calls * (per_call + 1)
        consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"bench-reader-{tag}",
                "auto.offset.reset": "earliest",
            }
        )
        consumer.subscribe([names["out"]])
        seen = 0
        first: float | None = None
        deadline = time.monotonic() + 600
        while seen < expected and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            seen += 1
            first = first or time.perf_counter()
        last = time.perf_counter()
        consumer.close()
        segments = calls * per_call
        print(f"\n## The service on the local broker ({calls} calls x {per_call} segments)")
        print(f"outputs: {seen} of {expected}")
        print(
            f"from first send: {last - started:.1f} s = {segments / (last - started):.0f} "
            "segments/s (one instance, 3 partitions, acks=all, changelog writes included)"
        )
        if first is not None and last > first:
            print(f"first to last output: {last - first:.1f} s")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
        admin.delete_topics(list(names.values()))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packs", type=Path, default=ROOT / "deploy" / "rule-packs")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--stream", action="store_true", help="also measure the Kafka service")
    parser.add_argument("--calls", type=int, default=200, help="calls sent with --stream")
    parser.add_argument("--segments", type=int, default=20, help="segments per call (--stream)")
    args = parser.parse_args()
    index = load_packs(args.packs)
    scorer = ComplianceScorer(index)
    pack = index.default
    print(f"# compliance_eval: pack {pack.name} {pack.version_label}, {len(pack.rules)} rules")
    if not DATA.is_file():
        print(f"skipped the STAR part: {DATA} is absent")
    else:
        dialogues = [json.loads(line) for line in DATA.open(encoding="utf-8") if line.strip()]
        started = time.perf_counter()
        scored = score(scorer, dialogues)
        elapsed = time.perf_counter() - started
        turns = sum(len(d["turns"]) for d in dialogues)
        report("STAR dev 100, text as given", scored)
        print(
            f"\nthroughput: {turns} turns in {elapsed:.2f} s = {turns / elapsed:.0f} "
            "segments/s (batch, one process)"
        )
        redacted = [redacted_copy(d) for d in dialogues]
        if any(r is None for r in redacted):
            print("\nskipped the redacted pass: loopwise.redaction is not available")
        else:
            kept = [r for r in redacted if r is not None]
            spans = Counter(s["type"] for d in kept for t in d["turns"] for s in t["redactions"])
            print(f"\nloopwise.redaction spans on STAR: {dict(sorted(spans.items()))}")
            report("STAR dev 100, after loopwise.redaction", score(scorer, kept))
    noise_experiment(pack, args.seed)
    if args.stream:
        stream_bench(args.packs, args.calls, args.segments)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
