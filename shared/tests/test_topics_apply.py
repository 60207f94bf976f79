"""`loopwise topics apply` against a real broker: creates, then changes nothing, then updates."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from loopwise.topics import apply_catalogue, load_catalogue
from tests.support.kafka_io import wait_for

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "shared" / "src" / "loopwise" / "topics.yaml"
pytestmark = pytest.mark.kafka


def _private_catalogue(tmp_path: Path, **changes: Any) -> Path:
    """The shipped catalogue with uuid topic names (so tests never share topics)."""
    data = yaml.safe_load(SHIPPED.read_text(encoding="utf-8"))
    run = uuid.uuid4().hex[:10]
    for spec in data["topics"]:
        spec["name"] = spec["name"].replace("loopwise.", f"loopwise.test{run}.", 1)
    data["defaults"].update(changes)
    path = tmp_path / "topics.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def _layout_matches(admin: Any, cat: Any) -> bool:
    listed = admin.list_topics(timeout=30).topics
    return all(
        t.name in listed and len(listed[t.name].partitions) == cat.partitions(t) for t in cat.topics
    )


def test_apply_is_idempotent_and_converges(kafka_admin: Any, tmp_path: Path) -> None:
    path = _private_catalogue(tmp_path, partitions=2)
    cat = load_catalogue(path)
    names = {t.name for t in cat.topics}

    first = apply_catalogue(kafka_admin, cat)
    assert {a.topic for a in first if a.action == "create"} == names
    assert not [a for a in first if a.action == "error"]
    assert wait_for(lambda: _layout_matches(kafka_admin, cat))

    second = apply_catalogue(kafka_admin, cat)
    assert {a.topic for a in second if a.action == "unchanged"} == names
    assert not [a for a in second if a.action in ("create", "add_partitions", "alter_config")]

    grown = load_catalogue(_rename_like(path, tmp_path, cat, partitions=3))
    third = apply_catalogue(kafka_admin, grown)
    grown_names = {t.name for t in grown.topics if grown.partitions(t) == 3}
    assert grown_names, "the catalogue has topics on the default partition count"
    assert {a.topic for a in third if a.action == "add_partitions"} == grown_names
    assert wait_for(lambda: _layout_matches(kafka_admin, grown))
    assert [a.topic for a in third if a.action == "alter_config"] == [grown.topics[0].name]


def _rename_like(path: Path, tmp_path: Path, cat: Any, **defaults: Any) -> Path:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data["defaults"].update(defaults)
    data["topics"][0]["retention_ms"] = 3_600_000
    out = tmp_path / "topics-changed.yaml"
    out.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return out


def test_cli_apply_reports_changes_and_config_drift(kafka_bootstrap: str, tmp_path: Path) -> None:
    path = _private_catalogue(tmp_path, partitions=1)
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap}
    cmd = [sys.executable, "-m", "loopwise.cli", "topics", "apply", "--catalogue", str(path)]
    first = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    assert first.returncode == 0, first.stderr
    count = len(load_catalogue(path).topics)
    assert f"did change {count}" in first.stdout
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    assert again.returncode == 0
    assert "did change 0" in again.stdout

    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data["topics"][0]["retention_ms"] = 3_600_000
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    drift = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    assert drift.returncode == 0
    assert "alter_config" in drift.stdout and "retention.ms=3600000" in drift.stdout


def test_broken_catalogue_names_file_and_line(tmp_path: Path) -> None:
    data = yaml.safe_load(SHIPPED.read_text(encoding="utf-8"))
    data["topics"][1]["partitions"] = 0
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    cmd = [sys.executable, "-m", "loopwise.cli", "topics", "list", "--catalogue", str(path)]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert result.returncode == 2
    line = next(
        i + 1 for i, text in enumerate(path.read_text().splitlines()) if "partitions: 0" in text
    )
    assert f"{path}:{line}" in result.stderr, result.stderr
