"""Writing training sets from the store: JSON lines, Parquet, Label Studio, manifests.

Every file is rewritten whole from the store's rows in row id order, through a
temporary file and an atomic rename, so rewriting an unchanged set gives
byte-identical files and a crash leaves either the old file or the new one.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]

from loopwise_feedback.handler import ASR, COMPLIANCE, LABEL_STUDIO, SENTIMENT
from loopwise_feedback.store import (
    Partition,
    all_partitions,
    dirty_partitions,
    mark_clean,
    partition_model,
    partition_rows,
)

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"

_COMMON: list[tuple[str, pa.DataType]] = [
    ("row_id", pa.string()),
    ("tenant_id", pa.string()),
    ("call_id", pa.string()),
    ("task_id", pa.string()),
    ("decision_id", pa.string()),
    ("reviewer_id", pa.string()),
    ("event_id", pa.string()),
    ("decided_at", pa.timestamp("us", tz="UTC")),
]

PARQUET_SCHEMAS: dict[str, pa.Schema] = {
    ASR: pa.schema(
        [
            ("audio_filepath", pa.string()),
            ("offset", pa.float64()),
            ("duration", pa.float64()),
            ("text", pa.string()),
            ("pred_text", pa.string()),
            ("corrected", pa.bool_()),
            ("lang", pa.string()),
            ("segment_id", pa.string()),
            ("speaker", pa.string()),
            ("transcript_confidence", pa.float64()),
            ("model_name", pa.string()),
            ("model_version", pa.string()),
            *_COMMON,
        ]
    ),
    SENTIMENT: pa.schema(
        [
            ("segment_id", pa.string()),
            ("speaker", pa.string()),
            ("text", pa.string()),
            ("label", pa.string()),
            ("model_label", pa.string()),
            ("model_score", pa.float64()),
            ("model_confidence", pa.float64()),
            ("agree", pa.bool_()),
            ("model_name", pa.string()),
            ("model_version", pa.string()),
            *_COMMON,
        ]
    ),
    COMPLIANCE: pa.schema(
        [
            ("finding_id", pa.string()),
            ("rule_id", pa.string()),
            ("true_positive", pa.bool_()),
            ("verdict", pa.string()),
            ("segment_id", pa.string()),
            ("category", pa.string()),
            ("severity", pa.string()),
            ("score", pa.float64()),
            ("evidence", pa.string()),
            ("pack_name", pa.string()),
            ("pack_version", pa.string()),
            *_COMMON,
        ]
    ),
}

JSONL_NAMES = {ASR: "nemo.jsonl", SENTIMENT: "data.jsonl", COMPLIANCE: "data.jsonl"}
"""The ASR set's JSON lines are a NeMo manifest (audio_filepath, offset, duration, text)."""


def partition_dir(root: Path, partition: Partition) -> Path:
    """Where a training set lives under the root."""
    if partition.kind == LABEL_STUDIO:
        return root / "label-studio" / f"tenant={partition.tenant_id}" / f"date={partition.date}"
    return (
        root
        / "datasets"
        / partition.kind
        / f"v{SCHEMA_VERSION}"
        / f"tenant={partition.tenant_id}"
        / f"date={partition.date}"
        / f"model={partition.model_key}"
    )


def _atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    with tmp.open("rb") as fh:
        os.fsync(fh.fileno())
    tmp.replace(path)


def _write_bytes(path: Path, data: bytes) -> None:
    _atomic_write(path, lambda tmp: _write_all(tmp, data))


