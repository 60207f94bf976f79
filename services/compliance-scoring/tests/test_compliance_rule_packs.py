"""Rule packs: the shipped ones load; a broken one is refused naming file, line and rule."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from loopwise.config_files import ConfigFileError
from loopwise_compliance.cli import main
from loopwise_compliance.rules import load_pack, load_packs

GOOD = """\
name: tiny
version: 2.1.0
rules:
  - id: says-hello
    type: phrase
    category: escalation
    severity: low
    speakers: [customer]
    phrases: [hello there]
  - id: notice
    type: required_phrase
    category: disclosure
    severity: high
    within_s: 10
    phrases: [this call is recorded]
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def error_of(path: Path) -> ConfigFileError:
    with pytest.raises(ConfigFileError) as caught:
        load_packs(path)
    return caught.value


def test_shipped_packs_cover_every_category(kit: Any) -> None:
    index = load_packs(kit.packs_dir)
    categories = {rule.category for rule in index.default.rules}
    assert categories == {
        "card_data",
        "disclosure",
        "identity_verification",
        "prohibited_language",
        "vulnerable_customer",
        "escalation",
    }
    assert index.for_tenant("acme-bank").name == "acme-bank"
    assert index.for_tenant("someone-else") is index.default
    acme = {rule.id: rule for rule in index.for_tenant("acme-bank").rules}
    assert "escalation-frustration" not in acme
    assert acme["recording-notice"].within_s == 15  # type: ignore[union-attr]
    assert "card-number-spoken" in acme  # inherited from the default pack


def test_version_is_name_version_and_content_hash(tmp_path: Path) -> None:
    first = load_pack(write(tmp_path, "a.yaml", GOOD))
    same = load_pack(write(tmp_path, "b.yaml", "# a comment only\n" + GOOD))
    changed = load_pack(write(tmp_path, "c.yaml", GOOD.replace("within_s: 10", "within_s: 12")))
    assert (first.name, first.version) == ("tiny", "2.1.0")
    assert first.content_hash == same.content_hash  # formatting does not change the hash
    assert changed.content_hash != first.content_hash
    assert first.version_label == f"2.1.0+{first.content_hash[:12]}"


@pytest.mark.parametrize(
    ("broken", "line", "rule", "words"),
    [
        (GOOD.replace("severity: low", "severity: awful"), 7, "says-hello", "severity"),
        (
            GOOD.replace("phrases: [hello there]", "phrases: [hello there]\n    colour: red"),
            10,
            "says-hello",
            "colour",
        ),
        (GOOD.replace("within_s: 10", "within_s: -1"), 14, "notice", "within_s"),
        (
            GOOD.replace("phrases: [hello there]", "patterns: ['(unclosed']"),
            9,
            "says-hello",
            "not a valid regex",
        ),
        (GOOD.replace("type: required_phrase", "type: telepathy"), 11, "notice", "type"),
        (GOOD.replace("phrases: [hello there]", "phrases: ['...']"), 9, "says-hello", "no words"),
    ],
)
def test_broken_rule_names_file_line_and_rule(
    tmp_path: Path, broken: str, line: int, rule: str, words: str
) -> None:
    path = write(tmp_path, "broken.yaml", broken)
    error = error_of(path)
    assert (error.file, error.line, error.rule) == (str(path), line, rule), str(error)
    assert words in str(error)
    assert str(error).startswith(f"{path}:{line}: rule {rule}:")


def test_pack_level_errors(tmp_path: Path) -> None:
    dup = GOOD + GOOD.split("rules:\n", 1)[1]
    assert "appears twice" in str(error_of(write(tmp_path, "dup.yaml", dup)))
    syntax = error_of(write(tmp_path, "syntax.yaml", GOOD.replace("rules:", "rules: [")))
    assert "YAML syntax" in str(syntax) and syntax.line is not None
    base = write(tmp_path, "base.yaml", GOOD)
    child = write(
        tmp_path,
        "child.yaml",
        f"name: child\nversion: '1'\nextends: {base.name}\ndisable:\n  - says-hello\n  - nope\n",
    )
    error = error_of(child)
    assert (error.file, error.line, error.rule) == (str(child), 6, "nope")
    missing = write(tmp_path, "orphan.yaml", "name: o\nversion: '1'\nextends: gone.yaml\n")
    assert error_of(missing).line == 3
    loop = write(tmp_path, "loop.yaml", "name: l\nversion: '1'\nextends: loop.yaml\n")
    assert "cycle" in str(error_of(loop))


def test_index_maps_tenants_and_errors_name_the_pack_file(tmp_path: Path) -> None:
    write(tmp_path, "packs/tiny.yaml", GOOD)
    bad = write(tmp_path, "packs/bad.yaml", GOOD.replace("severity: low", "severity: awful"))
    index = write(
        tmp_path, "index.yaml", "default: packs/tiny.yaml\ntenants:\n  t1: packs/bad.yaml\n"
    )
    error = error_of(index)
    assert (error.file, error.line, error.rule) == (str(bad.resolve()), 7, "says-hello")
    write(tmp_path, "index.yaml", "default: packs/tiny.yaml\ntenants:\n  t1: packs/none.yaml\n")
    assert error_of(index).line == 3


def test_check_config_command(kit: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(kit.packs_dir)]) == 0
    out = capsys.readouterr().out
    assert "default 1.0.0 sha256:" in out and "tenant acme-bank -> acme-bank" in out
    broken = write(tmp_path, "broken.yaml", GOOD.replace("within_s: 10", "within_s: soon"))
    assert main(["check-config", str(broken)]) == 2
    assert f"{broken}:14: rule notice:" in capsys.readouterr().err


def test_broken_pack_stops_service_start_up(kit: Any, tmp_path: Path) -> None:
    broken = write(tmp_path, "broken.yaml", GOOD.replace("severity: low", "severity: awful"))
    proc = subprocess.run(
        [sys.executable, "-m", "loopwise_compliance", "run", "--rule-packs", str(broken)],
        env={"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert f"{broken}:7: rule says-hello:" in proc.stderr
