"""SASL_SSL for real: `kafka.sh up` with KAFKA_SASL_SSL_PORT (SCRAM-SHA-512 over TLS with a
throw-away CA); `loopwise topics apply` and a service run through that listener only, and
a wrong password stops `topics apply` at once with a clear error.

The broker is this module's own (port LOOPWISE_TEST_SASL_KAFKA_PORT, default the test
broker's port + 3; its SASL_SSL listener two above), purged afterwards. The test reads and
writes pipeline events through the broker's PLAINTEXT listener, so only the service and
the topic command speak SASL_SSL.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from loopwise.events import TranscriptSegmentV1
from loopwise.events.examples import example_events
from loopwise.topics import catalogue, topic
from tests.deploy.tools import ROOT
from tests.support.kafka_io import produce_events, read_topic

KAFKA_SCRIPT = ROOT / "deploy" / "local" / "kafka.sh"
BIN = Path(sys.executable).parent


def _ports() -> tuple[int, int]:
    test_port = int(os.environ.get("LOOPWISE_TEST_KAFKA_PORT", "19092"))
    port = int(os.environ.get("LOOPWISE_TEST_SASL_KAFKA_PORT", str(test_port + 3)))
    return port, port + 2  # port + 1 is its controller


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "LOOPWISE_"))}


@pytest.fixture(scope="module")
def broker() -> Iterator[dict[str, str]]:
    """PLAINTEXT address under 'plaintext', and the SASL_SSL client settings (KAFKA_*)."""
    port, sasl_port = _ports()
    env = {**_clean_env(), "KAFKA_PORT": str(port), "KAFKA_SASL_SSL_PORT": str(sasl_port),
           "KAFKA_AUTO_CREATE_TOPICS": "false"}  # fmt: skip
    up = subprocess.run(
        ["bash", str(KAFKA_SCRIPT), "up"], env=env, capture_output=True, text=True, timeout=300
    )
    try:
        assert up.returncode == 0, up.stderr
        found = re.search(r"client settings in (\S+client\.env)", up.stderr)
        assert found, up.stderr
        settings = dict(
            line.split("=", 1) for line in Path(found.group(1)).read_text().splitlines() if line
        )
        assert settings["KAFKA_BOOTSTRAP_SERVERS"] == f"localhost:{sasl_port}"
        yield {"plaintext": f"127.0.0.1:{port}", **settings}
    finally:
        subprocess.run(
            ["bash", str(KAFKA_SCRIPT), "down", "--purge"],
            env=env,
            capture_output=True,
            timeout=120,
        )


def sasl_env(broker: dict[str, str], **extra: str) -> dict[str, str]:
    return {**_clean_env(), **{k: v for k, v in broker.items() if k.startswith("KAFKA_")}, **extra}


@pytest.fixture(scope="module")
def applied(broker: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "loopwise"), "topics", "apply"],
        env=sasl_env(broker), capture_output=True, text=True, timeout=180,
    )  # fmt: skip


def test_topics_apply_through_sasl_ssl(
    broker: dict[str, str], applied: subprocess.CompletedProcess[str]
) -> None:
    assert applied.returncode == 0, applied.stdout + applied.stderr
    count = len(catalogue().topics)
    assert (
        f"{count} topics on {broker['KAFKA_BOOTSTRAP_SERVERS']}: did change {count}"
        in applied.stdout
    )
    names = set(
        AdminClient({"bootstrap.servers": broker["plaintext"]}).list_topics(timeout=30).topics
    )
    assert {t.name for t in catalogue().topics} <= names


def test_a_wrong_password_fails_at_once_with_a_clear_error(broker: dict[str, str]) -> None:
    result = subprocess.run(
        [str(BIN / "loopwise"), "topics", "apply", "--timeout", "90"],
        env=sasl_env(broker, KAFKA_SASL_PASSWORD="not-the-password"),
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith(
        f"error: Kafka at {broker['KAFKA_BOOTSTRAP_SERVERS']} (SASL_SSL): authentication failed"
    )
    assert "invalid credentials with SASL mechanism SCRAM-SHA-512" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""  # nothing was applied


def test_an_untrusted_certificate_fails_clearly(broker: dict[str, str], tmp_path: Path) -> None:
    other_ca = tmp_path / "other-ca.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
         "/CN=not-the-ca", "-keyout", str(tmp_path / "k.pem"), "-out", str(other_ca)],
        check=True, capture_output=True,
    )  # fmt: skip
    result = subprocess.run(
        [str(BIN / "loopwise"), "topics", "apply", "--timeout", "8"],
        env=sasl_env(broker, KAFKA_SSL_CA_LOCATION=str(other_ca)),
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2, result.stdout + result.stderr
    assert "certificate verify failed" in result.stderr, result.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as reply:
            return bool(reply.status == 200)
    except OSError:
        return False


@pytest.mark.timeout(300)
def test_a_service_runs_through_sasl_ssl(
    broker: dict[str, str], applied: subprocess.CompletedProcess[str], tmp_path: Path
) -> None:
    assert applied.returncode == 0, applied.stderr
    port = _free_port()
    env = sasl_env(
        broker,
        LOOPWISE_SENTIMENT_GROUP_ID=f"sasl-{uuid.uuid4().hex}",
        LOOPWISE_SENTIMENT_STATE_PATH=str(tmp_path / "sentiment.sqlite3"),
        LOOPWISE_SENTIMENT_OBSERVABILITY__HOST="127.0.0.1",
        LOOPWISE_SENTIMENT_OBSERVABILITY__PORT=str(port),
    )
    log = (tmp_path / "sentiment.log").open("w")
    proc = subprocess.Popen(
        [str(BIN / "loopwise-sentiment"), "run"], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 180
        while not _ready(port):
            assert proc.poll() is None, (tmp_path / "sentiment.log").read_text()
            assert time.monotonic() < deadline, (tmp_path / "sentiment.log").read_text()
            time.sleep(0.5)
        call_id = f"sasl-{uuid.uuid4().hex[:12]}"
        segments = [e for e in example_events(call_id) if isinstance(e, TranscriptSegmentV1)]
        assert segments
        produce_events(broker["plaintext"], topic("cx.transcripts"), segments)
        found = False
        deadline = time.monotonic() + 120
        while not found and time.monotonic() < deadline:
            records = read_topic(broker["plaintext"], topic("cx.sentiment"), expect=1, timeout_s=10)
            found = any(r.headers.get("call_id") == call_id.encode() for r in records)
        assert found, (tmp_path / "sentiment.log").read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
        log.close()
    assert code == 0, (tmp_path / "sentiment.log").read_text()