def _write_all(path: Path, data: bytes) -> None:
    path.write_bytes(data)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _jsonl(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n" for r in rows).encode()


def parquet_table(kind: str, rows: list[dict[str, Any]]) -> pa.Table:
    """Rows of a kind as an Arrow table with the kind's fixed schema."""
    schema = PARQUET_SCHEMAS[kind]
    typed = [
        {
            **{name: r.get(name) for name in schema.names},
            "decided_at": datetime.fromisoformat(r["decided_at"]),
        }
        for r in rows
    ]
    return pa.Table.from_pylist(typed, schema=schema)


def _counts(kind: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    if kind == ASR:
        corrected = sum(1 for r in rows if r["corrected"])
        return {
            "rows": len(rows),
            "corrected": corrected,
            "accepted": len(rows) - corrected,
            "audio_seconds": round(sum(float(r["duration"]) for r in rows), 3),
        }
    if kind == SENTIMENT:
        return {
            "rows": len(rows),
            "labels": dict(sorted(Counter(str(r["label"]) for r in rows).items())),
            "agree": sum(1 for r in rows if r["agree"]),
        }
    if kind == COMPLIANCE:
        per_rule: dict[str, dict[str, int]] = {}
        for r in rows:
            entry = per_rule.setdefault(str(r["rule_id"]), {"confirmed": 0, "dismissed": 0})
            entry[str(r["verdict"])] += 1
        return {"rows": len(rows), "rules": dict(sorted(per_rule.items()))}
    return {"rows": len(rows), "tasks": len(rows)}


def write_partition(conn: sqlite3.Connection, root: Path, partition: Partition) -> dict[str, Any]:
    """Rewrite one training set and its manifest from the store; return the manifest."""
    rows = partition_rows(conn, partition)
    folder = partition_dir(root, partition)
    folder.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    if partition.kind == LABEL_STUDIO:
        files["tasks.json"] = folder / "tasks.json"
        body = json.dumps(rows, sort_keys=True, ensure_ascii=False, indent=1).encode() + b"\n"
        _write_bytes(files["tasks.json"], body)
    else:
        files[JSONL_NAMES[partition.kind]] = folder / JSONL_NAMES[partition.kind]
        _write_bytes(files[JSONL_NAMES[partition.kind]], _jsonl(rows))
        files["data.parquet"] = folder / "data.parquet"
        table = parquet_table(partition.kind, rows)
        _atomic_write(files["data.parquet"], lambda tmp: pq.write_table(table, tmp))
    hashes = {
        name: {"sha256": _sha256(path), "bytes": path.stat().st_size, "rows": len(rows)}
        for name, path in sorted(files.items())
    }
    version_source = json.dumps(
        {"schema_version": SCHEMA_VERSION, "files": {n: h["sha256"] for n, h in hashes.items()}},
        sort_keys=True,
    )
    model_name, model_version = partition_model(conn, partition)
    manifest: dict[str, Any] = {
        "kind": partition.kind,
        "schema_version": SCHEMA_VERSION,
        "version": "sha256:" + hashlib.sha256(version_source.encode()).hexdigest(),
        "tenant_id": partition.tenant_id,
        "date": partition.date,
        "counts": _counts(partition.kind, rows),
        "files": hashes,
    }
    if partition.kind != LABEL_STUDIO and rows:
        manifest["model"] = {"name": model_name, "version": model_version}
        manifest["first_decided_at"] = min(str(r["decided_at"]) for r in rows)
        manifest["last_decided_at"] = max(str(r["decided_at"]) for r in rows)
    text = json.dumps(manifest, sort_keys=True, indent=2) + "\n"
    _write_bytes(folder / MANIFEST, text.encode())
    return manifest


def write_index(root: Path) -> Path:
    """List every training set under the root with its version and counts (index.json)."""
    entries = []
    for path in sorted(root.glob(f"**/{MANIFEST}")):
        manifest = json.loads(path.read_text(encoding="utf-8"))
        entries.append(
            {
                "path": str(path.parent.relative_to(root)),
                "kind": manifest["kind"],
                "version": manifest["version"],
                "rows": manifest["counts"]["rows"],
            }
        )
    index = root / "index.json"
    body = json.dumps({"schema_version": SCHEMA_VERSION, "sets": entries}, indent=2) + "\n"
    _write_bytes(index, body.encode())
    return index


def publish(conn: sqlite3.Connection, root: Path, *, everything: bool = False) -> list[Partition]:
    """Rewrite the training sets changed since the last publish (or all); return them."""
    targets: list[tuple[Partition, int | None]]
    if everything:
        targets = [(p, None) for p in all_partitions(conn)]
    else:
        targets = [(p, g) for p, g in dirty_partitions(conn)]
    for partition, generation in targets:
        write_partition(conn, root, partition)
        if generation is not None:
            mark_clean(conn, partition, generation)
    if targets or not (root / "index.json").exists():
        root.mkdir(parents=True, exist_ok=True)
        write_index(root)
    return [p for p, _ in targets]
