"""Policy files: conditions, tenants, versions, and errors that name file, line and rule."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from loopwise.config_files import ConfigFileError
from loopwise_router.policy import load_policy
from loopwise_router.routing import decide

ROOT = Path(__file__).resolve().parents[3]
SHIPPED = ROOT / "deploy" / "policies" / "default.yaml"

BASE = """\
version: 1
name: unit
rules:
  - id: negative-customer
    scope: segment
    when:
      all:
        - "segment.speaker == customer"
        - "sentiment.score <= -0.5"
        - not: "language in [de, fr]"
    outcome: hold
  - id: card
    scope: segment
    when:
      finding: {category: card_data, min_severity: high, min_score: 0.5}
    outcome: hold
    priority: p1
    mode: realtime
  - id: vip
    scope: call
    when:
      any:
        - "metadata.tier == gold"
        - "call.sentiment.worst < -0.8"
    outcome: sample
    rate: 1.0
"""


def write(tmp_path: Path, text: str, name: str = "p.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def seg_facts(**kw: object) -> dict[str, object]:
    base: dict[str, object] = {
        "segment.speaker": "customer",
        "sentiment.score": 0.0,
        "language": "en",
    }
    base.update(kw)
    return base


def test_all_any_not_and_comparisons(tmp_path: Path) -> None:
    policy = load_policy(write(tmp_path, BASE))
    hit = decide(policy, "t", "segment", seg_facts(**{"sentiment.score": -0.7}), [], "c1", "s1")
    assert hit.outcome == "hold" and hit.rule_id == "negative-customer"
    conditions = [f.condition for f in hit.fired]
    assert "sentiment.score <= -0.5" in conditions
    assert any(c.startswith("not language in") for c in conditions)
    assert next(f.observed for f in hit.fired if f.condition.startswith("sentiment")) == -0.7
    # `not` blocks it for German
    de = seg_facts(**{"sentiment.score": -0.7, "language": "de"})
    assert decide(policy, "t", "segment", de, [], "c1", "s1").outcome == "auto"
    # an agent turn does not match the speaker condition
    agent = seg_facts(**{"sentiment.score": -0.9, "segment.speaker": "agent"})
    assert decide(policy, "t", "segment", agent, [], "c1", "s1").outcome == "auto"
    # a missing score makes the comparison false, not an error
    missing = seg_facts(**{"sentiment.score": None})
    assert decide(policy, "t", "segment", missing, [], "c1", "s1").outcome == "auto"


def test_finding_condition_and_priority(tmp_path: Path) -> None:
    policy = load_policy(write(tmp_path, BASE))
    low = {"category": "card_data", "severity": "medium", "score": 0.9, "rule_id": "r"}
    high = {**low, "severity": "critical", "score": 0.4}
    good = {**low, "severity": "high"}
    facts = seg_facts()
    assert decide(policy, "t", "segment", facts, [low], "c", "s").outcome == "auto"
    assert decide(policy, "t", "segment", facts, [high], "c", "s").outcome == "auto"  # score
    verdict = decide(
        policy, "t", "segment", seg_facts(**{"sentiment.score": -0.9}), [good], "c", "s"
    )
    # both hold rules fire; the p1 rule decides, and its realtime mode makes the alert live
    assert verdict.rule_id == "card" and verdict.priority == "p1" and verdict.mode == "realtime"
    assert set(verdict.fired_rules) == {"negative-customer", "card"}


def test_metadata_and_call_scope(tmp_path: Path) -> None:
    policy = load_policy(write(tmp_path, BASE))
    gold = {"metadata.tier": "gold", "call.sentiment.worst": 0.1}
    assert decide(policy, "t", "call", gold, [], "c").outcome == "sample"
    silver = {"metadata.tier": "silver", "call.sentiment.worst": -0.81}
    assert decide(policy, "t", "call", silver, [], "c").rule_id == "vip"
    calm = {"metadata.tier": "silver", "call.sentiment.worst": -0.2}
    assert decide(policy, "t", "call", calm, [], "c").outcome == "auto"


def test_tenants_override_defaults_disable_and_replace(tmp_path: Path) -> None:
    text = (
        BASE
        + """\
defaults:
  sla: 4h
tenants:
  bank:
    defaults: {sla: 30m, priority: p2}
    disable: [vip]
    rules:
      - id: card
        scope: segment
        when: "transcript.confidence < 0.3"
        outcome: sample
        rate: 0.5
