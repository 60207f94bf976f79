"""`loopwise-feedback` as a process: SIGKILL mid-run loses no row and adds none; check-config."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

from tests.support.kafka_io import produce_events, wait_for

ROOT = Path(__file__).resolve().parents[3]


def _env(bootstrap: str, topics: dict[str, str], root: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "LOOPWISE_FEEDBACK_GROUP_ID": topics["group"],
        "LOOPWISE_FEEDBACK_INPUT_TOPICS": json.dumps(
            [topics["tasks"], topics["decisions"], topics["outcomes"]]
        ),
        "LOOPWISE_FEEDBACK_DEAD_LETTER_TOPIC": topics["dlq"],
        "LOOPWISE_FEEDBACK_ROOT": str(root),
        "LOOPWISE_FEEDBACK_OBSERVABILITY__PORT": "0",
        "LOOPWISE_FEEDBACK_BATCH_SIZE": "20",
        "LOOPWISE_FEEDBACK_PUBLISH_INTERVAL_S": "1",
        # A killed member's partitions move on after the session timeout: keep it short.
        "LOOPWISE_FEEDBACK_CONSUMER_OVERRIDES": json.dumps({"session.timeout.ms": 6000}),
        **extra,
    }


def _start(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "loopwise_feedback", "run"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _count(root: Path, sql: str) -> int:
    path = root / "feedback.sqlite"
    if not path.exists():
        return 0
    conn = sqlite3.connect(path, timeout=30)
    try:
        return int(conn.execute(sql).fetchone()[0])
    except sqlite3.OperationalError:
        return 0
    finally:
        conn.close()


@pytest.mark.kafka
def test_sigkill_mid_run_then_restart_gives_every_row_exactly_once(
    kafka_bootstrap: str,
    new_topic: Callable[..., str],
    group_id: str,
    tmp_path: Path,
    fb: ModuleType,
) -> None:
    topics = {
        "tasks": new_topic("fb-tasks"),
        "decisions": new_topic("fb-dec"),
        "outcomes": new_topic("fb-out"),
        "dlq": new_topic("fb-dlq"),
        "group": group_id,
    }
    n = 400
    cases = [
        fb.make_case(i, [fb.Seg(f"machine words {i}", f"reviewed words {i}", "neutral", "neutral")])
        for i in range(n)
    ]
    produce_events(kafka_bootstrap, topics["tasks"], [c.task for c in cases])
    produce_events(kafka_bootstrap, topics["decisions"], [c.decision for c in cases])
    produce_events(kafka_bootstrap, topics["outcomes"], [c.outcome for c in cases])
    env = _env(kafka_bootstrap, topics, tmp_path)

    first = _start(env)
    assert wait_for(lambda: _count(tmp_path, "SELECT count(*) FROM seen_events") > 0, 90)
    first.send_signal(signal.SIGKILL)
    first.wait(30)
    killed_at = _count(tmp_path, "SELECT count(*) FROM seen_events")

    second = _start(env)
    try:
        assert wait_for(
            lambda: _count(tmp_path, "SELECT count(*) FROM seen_events") == 3 * n, 120
        ), _count(tmp_path, "SELECT count(*) FROM seen_events")
    finally:
        second.send_signal(signal.SIGTERM)
        _, stderr = second.communicate(timeout=60)
    assert second.returncode == 0, stderr.decode()[-2000:]
    print(f"\nSIGKILL after {killed_at} of {3 * n} events were stored")
    assert _count(tmp_path, "SELECT count(*) FROM rows WHERE kind = 'asr'") == n
    assert _count(tmp_path, "SELECT count(*) FROM rows WHERE kind = 'sentiment'") == n
    assert _count(tmp_path, "SELECT count(*) FROM outcomes") == n
    # The final publish on SIGTERM wrote every row once.
    (folder,) = (tmp_path / "datasets" / "asr" / "v1").glob("tenant=acme/date=*/model=*")
    lines = (folder / "nemo.jsonl").read_text().splitlines()
    texts = sorted(json.loads(line)["text"] for line in lines)
    assert texts == sorted(f"reviewed words {i}" for i in range(n))


def test_check_config_names_the_broken_variable(tmp_path: Path) -> None:
    base = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"}
    ok = subprocess.run(
        [sys.executable, "-m", "loopwise_feedback", "check-config"],
        cwd=ROOT,
        env={**base, "LOOPWISE_FEEDBACK_ROOT": str(tmp_path / "data")},
        capture_output=True,
        text=True,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    assert "loopwise.hitl.decisions.v1" in ok.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "loopwise_feedback", "check-config"],
        cwd=ROOT,
        env={
            **base,
            "LOOPWISE_FEEDBACK_WINDOW_S": "-5",
            "LOOPWISE_FEEDBACK_GROUP_ID": uuid.uuid4().hex,
        },
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 2
    assert "LOOPWISE_FEEDBACK_WINDOW_S" in bad.stderr
