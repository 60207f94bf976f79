"""The Faust app factory: a changelogged table survives a restart; bad input is dead-lettered."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from loopwise.events import CallMetadataV1
from tests.support.kafka_io import produce_events, produce_raw, read_all, read_topic, wait_for

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.kafka


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _events(calls: int, per_call: int, start: int = 0) -> list[CallMetadataV1]:
    return [
        CallMetadataV1(
            tenant_id="acme",
            call_id=f"call-{c}",
            occurred_at=datetime.now(UTC),
            metadata={"i": start + i},
        )
        for i in range(per_call)
        for c in range(calls)
    ]


def _start(env: dict[str, str], data_dir: Path) -> tuple[subprocess.Popen[bytes], int]:
    """Start the app and wait until /readyz says its partitions are assigned and recovered."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.faust_counter", "worker"],
        cwd=ROOT,
        env={
            **env,
            "LOOPWISE_COUNTER_DATA_DIR": str(data_dir),
            "LOOPWISE_COUNTER_OBSERVABILITY__PORT": str(port),
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )

    def ready() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    assert wait_for(ready, timeout_s=90, interval_s=0.5), "the Faust app never became ready"
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        assert r.status == 200
        assert b"loopwise_handler_duration_seconds" in r.read()
    return proc, port


def _stop(proc: subprocess.Popen[bytes]) -> str:
    proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    return err.decode(errors="replace")[-3000:]


class Supervisor:
    """Runs the app as an orchestrator would: restarts it while its /healthz reports a stall.

    faust-streaming sometimes stops fetching after (re)joining its group although it reports
    ready; the runtime's LagWatch turns /healthz to 503 then. Restarts are counted and
    bounded, so a worker that really loses input still fails the test.
    """

    def __init__(self, env: dict[str, str], tmp_path: Path, name: str) -> None:
        self.env, self.tmp_path, self.name = env, tmp_path, name
        self.restarts = 0
        self.proc, self.port = _start(env, tmp_path / f"{name}-0")

    def healthy(self) -> bool:
        try:
            url = f"http://127.0.0.1:{self.port}/healthz"
            with urllib.request.urlopen(url, timeout=2) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def run_until(self, done: Callable[[], bool], timeout_s: float, max_restarts: int = 3) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if wait_for(done, timeout_s=3.0, interval_s=0.5):
                return True
            if not self.healthy() and self.restarts < max_restarts:
                _stop(self.proc)
                self.restarts += 1
                self.proc, self.port = _start(
                    self.env, self.tmp_path / f"{self.name}-{self.restarts}"
                )
        return False

    def stop(self) -> tuple[int | None, str]:
        log = _stop(self.proc)
        return self.proc.returncode, log


def test_table_survives_restart_and_bad_input_is_dead_lettered(
    kafka_bootstrap: str,
    new_topic: Callable[..., str],
    group_id: str,
    tmp_path: Path,
    record_property: Callable[..., None],
) -> None:
    source, sink, dlq = new_topic("in", 3), new_topic("out", 3), new_topic("dlq", 1)
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "LOOPWISE_COUNTER_APP_ID": group_id,
        "LOOPWISE_COUNTER_INPUT_TOPIC": source,
        "LOOPWISE_COUNTER_OUTPUT_TOPIC": sink,
        "LOOPWISE_COUNTER_DEAD_LETTER_TOPIC": dlq,
        "LOOPWISE_COUNTER_TOPIC_PARTITIONS": "3",
        "LOOPWISE_COUNTER_HEALTH_STALL_S": "6",
        "LOOPWISE_COUNTER_LAG_CHECK_INTERVAL_S": "1",
    }
    calls, first_round, second_round = 4, 5, 3
    # Both rounds wait in the topic before their worker starts: Faust must not skip records
    # fetched while it starts and recovers (it did while it still created its own internal
    # topics, whose creation re-ran the rebalance; `ensure_internal_topics` prevents that).
    produce_events(kafka_bootstrap, source, _events(calls, first_round))
    produce_raw(kafka_bootstrap, source, [(b"call-0", b"{broken", [])])
    first = Supervisor(env, tmp_path, "first")
    try:
        first_done = first.run_until(
            lambda: len(read_all(kafka_bootstrap, sink)) >= calls * first_round, timeout_s=120
        )
    finally:
        code, log = first.stop()
    assert first_done, log
    assert code == 0, log

    # A fresh data dir: the table can only come back from its changelog topic.
    second_ids = set(
        produce_events(kafka_bootstrap, source, _events(calls, second_round, start=first_round))
    )
    second = Supervisor(env, tmp_path, "second")
    final: dict[str, int] = defaultdict(int)
    resumed_at: dict[str, int] = {}

    def counted_all() -> bool:
        for record in read_all(kafka_bootstrap, sink):
            body = json.loads(record.value or b"")
            call, count, of = body["call_id"], body["metadata"]["count"], body["metadata"]["of"]
            final[call] = max(final[call], count)
            if of in second_ids:
                resumed_at[call] = min(resumed_at.get(call, count), count)
        return min(final.values(), default=0) >= first_round + second_round

    try:
        second.run_until(counted_all, timeout_s=150)
    finally:
        _, log = second.stop()
    restarts = first.restarts + second.restarts
    print(f"\nFaust state test: {restarts} restart(s) after a reported stall")
    record_property("stall_restarts", restarts)
    expected = {f"call-{c}": first_round + second_round for c in range(calls)}
    assert dict(final) == expected, log
    # The first new event of each call counted on top of the restored state, not from zero.
    assert resumed_at == {call: first_round + 1 for call in expected}, log

    dead = read_topic(kafka_bootstrap, dlq, expect=1, timeout_s=30)
    assert len(dead) == 1, log
    assert dead[0].headers["dlq_service"] == b"counter"
    assert dead[0].headers["dlq_stage"] in (b"envelope", b"decode")
