"""Evidence for auditors: a tenant's records and checkpoints as files, and one call's story.

An export directory holds `records.jsonl` (one record a line: seq, previous
hash, hash and the record itself), `checkpoints.jsonl` (the tenant's signed
heads) and `manifest.json` (counts, the chain segment, SHA-256 of each file).
Anyone can re-derive every hash from the records with the scheme in
docs/audit.md; `loopwise-audit verify --export DIR` does it.
"""

from __future__ import annotations

import hashlib
import json
import socket
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from loopwise_audit.chain import CHAIN_SCHEME, RECORD_DOMAIN, canonical_json, sha256_hex
from loopwise_audit.checkpoints import KeyRing, load_checkpoints
from loopwise_audit.handler import RECORD_VERSION, AuditEntry, utc_text
from loopwise_audit.store import AuditStore, StoredRecord
from loopwise_audit.verify import ChainReport, hash_ok, signed_heads, verify_chain

RECORDS_FILE = "records.jsonl"
CHECKPOINTS_FILE = "checkpoints.jsonl"
MANIFEST_FILE = "manifest.json"
ACCESS_EVENT_TYPE = "io.loopwise.audit.access.v1"
"""Type of the records the CLI writes when someone reads the trail (not a Kafka event)."""


@dataclass(frozen=True)
class ExportSummary:
    """What an export wrote."""

    directory: Path
    records: int
    first_seq: int | None
    last_seq: int | None
    checkpoints: int


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def export_tenant(
    store: AuditStore,
    checkpoint_dir: Path,
    tenant: str,
    out: Path,
    *,
    since: str | None = None,
    until: str | None = None,
) -> ExportSummary:
    """Write a tenant's records recorded in [since, until) and its checkpoints to `out`."""
    out.mkdir(parents=True, exist_ok=True)
    first = last = None
    first_prev = None
    count = 0
    with store.reader() as conn, (out / RECORDS_FILE).open("w", encoding="utf-8") as handle:
        for record in store.records(conn, tenant, since=since, until=until):
            if first is None:
                first, first_prev = record.seq, record.prev_hash
            last = record.seq
            line = {
                "seq": record.seq,
                "prev_hash": record.prev_hash,
                "record_hash": record.record_hash,
                "record": record.facts(),
            }
            handle.write(json.dumps(line, sort_keys=True, ensure_ascii=False) + "\n")
            count += 1
    loaded = load_checkpoints(checkpoint_dir).by_tenant.get(tenant, [])
    with (out / CHECKPOINTS_FILE).open("w", encoding="utf-8") as handle:
        for item in loaded:
            handle.write(item.checkpoint.model_dump_json() + "\n")
    manifest = {
        "tenant_id": tenant,
        "chain_scheme": CHAIN_SCHEME,
        "record_domain_hex": RECORD_DOMAIN.hex(),
        "recorded_since": since,
        "recorded_until": until,
        "records": count,
        "first_seq": first,
        "last_seq": last,
        "first_prev_hash": first_prev,
        "checkpoints": len(loaded),
        "exported_at": datetime.now(UTC).isoformat(),
        "files": {name: _file_sha256(out / name) for name in (RECORDS_FILE, CHECKPOINTS_FILE)},
    }
    (out / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return ExportSummary(out, count, first, last, len(loaded))


def _export_rows(tenant: str, path: Path) -> Iterable[StoredRecord]:
    with path.open("r", encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            item = json.loads(line)
            record: dict[str, Any] = item["record"]
            yield StoredRecord(
                id=number,
                tenant_id=str(record.get("tenant_id", tenant)),
                seq=int(item["seq"]),
                event_id=str(record.get("event_id")),
                event_type=str(record.get("event_type")),
                call_id=record.get("call_id"),
                occurred_at=str(record.get("occurred_at")),
                recorded_at=str(record.get("recorded_at")),
                prev_hash=str(item["prev_hash"]),
                record_hash=str(item["record_hash"]),
                body=canonical_json(record),
            )


def verify_export(directory: Path, keys: KeyRing) -> tuple[ChainReport, list[str]]:
    """Re-derive an export's hashes and check it against its checkpoints and manifest."""
    manifest = json.loads((directory / MANIFEST_FILE).read_text(encoding="utf-8"))
    problems = [
        f"{name}: SHA-256 differs from the manifest"
        for name, digest in manifest["files"].items()
        if _file_sha256(directory / name) != digest
    ]
    tenant = manifest["tenant_id"]
    staging = directory / CHECKPOINTS_FILE
    cps = load_checkpoints(directory, pattern=CHECKPOINTS_FILE) if staging.exists() else None
    heads, faults = signed_heads(cps, keys) if cps is not None else ({}, [])
    problems += [f.describe() for f in faults]
    first, last = manifest["first_seq"], manifest["last_seq"]
    if first is None:
        return ChainReport(tenant), problems
    signed = {s: h for s, h in heads.get(tenant, {}).items() if first <= s <= last}
    report = verify_chain(
        tenant,
        _export_rows(tenant, directory / RECORDS_FILE),
        signed,
        start_seq=first,
        start_prev=manifest["first_prev_hash"],
    )
    if report.ok and report.head_seq != last:
        problems.append(
            f"manifest says the export ends at {last}, records end at {report.head_seq}"
        )
    return report, problems


# -- one call's story ----------------------------------------------------------------------


def _join(items: Iterable[str]) -> str:
    return ", ".join(items) or "none"


def _story_detail(facts: dict[str, Any]) -> str:
    d: dict[str, Any] = facts.get("details") or {}
    subject: dict[str, Any] = facts.get("subject") or {}
    action = facts.get("action")
    if action == "call.start":
        return (
            f"queue {d.get('queue')}, region {d.get('region')}, language {d.get('language_hint')}"
        )
    if action in ("compliance.check_segment", "compliance.check_call"):
        findings = [f"{f['rule_id']} ({f['severity']})" for f in d.get("findings", [])]
        return f"findings: {_join(findings)}"
    if action == "routing.decide":
        fired = [f["rule_id"] for f in d.get("fired", [])]
        text = f"rule {d.get('rule_id') or 'default'}, conditions fired: {_join(fired)}"
        if d.get("sampling_draw") is not None:
            text += f", draw {d['sampling_draw']} vs rate {d.get('sample_rate')}"
        return text
    if action == "review.task.open":
        return f"task {subject.get('task_id')} {d.get('priority')} due {d.get('due_at')}"
    if action == "review.task.escalate":
        return f"task {subject.get('task_id')} escalated to level {d.get('level')}"
    if action == "review.decide":
        verdicts = [f"{v['rule_id']} {v['verdict']}" for v in d.get("finding_verdicts", [])]
        return (
            f"task {subject.get('task_id')}: {d.get('transcript_corrections')} correction(s), "
            f"findings {_join(verdicts)}, {d.get('seconds_to_decide')} s to decide"
        )
    if action == "outcome.release":
        return f"verdict {d.get('verdict')}, task {subject.get('task_id')}"
    if "segment_id" in subject:
        return f"segment {subject['segment_id']}"
    return ""


@dataclass
class CallStory:
    """One call's audit records as lines for people, and the tenants they belong to."""

    tenants: list[str]
    lines: list[str]


def call_story(store: AuditStore, call_id: str, tenant: str | None = None) -> CallStory:
    """What happened to one call, check by check, in the order it was recorded."""
    story = CallStory([], [])
    lines = story.lines
    with store.reader() as conn:
        tenants = [tenant] if tenant else store.tenants(conn)
        for t in tenants:
            records = list(store.records(conn, t, call_id=call_id))
            if not records:
                continue
            story.tenants.append(t)
            lines.append(f"call {call_id} of tenant {t}: {len(records)} audit records")
            for r in records:
                facts = r.facts()
                actor = facts.get("actor") or {}
                producer = facts.get("producer")
                version = f" [{producer['name']} {producer['version']}]" if producer else ""
                if facts.get("policy_version"):
                    version += f" [policy {facts['policy_version']}]"
                seal = "sealed" if hash_ok(r) else "HASH MISMATCH"
                lines.append(
                    f"  #{r.seq:<7} {facts.get('occurred_at')}  {facts.get('action'):<28} "
                    f"{facts.get('outcome'):<7} {facts.get('result'):<18} "
                    f"by {actor.get('type')}:{actor.get('id')}{version}  {_story_detail(facts)}"
                    f"  ({seal}, event {r.event_id})"
                )
    return story


def access_entry(
    tenant: str,
    action: str,
    actor: str,
    *,
    call_id: str | None = None,
    details: dict[str, Any] | None = None,
) -> AuditEntry:
    """An audit record of someone reading the trail (PCI DSS 10.2.1.3: access to audit logs)."""
    now = utc_text(datetime.now(UTC))
    event_id = f"audit-access-{uuid.uuid4()}"
    facts_details = details or {}
    facts = {
        "v": RECORD_VERSION,
        "tenant_id": tenant,
        "event_id": event_id,
        "event_type": ACCESS_EVENT_TYPE,
        "action": action,
        "actor": {"type": "user", "id": actor},
        "via": "loopwise-audit",
        "occurred_at": now,
        "event_time": now,
        "origin": {"source": "loopwise-audit", "host": socket.gethostname()},
        "outcome": "success",
        "result": "read",
        "call_id": call_id,
        "subject": {},
        "resource": f"call:{call_id}" if call_id else "tenant",
        "producer": None,
        "policy_version": None,
        "derived_from": [],
        "derived_from_count": 0,
        "details": facts_details,
        "event_sha256": sha256_hex(canonical_json(facts_details).encode("utf-8")),
    }
    return AuditEntry(tenant, event_id, ACCESS_EVENT_TYPE, call_id, now, facts)
