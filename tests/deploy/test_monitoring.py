"""Alert rules and dashboard: promtool checks and unit tests, every query parses, every
metric they name is one Loopwise defines (the live scrape check is test_live_metrics.py)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from tests.deploy.monitoring import (
    SYNTHETIC,
    alert_rules,
    dashboard,
    dashboard_queries,
    names_used,
    panels,
)
from tests.deploy.tools import ALERTS, ROOT, promtool, run

ALERT_TESTS = ROOT / "deploy" / "prometheus" / "tests" / "alerts_test.yaml"


def test_alert_rules_pass_promtool_check() -> None:
    out = run(promtool(), "check", "rules", str(ALERTS)).stdout
    assert f"SUCCESS: {len(alert_rules())} rules found" in out, out


def test_alert_unit_tests_pass() -> None:
    result = run(promtool(), "test", "rules", str(ALERT_TESTS), check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_unit_test_that_fires_it_and_one_that_does_not() -> None:
    tests = yaml.safe_load(ALERT_TESTS.read_text())["tests"]
    fired: set[str] = set()
    silent: set[str] = set()
    for t in tests:
        for case in t.get("alert_rule_test", []):
            (fired if case["exp_alerts"] else silent).add(case["alertname"])
    alerts = {r["alert"] for r in alert_rules()}
    assert fired == alerts, f"alerts without a firing test: {alerts - fired}"
    assert silent == alerts, f"alerts without a silent case: {alerts - silent}"


def test_every_alert_says_what_and_how_bad() -> None:
    for rule in alert_rules():
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def test_every_dashboard_query_parses(tmp_path: Path) -> None:
    queries = dashboard_queries()
    assert len(queries) >= 30
    rules = [
        {"record": f"loopwise:dashboard_query:{i}", "expr": expr}
        for i, expr in enumerate(queries.values())
    ]
    as_rules = tmp_path / "dashboard-queries.yaml"
    as_rules.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = run(promtool(), "check", "rules", str(as_rules), check=False)
    assert result.returncode == 0, (
        result.stdout
        + result.stderr
        + "\n"
        + "\n".join(f"{i}: {where}: {q}" for i, (where, q) in enumerate(queries.items()))
    )


def test_dashboard_shows_what_sres_need() -> None:
    dash = dashboard()
    titles = " | ".join(p["title"].lower() for p in panels(dash))
    for wanted in ("throughput", "latency", "consumer lag", "dead letters by reason",
                   "queue depth by priority", "oldest waiting", "sla breaches",
                   "auto, sampled, held", "model agrees with reviewer"):  # fmt: skip
        assert wanted in titles, wanted
    ids = [p["id"] for p in panels(dash)]
    assert len(ids) == len(set(ids))
    assert dash["uid"] == "loopwise-overview"
    for p in panels(dash):
        if p["type"] != "row":
            assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
            assert p["targets"], p["title"]


def test_every_metric_named_is_defined_in_the_code() -> None:
    source = "\n".join(
        f.read_text()
        for base in ("shared/src", "services")
        for f in (ROOT / base).rglob("*.py")
        if "tests" not in f.parts
    )
    defined = set(re.findall(r'"(loopwise_[a-z0-9_]+)"', source))
    missing = {}
    for name, where in names_used().items():
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        if name in SYNTHETIC or name in defined or base in defined:
            continue
        missing[name] = sorted(where)
    assert not missing, missing