"""
    )
    policy = load_policy(write(tmp_path, text))
    defaults, rules = policy.for_tenant("bank")
    assert defaults.sla == 1800 and defaults.priority == "p2"
    assert [r.rule.id for r in rules] == ["negative-customer", "card"]
    assert rules[1].rule.outcome == "sample"  # replaced by the tenant's own rule
    assert rules[0].sla_s == 1800  # tenant default applies to shared rules
    _, other = policy.for_tenant("anyone")
    assert [r.rule.id for r in other] == ["negative-customer", "card", "vip"]
    assert other[0].sla_s == 4 * 3600


def test_version_is_content_hash(tmp_path: Path) -> None:
    a = load_policy(write(tmp_path, BASE, "a.yaml"))
    b = load_policy(write(tmp_path, BASE, "b.yaml"))
    c = load_policy(write(tmp_path, BASE.replace("-0.5", "-0.6"), "c.yaml"))
    assert a.version == b.version != c.version
    assert a.version.startswith("sha256:")


@pytest.mark.parametrize(
    ("needle", "replacement", "line", "rule", "message"),
    [
        (
            '"sentiment.score <= -0.5"',
            '"sentiment.scor <= -0.5"',
            9,
            "negative-customer",
            "unknown field",
        ),
        (
            '"sentiment.score <= -0.5"',
            '"sentiment.score <= bad"',
            9,
            "negative-customer",
            "is a number",
        ),
        (
            '"segment.speaker == customer"',
            '"segment.speaker ~ customer"',
            8,
            "negative-customer",
            "cannot read",
        ),
        ("min_severity: high", "min_severity: huge", 15, "card", "min_severity"),
        ("    rate: 1.0\n", "", 19, "vip", "needs a rate"),
        (
            "    mode: realtime\n",
            "    mode: realtime\n    sla: soon\n",
            19,
            "card",
            "not a duration",
        ),
        (
            '"call.sentiment.worst < -0.8"',
            '"sentiment.score < -0.8"',
            21,
            "vip",
            "call rule cannot",
        ),
        ("        - not: ", "        - nor: ", 10, "negative-customer", "a condition is"),
    ],
)
def test_policy_errors_name_file_line_and_rule(
    tmp_path: Path, needle: str, replacement: str, line: int, rule: str, message: str
) -> None:
    assert needle in BASE
    path = write(tmp_path, BASE.replace(needle, replacement, 1))
    with pytest.raises(ConfigFileError) as info:
        load_policy(path)
    err = info.value
    assert err.file == str(path)
    assert err.rule == rule, str(err)
    assert message in err.message, str(err)
    assert err.line == line, str(err)


def test_duplicate_rule_ids_and_yaml_syntax(tmp_path: Path) -> None:
    dup = BASE + "  - id: card\n    scope: call\n    when: 'queue == x'\n    outcome: auto\n"
    with pytest.raises(ConfigFileError, match="duplicate rule id"):
        load_policy(write(tmp_path, dup))
    with pytest.raises(ConfigFileError) as info:
        load_policy(write(tmp_path, BASE.replace("outcome: hold", "outcome: [hold", 1)))
    assert info.value.line is not None


def test_shipped_policy_is_valid_and_check_config_cli(tmp_path: Path) -> None:
    policy = load_policy(SHIPPED)
    assert policy.for_tenant("anyone")[1]
    ok = subprocess.run(
        [sys.executable, "-m", "loopwise_router", "check-config", str(SHIPPED)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    assert policy.version in ok.stdout
    bad = write(tmp_path, BASE.replace('"sentiment.score <= -0.5"', '"sentiment.score <= x"'))
    fail = subprocess.run(
        [sys.executable, "-m", "loopwise_router", "check-config", str(bad)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert fail.returncode == 2
    assert f"{bad}:9: rule negative-customer:" in fail.stderr


def test_run_refuses_to_start_with_a_broken_policy(tmp_path: Path) -> None:
    bad = write(tmp_path, BASE.replace('"sentiment.score <= -0.5"', '"sentiment.score <= x"'))
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"}
    done = subprocess.run(
        [sys.executable, "-m", "loopwise_router", "run", "--policy", str(bad)],
        capture_output=True,
        text=True,
        check=False,
        env=env,
        timeout=120,
    )
    assert done.returncode == 2
    assert f"{bad}:9: rule negative-customer:" in done.stderr
