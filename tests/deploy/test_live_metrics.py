"""Every metric the dashboard and the alert rules name appears in live /metrics scrapes of
the demo's services (deploy/local/demo.py with LOOPWISE_DEMO_METRICS_DIR: the whole
pipeline on the test broker, scraped after the calls went through, before the services
stop).

The review console runs in the demo too, so its metrics are scraped with the rest.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.deploy.monitoring import CONSOLE_METRICS, SYNTHETIC, exported_names, names_used
from tests.deploy.tools import ROOT

DEMO = ROOT / "deploy" / "local" / "demo.py"

pytestmark = pytest.mark.kafka


@pytest.fixture(scope="module")
def scrapes(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Service name -> its /metrics text, from one demo run."""
    base = tmp_path_factory.mktemp("demo-metrics")
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "LOOPWISE_DEMO_STATE_DIR": str(base / "demo"),
        "LOOPWISE_DEMO_METRICS_DIR": str(base / "metrics"),
        "LOOPWISE_DEMO_KEEP_CONSOLE": "0",  # a test leaves no process behind
        # Other ports than test_demo_smoke's run, should both ever run at once.
        "LOOPWISE_DEMO_PORT_BASE": os.environ.get("LOOPWISE_TEST_DEMO_METRICS_PORT_BASE", "18181"),
    }
    result = subprocess.run(
        [sys.executable, str(DEMO)], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=540, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    return {p.stem: p.read_text() for p in sorted((base / "metrics").glob("*.prom"))}


def missing_from(scrapes: dict[str, str], names: set[str]) -> dict[str, list[str]]:
    exported = set().union(*(exported_names(text) for text in scrapes.values()))
    used = names_used()
    return {n: sorted(used[n]) for n in sorted(names) if n not in exported}


@pytest.mark.timeout(600)
def test_every_dashboard_and_alert_metric_is_exported_by_a_running_service(
    scrapes: dict[str, str],
) -> None:
    assert len(scrapes) >= 6, sorted(scrapes)
    checked = set(names_used()) - SYNTHETIC
    assert len(checked) >= 25
    assert not missing_from(scrapes, checked)
    # Metrics every worker-based service exports, whatever it does.
    for service, text in scrapes.items():
        assert "loopwise_events_consumed_total" in text, service
        assert f'service="{service}"' in text, service


@pytest.mark.timeout(600)
def test_the_review_console_metrics_are_exported(scrapes: dict[str, str]) -> None:
    used = CONSOLE_METRICS & set(names_used())
    assert len(used) >= 4, sorted(used)  # the dashboard and alerts watch the review queue
    assert "review-console" in scrapes, sorted(scrapes)
    assert not missing_from(scrapes, used)
