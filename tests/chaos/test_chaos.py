"""The short chaos run (the long one: `make chaos-long`): nothing lost, nothing doubled,
nothing held released unreviewed, every malformed record dead-lettered, no crash loop."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.chaos.harness import chaos_run, replica_scenario, scenario

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(900)]


def test_text_path_survives_kills_broker_restart_and_bad_input(tmp_path: Path) -> None:
    with chaos_run(tmp_path) as chaos:
        figures = scenario(chaos, calls=60)
    report = json.dumps(figures, indent=2, default=str)
    bad = {k: v for k, v in figures.items() if k.endswith(("_bad", "_missing")) and v}
    assert not bad, report
    assert figures["calls"] == 60 and figures["segments"] >= 250, report
    assert figures["card_calls"] == 16, report  # each wave of 15 calls: 4 read a card number
    assert figures["holds"] > 0 and figures["malformed_injected"] > 0, report
    assert figures["missing_input_decisions"] > 0, report  # the compliance outage was felt
    assert all(n >= 1 for n in figures["restarts"].values()), report  # each was killed once


def test_two_instances_survive_scale_out_pauses_past_the_session_timeout_and_a_kill(
    tmp_path: Path,
) -> None:
    with chaos_run(tmp_path) as chaos:
        figures = replica_scenario(chaos, calls=40)
    report = json.dumps(figures, indent=2, default=str)
    bad = {k: v for k, v in figures.items() if k.endswith(("_bad", "_missing")) and v}
    assert not bad, report
    assert figures["calls"] == 40 and figures["holds"] > 0, report
    assert figures["malformed_injected"] > 0, report
    assert {"review-router-2", "compliance-scoring-2"} <= set(figures["restarts"]), report
    assert figures["restarts"]["review-router"] >= 1, report
