"""Pytest plugin: one real Kafka broker per session, a fresh uuid topic and group per test.

Which broker: `KAFKA_BOOTSTRAP_SERVERS` if set; else Testcontainers' Kafka where a
Docker engine answers; else the project's own KRaft broker
(`deploy/local/kafka.sh`, port `LOOPWISE_TEST_KAFKA_PORT`, default 19092).
The terminal summary says which one the run used.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
KAFKA_SCRIPT = ROOT / "deploy" / "local" / "kafka.sh"
_USED: dict[str, str] = {}


def _docker_answers() -> bool:
    try:
        import docker  # type: ignore[import-untyped]

        docker.from_env(timeout=3).ping()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """Bootstrap address of a real broker for this test session."""
    env = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if env:
        _USED["broker"] = f"external cluster from KAFKA_BOOTSTRAP_SERVERS={env}"
        yield env
        return
    if os.environ.get("LOOPWISE_TEST_DOCKER", "auto") != "never" and _docker_answers():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer().with_kraft() as container:
            address = container.get_bootstrap_server()
            _USED["broker"] = f"Testcontainers Kafka at {address}"
            yield address
        return
    port = os.environ.get("LOOPWISE_TEST_KAFKA_PORT", "19092")
    script_env = {**os.environ, "KAFKA_PORT": port}
    already = (
        subprocess.run(
            ["bash", str(KAFKA_SCRIPT), "status"], env=script_env, capture_output=True, check=False
        ).returncode
        == 0
    )
    up = subprocess.run(
        ["bash", str(KAFKA_SCRIPT), "up"],
        env=script_env,
        capture_output=True,
        text=True,
        check=False,
    )
    if up.returncode != 0:
        pytest.fail(f"local Kafka broker did not start:\n{up.stderr[-3000:]}")
    address = up.stdout.strip().splitlines()[-1].split("=", 1)[1]
    _USED["broker"] = f"local KRaft broker (deploy/local/kafka.sh) at {address}"
    try:
        yield address
    finally:
        if not already:
            subprocess.run(
                ["bash", str(KAFKA_SCRIPT), "down", "--purge"], env=script_env, check=False
            )


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Say which broker the integration tests used."""
    if "broker" in _USED:
        terminalreporter.write_line(f"Kafka integration tests used: {_USED['broker']}")
    else:
        terminalreporter.write_line("Kafka integration tests used: none (no test needed a broker)")


@pytest.fixture(scope="session")
def kafka_admin(kafka_bootstrap: str) -> Any:
    """An AdminClient on the session broker."""
    from confluent_kafka.admin import AdminClient

    return AdminClient({"bootstrap.servers": kafka_bootstrap})


@pytest.fixture
def new_topic(kafka_admin: Any) -> Callable[..., str]:
    """Factory: create a uuid-named topic for this test and return its name."""
    from confluent_kafka.admin import NewTopic

    def make(prefix: str = "t", partitions: int = 3) -> str:
        name = f"test.{prefix}.{uuid.uuid4().hex[:12]}"
        futures = kafka_admin.create_topics(
            [NewTopic(name, num_partitions=partitions, replication_factor=1)]
        )
        for future in futures.values():
            future.result(timeout=30)
        return name

    return make


@pytest.fixture
def group_id() -> str:
    """A consumer group id used by this test only."""
    return f"test-group-{uuid.uuid4().hex[:12]}"
