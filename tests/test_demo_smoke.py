"""`deploy/local/demo.py` end to end on the real broker: six services, three calls, a reviewer.

The demo is what `make demo` runs; this test runs it as a user would (its own state
directory) and reads the story it prints: card data redacted and held, the call without
the recording notice held until the reviewer approved, the calm call released at once,
the audit chain verified and every service stopped cleanly.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.card_numbers import holds_test_card

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "deploy" / "local" / "demo.py"
SERVICES = (
    "transcription",
    "sentiment",
    "compliance-scoring",
    "review-router",
    "audit-writer",
    "feedback-exporter",
)

pytestmark = pytest.mark.kafka


def stories(output: str) -> dict[str, str]:
    """Each call's story in the demo's output, by the first word of its title: (a), (b), (c)."""
    body = output.split("\nwaiting for the audit writer")[0]
    parts = body.split("=" * 100)
    return {parts[i].split()[0]: parts[i + 1] for i in range(1, len(parts) - 1, 2)}


@pytest.mark.timeout(600)
def test_demo_runs_the_whole_pipeline(kafka_bootstrap: str, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "LOOPWISE_DEMO_STATE_DIR": str(tmp_path / "demo"),
        "LOOPWISE_DEMO_KEEP_CONSOLE": "0",  # a test leaves no process behind
    }
    result = subprocess.run(
        [sys.executable, str(DEMO)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "every call was released" in out

    told = stories(out)
    angry = told["(b)"]
    assert "[CARD_NUMBER]" in angry
    assert not holds_test_card(out), "a card number reached the pipeline's output"
    assert re.search(r"segment \S+ +hold +card-data-spoken p1 -> task", angry), angry
    assert re.search(r"call +hold +recording-notice-missing p2 -> task", angry), angry
    assert "corrected " in angry and "speak to your manager" in angry
    assert re.search(r"call +release=reviewed, verdict approve", angry), angry

    calm = told["(c)"]
    assert re.search(r"call +release=(auto|sampled)", calm), calm
    assert "hold" not in calm

    if "SKIPPING the audio call" not in out:
        audio = told["(a)"]
        assert " realtime " in audio, "no segment came from the streaming recogniser"
        assert re.search(r"call +release=\w+", audio), audio

    assert re.search(r"acme-bank: \d+ records verified, up to seq \d+, .*: OK", out), out
    for name in SERVICES:
        assert re.search(rf"stopped: {re.escape(name)} +exit status 0", out), name
    assert (tmp_path / "demo" / "audit" / "audit.db").exists()
    assert not (tmp_path / "console.pid").exists(), "the review console was left running"
