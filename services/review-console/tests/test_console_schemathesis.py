"""Schemathesis against the published OpenAPI document: no input makes a server error.

The app runs in-process (ASGI) on a SQLite store holding the example task; requests carry
an admin token so every operation is reached. The SSE stream is left out (it never ends).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from loopwise.events import Envelope, ReviewTaskCreatedV1, RoutingDecisionV1
from loopwise.events.examples import example_events
from loopwise.settings import KafkaSettings
from loopwise_console.api import create_app
from loopwise_console.auth import create_token
from loopwise_console.config import ConsoleSettings
from loopwise_console.store import ConsoleStore


def _setup() -> tuple[Any, str]:
    directory = Path(tempfile.mkdtemp(prefix="console-schemathesis-"))
    config = ConsoleSettings(
        kafka=KafkaSettings(bootstrap_servers="127.0.0.1:1"),
        data_dir=directory,
        second_opinion=["p1"],
        limits={"requests_per_minute": 1_000_000},
    )
    store = ConsoleStore(config.db_url())
    events = [e for e in example_events() if isinstance(e, ReviewTaskCreatedV1 | RoutingDecisionV1)]
    store.materialise([(Envelope(type=e.event_type, source="fuzz"), e) for e in events])
    with store.write() as conn:
        token, _ = create_token(conn, subject="fuzz-admin", role="admin", tenants=["acme"])
    return create_app(config, store), token


APP, TOKEN = _setup()
schema = schemathesis.openapi.from_asgi("/api/v1/openapi.json", APP).exclude(
    path="/api/v1/supervisor/alerts"
)


@schema.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_input_makes_a_server_error(case: Any) -> None:
    case.headers = {**(case.headers or {}), "Authorization": f"Bearer {TOKEN}"}
    case.call_and_validate(checks=[not_a_server_error])


def test_checked_in_openapi_document_is_current() -> None:
    import json

    from loopwise_console.api import openapi_document

    root = Path(__file__).resolve().parents[3]
    config = ConsoleSettings(kafka=KafkaSettings(bootstrap_servers="unused:9092"))
    current = openapi_document(config, ConsoleStore("sqlite://", migrate=False))
    checked_in = json.loads((root / "docs" / "console-openapi.json").read_text(encoding="utf-8"))
    assert checked_in == json.loads(json.dumps(current)), (
        "docs/console-openapi.json is stale: uv run loopwise-console openapi "
        "--out docs/console-openapi.json"
    )
