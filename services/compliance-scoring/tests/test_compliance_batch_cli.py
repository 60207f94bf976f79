"""`loopwise-compliance batch`: segment lines grouped by call, dialogue lines, pass-through."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from typing import Any

from loopwise_compliance.batch import run_batch
from loopwise_compliance.handler import ComplianceScorer


def batch(scorer: ComplianceScorer, lines: list[Any]) -> tuple[int, list[dict[str, Any]], str]:
    source = io.StringIO(
        "".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines)
    )
    out, err = io.StringIO(), io.StringIO()
    code = run_batch(scorer, source, out, err)
    return code, [json.loads(line) for line in out.getvalue().splitlines()], err.getvalue()


def test_segment_lines_get_findings_and_one_call_line_per_call(scorer: ComplianceScorer) -> None:
    card = "it is [CARD_NUMBER]"
    lines = [
        {"call_id": "a", "speaker": "agent", "start": 0.0, "text": "Hello, how can I help?"},
        {
            "call_id": "a",
            "speaker": "customer",
            "start": 4.0,
            "text": card,
            "mine": [1],
            "redactions": [{"type": "CARD_NUMBER", "start": 6, "end": 19, "confidence": 0.9}],
        },
        {"call_id": "a", "speaker": "agent", "start": 45.0, "text": "This call is recorded."},
        {"call_id": "b", "speaker": "agent", "start": 1.0, "text": "This call is recorded."},
        {
            "call_id": "b",
            "speaker": "customer",
            "start": 3.0,
            "text": "I want to complain",
            "sentiment": {"label": "negative"},
        },
    ]
    code, out, err = batch(scorer, lines)
    assert code == 0, err
    assert [(o["call_id"], "call_findings" in o) for o in out] == [
        ("a", False),
        ("a", False),
        ("a", False),
        ("a", True),
        ("b", False),
        ("b", False),
        ("b", True),
    ]
    assert out[1]["mine"] == [1] and out[1]["redactions"] == lines[1]["redactions"]
    assert [f["rule_id"] for f in out[1]["findings"]] == ["card-number-spoken"]
    assert out[1]["findings"][0]["evidence"]["text"] == "[CARD_NUMBER]"
    assert out[1]["findings"][0]["segment_id"] == "a:1"
    assert [f["rule_id"] for f in out[3]["call_findings"]] == ["recording-notice"]
    assert out[3]["segments_checked"] == 3
    assert out[3]["rule_pack"]["name"] == "default"
    assert out[5]["sentiment"] == {"label": "negative"}
    assert out[6]["call_findings"] == []


def test_dialogue_lines_use_turn_index_as_time(scorer: ComplianceScorer) -> None:
    dialogue = {
        "id": "d1",
        "user_aggressive_or_annoyed": True,
        "turns": [
            {"speaker": "customer", "text": "This is ridiculous!"},
            {"speaker": "agent", "text": "Sorry. Your balance is ten dollars."},
        ],
    }
    code, (out,), _ = batch(scorer, [dialogue])
    assert code == 0
    assert out["user_aggressive_or_annoyed"] is True
    assert [f["rule_id"] for f in out["turns"][0]["findings"]] == ["escalation-frustration"]
    assert out["turns"][1]["findings"] == []
    assert {f["rule_id"] for f in out["call_findings"]} == {
        "recording-notice",
        "account-details-before-verification",
    }
    assert out["rule_pack"]["version"] == "1.0.0"


def test_foreign_and_bad_lines(scorer: ComplianceScorer) -> None:
    summary = {"call_id": "a", "call_sentiment": {"final": -0.5}}
    code, out, err = batch(
        scorer,
        [summary, "{not json", {"call_id": "a", "speaker": "agent", "start": "soon", "text": "x"}],
    )
    assert code == 1
    assert out[0] == summary  # another tool's line passes through untouched
    assert out[1]["start"] == "soon" and "findings" not in out[1]
    assert "line 2: skipped, not JSON" in err and "line 3: passed through unscored" in err


def test_batch_reads_stdin_as_a_console_command(kit: Any) -> None:
    line = {"call_id": "c", "speaker": "customer", "start": 0, "text": "I'll call my lawyer"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "loopwise_compliance",
            "batch",
            "-",
            "--rule-packs",
            str(kit.packs_dir / "default.yaml"),
        ],
        input=json.dumps(line) + "\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    first, call = (json.loads(x) for x in proc.stdout.splitlines())
    assert [f["rule_id"] for f in first["findings"]] == ["escalation-legal-regulator"]
    assert call["call_id"] == "c" and call["segments_checked"] == 1


def test_a_bad_segment_line_changes_no_call(scorer: ComplianceScorer) -> None:
    """It neither ends the open call's run (its call line used to be lost) nor opens one."""
    code, out, err = batch(
        scorer,
        [
            {"call_id": "a", "speaker": "agent", "start": 0.0, "text": "This call is recorded."},
            {"call_id": "b", "speaker": "agent", "start": "soon", "text": "Hello"},
            {"id": "d", "turns": [{"speaker": "agent", "text": 7}]},
            {"call_id": "b", "speaker": "customer", "start": 1.0, "text": "This is ridiculous!"},
        ],
    )
    assert code == 1
    assert "line 2: passed through unscored: `start` must be a number" in err
    assert "line 3: passed through unscored: turn 0: `text` must be a string" in err
    assert [(line.get("call_id", line.get("id")), "segments_checked" in line) for line in out] == [
        ("a", False),
        ("b", False),  # the bad lines, passed through where they were read
        ("d", False),
        ("a", True),
        ("b", False),
        ("b", True),
    ]
    assert "findings" not in out[1] and "call_findings" not in out[2]
    assert out[3]["segments_checked"] == 1 and out[5]["segments_checked"] == 1
    assert out[4]["findings"][0]["segment_id"] == "b:0"


def test_a_segment_that_ends_before_it_starts_is_rejected_not_changed(
    scorer: ComplianceScorer,
) -> None:
    backwards = {"call_id": "a", "speaker": "agent", "start": 5.0, "end": 2.5, "text": "Hi"}
    dialogue = {"id": "d", "turns": [{"speaker": "agent", "start": 3, "end": 1, "text": "Hi"}]}
    code, out, err = batch(scorer, [backwards, dialogue])
    assert code == 1
    assert "line 1: passed through unscored: `end` (2.5) is before `start` (5.0)" in err
    assert "line 2: passed through unscored: turn 0: `end` (1.0) is before `start` (3.0)" in err
    assert out == [backwards, dialogue]  # passed through as read, no findings, no call line
