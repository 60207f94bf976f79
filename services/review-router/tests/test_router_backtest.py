"""Backtest: both input shapes of the batch contract, labels, and the CLI on stdin."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from loopwise_router.backtest import BacktestInputError, group_calls, run_backtest
from loopwise_router.policy import load_policy
from loopwise_router.routing import sampling_draw

ROOT = Path(__file__).resolve().parents[3]


def turn(speaker: str, text: str, score: float = 0.1, findings: list[Any] | None = None) -> Any:
    return {
        "speaker": speaker,
        "text": text,
        "sentiment": {"label": "neutral", "score": score, "confidence": 0.8},
        "findings": findings or [],
    }


CARD = {
    "rule_id": "card_data.spoken",
    "category": "card_data",
    "severity": "high",
    "score": 0.97,
    "evidence": {"start": 11, "end": 24, "text": "[CARD_NUMBER]"},
}


def dialogues() -> list[dict[str, Any]]:
    return [
        {
            "id": "d-card",
            "queue": "auto-q",
            "label": True,
            "turns": [turn("agent", "hello"), turn("customer", "my card is", findings=[CARD])],
        },
        {
            "id": "d-hold",
            "queue": "hold-q",
            "label": True,
            "turns": [turn("agent", "hi"), turn("customer", "ok")],
        },
        {
            "id": "d-fine",
            "queue": "auto-q",
            "label": False,
            "turns": [turn("agent", "hi"), turn("customer", "thanks")],
        },
        {
            "id": "d-missed",
            "queue": "auto-q",
            "label": True,
            "turns": [turn("customer", "this is awful", score=-0.9)],
        },
    ]


def test_dialogue_lines_counts_and_labels(policy_file: Path) -> None:
    policy = load_policy(policy_file)
    report = run_backtest(policy, group_calls(dialogues(), "label")).as_dict()
    assert report["items"] == 4 and report["segments"] == 7
    assert (report["held"], report["sampled"], report["auto"]) == (2, 0, 2)
    assert report["review_rate"] == 0.5
    assert report["segments_held"] == 1
    assert report["per_rule"]["card-live"] == {"fired": 1, "decided": 1}
    assert report["per_rule"]["hold-queue"] == {"fired": 1, "decided": 1}
    assert (report["positives"], report["caught"]) == (3, 2)
    assert report["recall"] == round(2 / 3, 4) and report["precision"] == 1.0
    assert report["random_sampling_recall"] == 0.5


def test_segment_lines_with_a_call_findings_line_and_sampling(tmp_path: Path) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text(
        "version: 1\nname: seg\nrules:\n"
        "  - id: disclosure\n    scope: call\n"
        "    when: {finding: {category: disclosure}}\n    outcome: hold\n"
        "  - id: sampled\n    scope: call\n    when: 'call.segments >= 1'\n"
        "    outcome: sample\n    rate: 0.5\n"
    )
    lines = []
    for c in range(40):
        for s in range(2):
            lines.append(
                {"call_id": f"c{c}", "speaker": "agent", "start": s * 2.0, "text": "words here"}
            )
        if c == 0:
            lines.append(
                {
                    "call_id": "c0",
                    "call_findings": [
                        {"rule_id": "recording", "category": "disclosure", "severity": "high"}
                    ],
                }
            )
    report = run_backtest(load_policy(policy), group_calls(lines)).as_dict()
    assert report["items"] == 40 and report["segments"] == 80
    expected = sum(sampling_draw(f"c{c}", "sampled") < 0.5 for c in range(1, 40))
    assert report["held"] == 1
    assert report["sampled"] == expected
    assert "recall" not in report  # no labels, no recall


def test_cli_reads_stdin_and_prints_json(policy_file: Path) -> None:
    text = "\n".join(json.dumps(d) for d in dialogues()) + "\n"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "loopwise_router",
            "backtest",
            "--policy",
            str(policy_file),
            "--input",
            "-",
            "--json",
        ],
        input=text,
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["items"] == 4 and report["caught"] == 2
    plain = subprocess.run(
        [
            sys.executable,
            "-m",
            "loopwise_router",
            "backtest",
            "--policy",
            str(policy_file),
            "--input",
            "-",
            "--label-field",
            "nothing",
        ],
        input=text,
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    assert plain.returncode == 0 and "review rate      50.0%" in plain.stdout
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "loopwise_router",
            "backtest",
            "--policy",
            str(policy_file),
            "--input",
            "-",
        ],
        input="{not json\n",
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    assert bad.returncode == 2 and "<stdin>:1: not JSON" in bad.stderr


def test_a_segment_that_ends_before_it_starts_stops_the_backtest() -> None:
    ok = {"call_id": "c1", "speaker": "agent", "start": 0.0, "end": 1.0, "text": "hello"}
    backwards = {"call_id": "c1", "speaker": "agent", "start": 5.0, "end": 2.5, "text": "hi"}
    with pytest.raises(
        BacktestInputError, match=r"^line 2: `end` \(2\.5\) is before `start` \(5\.0\)$"
    ):
        group_calls([ok, backwards])
    turn = {"speaker": "agent", "start_s": 3, "end_s": 1, "text": "hi"}
    with pytest.raises(BacktestInputError, match=r"^line 1: turn 1: `end` \(1\.0\) is before"):
        group_calls([{"id": "d", "turns": [ok, turn]}])
