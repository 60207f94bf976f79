"""`loopwise-sentiment batch` and `check-config` as a user runs them (real subprocesses)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
STAR = ROOT.parent / "shared" / "data" / "dialogues" / "star_dev_100.jsonl"


def cli(
    *args: str, stdin: str = "", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "loopwise_sentiment", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env or dict(os.environ),
        timeout=120,
        check=False,
    )


def test_batch_adds_sentiment_to_segment_lines_and_passes_the_rest_through() -> None:
    lines = [
        {
            "call_id": "c1",
            "speaker": "customer",
            "start": 0.0,
            "text": "This is awful, I am furious.",
            "confidence": 0.93,
            "findings": [{"rule_id": "x"}],
        },
        {
            "call_id": "c1",
            "speaker": "customer",
            "start": 4.0,
            "text": "Oh great, another hour on hold.",
        },
        {"call_id": "c1", "call_findings": []},
    ]
    done = cli("batch", "-", stdin="\n".join(json.dumps(x) for x in lines) + "\n")
    assert done.returncode == 0, done.stderr
    out = [json.loads(x) for x in done.stdout.splitlines()]
    assert len(out) == 3
    assert out[0]["sentiment"]["label"] == "negative"
    assert out[0]["findings"] == [{"rule_id": "x"}] and out[0]["confidence"] == 0.93
    assert out[0]["sentiment"]["model"]["name"] == "vader-ngram"
    assert out[1]["sentiment"]["confidence"] < out[0]["sentiment"]["confidence"]
    assert out[2] == lines[2]
    for line in out[:2]:
        s = line["sentiment"]
        assert -1 <= s["score"] <= 1 and 0 <= s["confidence"] <= 1
        assert all(isinstance(n, str) for n in s["signals"])


def test_batch_reports_broken_lines_with_their_number_and_exits_1(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text('{"text": "good"}\n{broken\n[1]\n{"text": 5}\n', encoding="utf-8")
    done = cli("batch", str(path), "--model", "vader")
    assert done.returncode == 1
    assert len(done.stdout.splitlines()) == 1
    assert f"{path}:2: invalid JSON" in done.stderr
    assert f"{path}:3:" in done.stderr and f"{path}:4: text must be a string" in done.stderr


def test_batch_scores_dialogues_per_turn_and_per_call() -> None:
    if not STAR.exists():
        pytest.skip(f"dev data not found at {STAR}")
    sample = STAR.read_text(encoding="utf-8").splitlines()[:20]
    done = cli("batch", "-", stdin="\n".join(sample) + "\n")
    assert done.returncode == 0, done.stderr
    out = [json.loads(x) for x in done.stdout.splitlines()]
    assert len(out) == 20
    for original, line in zip(sample, out, strict=True):
        before = json.loads(original)
        assert line["id"] == before["id"]
        assert line["user_aggressive_or_annoyed"] == before["user_aggressive_or_annoyed"]
        assert all("sentiment" in t for t in line["turns"] if isinstance(t.get("text"), str))
        call = line["call_sentiment"]
        customer = sum(1 for t in before["turns"] if t.get("speaker") == "customer")
        assert call["segments_scored"] == customer
        assert call["label"] in ("negative", "neutral", "positive")
        assert call["worst"] <= call["final"]


def test_check_config_accepts_defaults_and_names_what_is_wrong(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
        "LOOPWISE_SENTIMENT_STATE_PATH": str(tmp_path / "state.sqlite3"),
    }
    ok = cli("check-config", env=env)
    assert ok.returncode == 0, ok.stderr
    assert "vader-ngram" in ok.stdout and "configuration OK" in ok.stdout
    bad_model = cli("check-config", env={**env, "LOOPWISE_SENTIMENT_MODEL": "nope"})
    assert bad_model.returncode == 2 and "model 'nope'" in bad_model.stderr
    bad_value = cli("check-config", env={**env, "LOOPWISE_SENTIMENT_AGGREGATION__WINDOW": "0"})
    assert bad_value.returncode == 2
    assert "LOOPWISE_SENTIMENT_AGGREGATION__WINDOW" in bad_value.stderr
    cal = tmp_path / "cal.json"
    cal.write_text('{"version": "x",\n "features": []}\n', encoding="utf-8")
    bad_cal = cli(
        "check-config",
        env={
            **env,
            "LOOPWISE_SENTIMENT_MODEL": "vader-calibrated",
            "LOOPWISE_SENTIMENT_MODEL_OPTIONS": json.dumps({"calibration": str(cal)}),
        },
    )
    assert bad_cal.returncode == 2 and f"{cal}:" in bad_cal.stderr


def test_calibrate_fits_a_file_from_relabels_that_the_service_then_loads(tmp_path: Path) -> None:
    data = ROOT.parent / "shared" / "data" / "sentiment" / "uci_amazon_yelp.jsonl"
    if not data.exists():
        pytest.skip(f"dev data not found at {data}")
    rows = [json.loads(x) for x in data.read_text(encoding="utf-8").splitlines()[:300]]
    relabels = tmp_path / "relabels.jsonl"
    relabels.write_text(
        "\n".join(
            json.dumps({"text": r["text"], "label": r["label_name"], "segment_id": r["id"]})
            for r in rows
        )
        + '\n{"text": "fine", "label": "neutral"}\n',
        encoding="utf-8",
    )
    out = tmp_path / "cal.json"
    done = cli("calibrate", str(relabels), "--out", str(out), "--version", "cal-test")
    assert done.returncode == 0, done.stderr
    assert "on 300 rows (1 neutral/other skipped)" in done.stdout and "5-fold CV" in done.stdout
    scored = cli("batch", "--calibration", str(out), stdin='{"text": "This is awful."}\n')
    assert scored.returncode == 0, scored.stderr
    sentiment = json.loads(scored.stdout)["sentiment"]
    assert sentiment["model"]["version"].endswith("+cal-test")
    assert sentiment["label"] == "negative"
    too_few = tmp_path / "few.jsonl"
    too_few.write_text('{"text": "good", "label": "positive"}\n', encoding="utf-8")
    refused = cli("calibrate", str(too_few), "--out", str(out), "--version", "x")
    assert refused.returncode == 2 and "need >= 20 rows" in refused.stderr
