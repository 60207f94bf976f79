"""`loopwise-audit` as a user runs it: verify, export, verify an export, show, check-config."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from loopwise_audit.checkpoints import Checkpointer, KeyRing
from loopwise_audit.samples import sample_entries
from loopwise_audit.store import AuditStore

KEY = "cli-test-key-0123456789abcdef-0123456789"


@pytest.fixture
def trail(tmp_path: Path) -> dict[str, str]:
    """200 records of acme, checkpointed every 50, and the environment that points at them."""
    db = tmp_path / "audit.db"
    store = AuditStore(f"sqlite:///{db}")
    checkpointer = Checkpointer(
        directory=tmp_path / "cp",
        keys=KeyRing("audit-1", {"audit-1": KEY.encode()}),
        every_records=50,
        every_s=3600,
    )
    entries = list(sample_entries(200))
    for start in range(0, 200, 50):
        checkpointer.note(store.append(entries[start : start + 50]).heads.values())
        checkpointer.run_due()
    store.close()
    return {
        **os.environ,
        "LOOPWISE_AUDIT_DATABASE_URL": f"sqlite:///{db}",
        "LOOPWISE_AUDIT_CHECKPOINT_DIR": str(tmp_path / "cp"),
        "LOOPWISE_AUDIT_HMAC_KEY": KEY,
        "DB_PATH": str(db),
    }


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "loopwise_audit", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_verify_passes_then_names_the_edited_record(trail: dict[str, str]) -> None:
    ok = cli(trail, "verify")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "acme: 200 records verified, up to seq 200, 4 checkpoint(s) matched: OK" in ok.stdout
    db = sqlite3.connect(trail["DB_PATH"])
    db.execute("DROP TRIGGER audit_records_no_update")
    db.execute("UPDATE audit_records SET body = replace(body, 'success', 'failure') WHERE seq = 77")
    db.commit()
    db.close()
    bad = cli(trail, "verify")
    assert bad.returncode == 1
    assert "acme: 76 records verified, up to seq 76" in bad.stdout
    assert "first bad record: acme: edited at seq 77" in bad.stdout


def test_export_verifies_offline_and_catches_a_changed_line(
    trail: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "evidence"
    done = cli(trail, "export", "--tenant", "acme", "--since", "2000-01-01", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert "exported 200 records (seq 1..200) and 4 checkpoints" in done.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["records"] == 200 and manifest["first_prev_hash"] == "0" * 64
    checked = cli(trail, "verify", "--export", str(out))
    assert checked.returncode == 0, checked.stdout
    assert "checkpoints matched 4: OK" in checked.stdout

    lines = (out / "records.jsonl").read_text().splitlines()
    record = json.loads(lines[120])
    record["record"]["outcome"] = "failure"
    lines[120] = json.dumps(record)
    (out / "records.jsonl").write_text("\n".join(lines) + "\n")
    tampered = cli(trail, "verify", "--export", str(out))
    assert tampered.returncode == 1
    assert "edited at seq 121" in tampered.stdout
    assert "records.jsonl: SHA-256 differs from the manifest" in tampered.stdout


def test_export_window_is_a_verifiable_segment(trail: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "none"
    done = cli(trail, "export", "--tenant", "acme", "--until", "2000-01-01", "--out", str(out))
    assert done.returncode == 0 and "exported 0 records" in done.stdout


def test_show_tells_the_story_of_a_call(trail: dict[str, str]) -> None:
    shown = cli(trail, "show", "call-000002")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0] == "call call-000002 of tenant acme: 17 audit records"
    actions = [line.split()[2] for line in lines[1:]]
    assert actions[:3] == ["call.start", "call.metadata.update", "audio.receive"]
    assert "review.decide" in actions and "outcome.release" in actions
    decide = next(line for line in lines if "review.decide" in line)
    assert "by user:rev-7" in decide and "card_data.spoken confirmed" in decide
    assert all("sealed" in line for line in lines[1:])
    assert cli(trail, "show", "no-such-call").returncode == 1

    # (17: the example events include the console's audit record of the decision)
    # Reading the trail is itself recorded (PCI DSS 10.2.1.3), and the chain still verifies.
    again = cli(trail, "show", "call-000002", "--actor", "auditor-9")
    assert "audit.show" in again.stdout.splitlines()[-1]
    assert "by user:" in again.stdout.splitlines()[-1]
    third = cli(trail, "show", "call-000002", "--no-access-record")
    assert "not recorded" in third.stderr
    final = cli(trail, "show", "call-000002", "--no-access-record").stdout.splitlines()
    assert final[0] == "call call-000002 of tenant acme: 19 audit records"
    assert "by user:auditor-9" in final[-1]
    assert cli(trail, "verify").returncode == 0


def test_check_config_names_a_missing_key(trail: dict[str, str]) -> None:
    env = {**trail, "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"}
    good = cli(env, "check-config")
    assert good.returncode == 0, good.stderr
    assert "200 records, 1 tenant chain(s)" in good.stdout
    del env["LOOPWISE_AUDIT_HMAC_KEY"]
    missing = cli(env, "check-config")
    assert missing.returncode == 2
    assert "hmac_key is required" in missing.stderr
    short = cli({**env, "LOOPWISE_AUDIT_HMAC_KEY": "short"}, "verify")
    assert short.returncode == 2
    assert "LOOPWISE_AUDIT_HMAC_KEY" in short.stderr and "at least 32 bytes" in short.stderr
