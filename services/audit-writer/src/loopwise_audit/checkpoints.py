"""Checkpoints: signed chain heads, kept in JSON-lines files outside the database and on a topic.

A checkpoint says "record `sequence` of tenant T's chain has hash H", signed
with HMAC-SHA-256 under a secret key. An attacker who can rewrite the database
cannot forge one without the key, so a rewritten or truncated tail is caught.
"""

from __future__ import annotations

import hmac
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from pydantic import ValidationError

from loopwise.events import AuditCheckpointV1
from loopwise.logging import get_logger
from loopwise_audit.chain import CHAIN_SCHEME, checkpoint_hmac
from loopwise_audit.store import ChainHead

log = get_logger(__name__)

CHECKPOINT_SUFFIX = ".checkpoints.jsonl"


@dataclass(frozen=True)
class KeyRing:
    """The key that signs new checkpoints and every key that may have signed old ones."""

    key_id: str
    keys: Mapping[str, bytes]

    def sign(self, tenant_id: str, sequence: int, head_hash: str, records: int) -> str:
        """HMAC of a chain head under the current key."""
        return checkpoint_hmac(self.keys[self.key_id], tenant_id, sequence, head_hash, records)

    def valid(self, cp: AuditCheckpointV1) -> bool:
        """True if the checkpoint's HMAC verifies under the key it names."""
        key = self.keys.get(cp.key_id)
        if key is None:
            return False
        expected = checkpoint_hmac(key, cp.tenant_id, cp.sequence, cp.head_hash, cp.records)
        return hmac.compare_digest(expected, cp.hmac)


@dataclass(frozen=True)
class LoadedCheckpoint:
    """A checkpoint as read back, with where it came from."""

    checkpoint: AuditCheckpointV1
    path: Path
    line: int


@dataclass
class CheckpointFileProblem:
    """A checkpoint line that could not be read."""

    path: Path
    line: int
    reason: str


@dataclass
class CheckpointSet:
    """Every checkpoint under a directory, by tenant, and the lines that were unreadable."""

    by_tenant: dict[str, list[LoadedCheckpoint]] = field(default_factory=dict)
    problems: list[CheckpointFileProblem] = field(default_factory=list)

    def merged(self, other: CheckpointSet) -> CheckpointSet:
        """Both sets together (a checkpoint kept in two places counts once)."""
        out = CheckpointSet(problems=[*self.problems, *other.problems])
        for source in (self, other):
            for tenant, loaded in source.by_tenant.items():
                mine = out.by_tenant.setdefault(tenant, [])
                have = {c.checkpoint.model_dump_json() for c in mine}
                mine.extend(c for c in loaded if c.checkpoint.model_dump_json() not in have)
        return out

    def count(self) -> int:
        """Checkpoints held."""
        return sum(len(v) for v in self.by_tenant.values())


def checkpoint_path(directory: Path, tenant_id: str) -> Path:
    """The JSON-lines file of one tenant's checkpoints."""
    return directory / f"{tenant_id}{CHECKPOINT_SUFFIX}"


