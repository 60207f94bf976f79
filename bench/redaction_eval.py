"""Precision and recall of loopwise.redaction on presidio-research's synthetic PII set.

Run from the repository root: `uv run python bench/redaction_eval.py [--errors N]`.
A gold span counts as found when a prediction of the mapped type overlaps it; a
prediction counts as correct when it overlaps a gold span of its mapped type.
Dates count only where they are birth dates (birth words just before them).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections import Counter
from pathlib import Path

from loopwise.redaction import ALL_TYPES, detect, redact, redact_words

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "pii" / "presidio_research_synth_dataset_v2.jsonl"
DIALOGUES = ROOT.parent / "shared" / "data" / "dialogues" / "star_dev_100.jsonl"

# Our type -> the dataset's entity type it is scored against.
MAPPING = {
    "CARD_NUMBER": "CREDIT_CARD",
    "PHONE": "PHONE_NUMBER",
    "EMAIL": "EMAIL_ADDRESS",
    "US_SSN": "US_SSN",
    "IBAN": "IBAN_CODE",
    "BANK_ACCOUNT": "IBAN_CODE",
    "DATE_OF_BIRTH": "BIRTH_DATE",
}
BIRTH_WORDS = re.compile(r"born|birth|\bdob\b", re.IGNORECASE)


def gold_spans(record: dict[str, object]) -> list[tuple[str, int, int]]:
    """The record's spans, with DATE_TIME renamed BIRTH_DATE where it is a birth date."""
    text = str(record["text"])
    out = []
    spans = record["spans"]
    assert isinstance(spans, list)
    for s in spans:
        kind = s["entity_type"]
        if kind == "DATE_TIME" and BIRTH_WORDS.search(text[max(0, s["start"] - 40) : s["start"]]):
            kind = "BIRTH_DATE"
        out.append((kind, s["start"], s["end"]))
    return out


def main() -> int:
    """Print per-type precision and recall on the dataset."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--errors", type=int, default=0, help="print up to N misses per type")
    args = parser.parse_args()
    if not DATA.exists():
        print(f"dataset not found at {DATA}; nothing to measure", file=sys.stderr)
        return 1
    records = [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines()]

    gold_count: Counter[str] = Counter()
    found: Counter[str] = Counter()
    predicted: Counter[str] = Counter()
    correct: Counter[str] = Counter()
    unmapped: Counter[tuple[str, str]] = Counter()
    misses: dict[str, list[str]] = {}
    seconds = 0.0
    chars = 0
    for rec in records:
        text = rec["text"]
        gold = gold_spans(rec)
        t0 = time.perf_counter()
        dets = detect(text, ALL_TYPES)
        seconds += time.perf_counter() - t0
        chars += len(text)
        for kind, g0, g1 in gold:
            gold_count[kind] += 1
            hit = any(MAPPING.get(d.type) == kind and d.start < g1 and g0 < d.end for d in dets)
            if hit:
                found[kind] += 1
            elif kind in MAPPING.values():
                misses.setdefault(kind, []).append(f"FN {text[g0:g1]!r} in {text!r}")
        for d in dets:
            target = MAPPING.get(d.type)
            overlapping = [k for k, g0, g1 in gold if d.start < g1 and g0 < d.end]
            if target is None:
                unmapped[(d.type, overlapping[0] if overlapping else "-")] += 1
                continue
            predicted[target] += 1
            if target in overlapping:
                correct[target] += 1
            else:
                what = overlapping[0] if overlapping else "no PII"
                misses.setdefault(target, []).append(
                    f"FP {d.type} {text[d.start : d.end]!r} ({what}) in {text!r}"
                )

    print(f"dataset: {DATA.name}, {len(records)} sentences")
    print(f"{'entity type':<18}{'gold':>6}{'found':>7}{'recall':>9}{'pred':>7}{'precision':>11}")
    covered = set(MAPPING.values())
    for kind, n in gold_count.most_common():
        if kind in covered:
            recall = found[kind] / n
            precision = correct[kind] / predicted[kind] if predicted[kind] else float("nan")
            print(
                f"{kind:<18}{n:>6}{found[kind]:>7}{recall:>9.1%}"
                f"{predicted[kind]:>7}{precision:>11.1%}"
            )
        else:
            print(f"{kind:<18}{n:>6}{'(not covered)':>20}")
    if unmapped:
        print("detections of types the dataset does not label (type, overlapped gold type):")
        for (kind, gold_kind), n in sorted(unmapped.items()):
            print(f"  {kind:<16}{gold_kind:<18}{n:>5}")
    print(
        f"speed: {len(records) / seconds:,.0f} sentences/s, {chars / seconds / 1e6:.2f} MB/s "
        f"(detect only, one thread)"
    )
    dialogue_report()
    if args.errors:
        for kind, lines in sorted(misses.items()):
            for line in lines[: args.errors]:
                print(f"[{kind}] {line}")
    return 0


def dialogue_report() -> None:
    """Redactions in real dialogue turns (no gold labels): what a reviewer would see go."""
    if not DIALOGUES.exists():
        print(f"(dialogues not found at {DIALOGUES})")
        return
    turns = [
        turn["text"]
        for line in DIALOGUES.read_text(encoding="utf-8").splitlines()
        for turn in json.loads(line)["turns"]
    ]
    kinds: Counter[str] = Counter()
    touched = 0
    t0 = time.perf_counter()
    for text in turns:
        result = redact(text)
        kinds.update(s.type for s in result.spans)
        touched += bool(result.spans)
    seconds = time.perf_counter() - t0
    words = [w for text in turns for w in re.findall(r"\s*\S+", text)]
    t0 = time.perf_counter()
    for i in range(0, len(words), 30):
        redact_words(words[i : i + 30])
    word_seconds = time.perf_counter() - t0
    print(
        f"dialogues: {len(turns)} turns of {DIALOGUES.name}, {touched} with a redaction: "
        + ", ".join(f"{k} {n}" for k, n in kinds.most_common())
    )
    print(
        f"  redact(): {seconds / len(turns) * 1e6:.0f} us per turn; "
        f"redact_words(): {word_seconds / (len(words) / 30) * 1e6:.0f} us per 30 words"
    )


if __name__ == "__main__":
    raise SystemExit(main())