def load_checkpoints(directory: Path, pattern: str = f"*{CHECKPOINT_SUFFIX}") -> CheckpointSet:
    """Read every tenant's checkpoint file under a directory."""
    found = CheckpointSet()
    if not directory.is_dir():
        return found
    for path in sorted(directory.glob(pattern)):
        with path.open("r", encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    cp = AuditCheckpointV1.model_validate_json(line)
                except ValidationError as exc:
                    found.problems.append(
                        CheckpointFileProblem(
                            path, number, f"not a checkpoint: {exc.error_count()} error(s)"
                        )
                    )
                    continue
                found.by_tenant.setdefault(cp.tenant_id, []).append(
                    LoadedCheckpoint(cp, path, number)
                )
    return found


def append_checkpoint(directory: Path, cp: AuditCheckpointV1) -> Path:
    """Append one checkpoint to its tenant's file and fsync it."""
    directory.mkdir(parents=True, exist_ok=True)
    path = checkpoint_path(directory, cp.tenant_id)
    with path.open("a", encoding="utf-8") as handle:
        handle.write(cp.model_dump_json() + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    return path


def make_checkpoint(
    keys: KeyRing, head: ChainHead, *, now: datetime | None = None
) -> AuditCheckpointV1:
    """A signed checkpoint of a chain head."""
    records = head.seq  # sequences start at 1 and have no gaps
    return AuditCheckpointV1(
        tenant_id=head.tenant_id,
        occurred_at=now or datetime.now(UTC),
        sequence=head.seq,
        head_hash=head.record_hash,
        hmac=keys.sign(head.tenant_id, head.seq, head.record_hash, records),
        key_id=keys.key_id,
        records=records,
        chain_scheme=CHAIN_SCHEME,
        head_recorded_at=datetime.fromisoformat(head.recorded_at.replace("Z", "+00:00")),
    )


Publish = Callable[[AuditCheckpointV1], None]


class Checkpointer:
    """Signs chain heads every N records or T seconds; writes them to files, then publishes."""

    def __init__(
        self,
        *,
        directory: Path,
        keys: KeyRing,
        every_records: int,
        every_s: float,
        publish: Publish | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.directory = directory
        self.keys = keys
        self.every_records = every_records
        self.every_s = every_s
        self.publish = publish
        self.clock = clock
        self._lock = threading.Lock()
        self._heads: dict[str, ChainHead] = {}
        self._signed: dict[str, int] = {}
        self._signed_at: dict[str, float] = {}
        self._unpublished: list[AuditCheckpointV1] = []
        for tenant, loaded in load_checkpoints(directory).by_tenant.items():
            self._signed[tenant] = max(c.checkpoint.sequence for c in loaded)
            self._signed_at[tenant] = clock()

    def note(self, heads: Iterable[ChainHead]) -> None:
        """Learn new chain heads (after their records are committed)."""
        with self._lock:
            for head in heads:
                known = self._heads.get(head.tenant_id)
                if known is None or head.seq > known.seq:
                    self._heads[head.tenant_id] = head
                self._signed_at.setdefault(head.tenant_id, self.clock())

    def pending(self) -> dict[str, int]:
        """Records per tenant not yet covered by a checkpoint."""
        with self._lock:
            return {
                t: h.seq - self._signed.get(t, 0)
                for t, h in self._heads.items()
                if h.seq > self._signed.get(t, 0)
            }

    def run_due(self, *, force: bool = False) -> list[AuditCheckpointV1]:
        """Checkpoint every tenant whose head is N records or T seconds past its last checkpoint."""
        made: list[AuditCheckpointV1] = []
        with self._lock:
            now = self.clock()
            for tenant, head in sorted(self._heads.items()):
                behind = head.seq - self._signed.get(tenant, 0)
                if behind <= 0:
                    continue
                stale = now - self._signed_at.get(tenant, now) >= self.every_s
                if force or behind >= self.every_records or stale:
                    cp = make_checkpoint(self.keys, head)
                    append_checkpoint(self.directory, cp)
                    self._signed[tenant] = head.seq
                    self._signed_at[tenant] = now
                    self._unpublished.append(cp)
                    made.append(cp)
            self._publish_pending()
        return made

    def _publish_pending(self) -> None:
        if self.publish is None:
            self._unpublished.clear()
            return
        while self._unpublished:
            cp = self._unpublished[0]
            try:
                self.publish(cp)
            except Exception:  # the broker may be away; the file has it, publishing retries
                log.exception("checkpoint_publish_failed", tenant_id=cp.tenant_id, seq=cp.sequence)
                return
            self._unpublished.pop(0)
            log.info("checkpoint_published", tenant_id=cp.tenant_id, seq=cp.sequence)

    def start_timer(
        self, stop: threading.Event, interval_s: float | None = None
    ) -> threading.Thread:
        """Run `run_due` periodically in a daemon thread until `stop` is set."""
        interval = interval_s or max(0.2, min(5.0, self.every_s / 4))

        def loop() -> None:
            while not stop.wait(interval):
                try:
                    self.run_due()
                except OSError:
                    log.exception("checkpoint_failed")

        thread = threading.Thread(target=loop, name="audit-checkpointer", daemon=True)
        thread.start()
        return thread
