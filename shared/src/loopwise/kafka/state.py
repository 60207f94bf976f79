"""Per-key state for stateful services, kept in memory and made durable in a changelog topic.

The one stateful-handler shape every stateful service uses:

    handle(state | None, incoming, now) -> (state | None, emits)
    tick(state, now)                    -> (state | None, emits)   # time alone, e.g. a deadline

`StateStore` owns the rest, together with the shared `Worker`:

* **send, then store.** A batch's outputs are produced and acknowledged first; only then
  are the changed parts of the states it touched written to the changelog and
  acknowledged; only then are the input offsets stored. A crash anywhere in between
  repeats work (outputs keep their derived ids, consumers drop them by id) and never
  loses any: the state on the changelog is never ahead of outputs that were not sent.
* **Flat changelog.** A state is written as parts (`dirty_parts`): a call's header and
  one part per segment or task, say. Only parts that changed since the last write go to
  the changelog, so the bytes per event stay flat as calls get longer. A deleted state
  becomes tombstones, and the compacted topic forgets it.
* **Co-partitioned.** A state lives in the changelog partition numbered like the input
  partition its key arrives on; the worker restores exactly its assigned partitions
  before it handles their input, and drops them when they are revoked.
* **Rollback.** If a batch cannot be delivered, or a handler fails on one event, the
  touched states are rebuilt from the parts last acknowledged, so a retried batch sees
  the state as it was before the batch.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from typing import Any, Generic, Protocol, TypeVar

from loopwise.kafka.intake import Emit, Incoming, OutRecord, RetryBatch
from loopwise.logging import get_logger

log = get_logger(__name__)

S = TypeVar("S")

Parts = dict[str, bytes | None]
"""Changed parts of one state: part name -> bytes, or None to delete that part."""


class StatefulHandler(Protocol[S]):
    """A pure stateful handler: no Kafka inside, the store and worker do the rest."""

    def key_of(self, incoming: Incoming) -> str:
        """The state key of an input (a call id): inputs of one key meet in one partition."""
        ...

    def handle(
        self, state: S | None, incoming: Incoming, now: float
    ) -> tuple[S | None, list[Emit]]:
        """Apply one input to its key's state: the new state (None deletes it), outputs."""
        ...

    def tick(self, state: S, now: float) -> tuple[S | None, list[Emit]]:
        """Let time pass for one state whose wake time has come; outputs need explicit ids."""
        ...

    def wake_at(self, state: S) -> float | None:
        """When `tick` next matters for this state (None: never)."""
        ...

    def dirty_parts(self, state: S) -> Parts:
        """The parts of the state changed since `mark_clean` (all parts of a new state)."""
        ...

    def mark_clean(self, state: S) -> None:
        """Forget what changed: the parts were written."""
        ...

    def load(self, key: str, parts: Mapping[str, bytes]) -> S:
        """Rebuild a state from its parts as the changelog holds them."""
        ...


def _watermarks(consumer: Any, tp: Any, timeout_s: float = 120.0) -> tuple[int, int]:
    """A partition's low and high watermarks, retried while the broker answers with a
    transient error (a new topic's leader not elected yet, a broker restarting)."""
    from confluent_kafka import KafkaException

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            low, high = consumer.get_watermark_offsets(tp, timeout=10)
            return int(low), int(high)
        except KafkaException as exc:
            if time.monotonic() > deadline:
                raise
            log.warning("changelog_watermarks_retry", partition=tp.partition, error=str(exc))
            time.sleep(0.5)


_quoted = json.encoder.encode_basestring_ascii  # type: ignore[attr-defined]


def _record_key(key: str, part: str) -> bytes:
    """`json.dumps([key, part], separators=(",", ":"))`, byte for byte (compaction keeps one
    record per key); built from the encoder's own string quoting, as an encoder object
    per record cost more than the rest of the write."""
    return f"[{_quoted(key)},{_quoted(part)}]".encode("ascii")


def _parse_key(raw: bytes | None) -> tuple[str, str] | None:
    try:
        key, part = json.loads(raw or b"")
    except (ValueError, TypeError):
        return None
    if not isinstance(key, str) or not isinstance(part, str):
        return None
    return key, part


class StateStore(Generic[S]):
    """Keyed states of the partitions this worker owns, with their changelog."""

    def __init__(
        self,
        handler: StatefulHandler[S],
        changelog_topic: str,
        *,
        clock: Any = time.time,
    ) -> None:
        self.handler = handler
        self.changelog_topic = changelog_topic
        self.clock = clock
        self._parts: dict[int, dict[str, dict[str, bytes]]] = {}  # acknowledged, per partition
        self._live: dict[str, S] = {}
        self._partition_of: dict[str, int] = {}
        self._wake: dict[str, float] = {}
        self._touched: set[str] = set()
        self._deleted: set[str] = set()
        self._pending: list[tuple[int, str, Parts]] = []
        self._pending_bytes = 0
        self.restored_records = 0
        self.written_bytes = 0
        self.written_records = 0

    # ---- ownership --------------------------------------------------------------------

    @property
    def partitions(self) -> set[int]:
        """Changelog partitions restored and owned."""
        return set(self._parts)

    def restore(self, partitions: Iterable[int], config: Mapping[str, Any]) -> None:
        """Read these changelog partitions to their end and rebuild their states."""
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        wanted = sorted(set(partitions) - set(self._parts))
        if not wanted:
            return
        started = time.monotonic()
        consumer = Consumer(
            {
                **config,
                "group.id": f"{self.changelog_topic}-restore",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "auto.offset.reset": "earliest",
            }
        )
        try:
            ends: dict[int, int] = {}
            for p in wanted:
                low, high = _watermarks(consumer, TopicPartition(self.changelog_topic, p))
                if high > low:
                    ends[p] = high
                self._parts[p] = {}
            if ends:
                consumer.assign(
                    [TopicPartition(self.changelog_topic, p, OFFSET_BEGINNING) for p in ends]
                )
                deadline = time.monotonic() + 300
                while ends and time.monotonic() < deadline:
                    for msg in consumer.consume(num_messages=10_000, timeout=1.0):
                        if msg.error() is not None:
                            continue
                        p, offset = int(msg.partition() or 0), int(msg.offset() or 0)
                        self._apply_record(p, msg.key(), msg.value())
                        self.restored_records += 1
                        if p in ends and offset + 1 >= ends[p]:
                            del ends[p]
                if ends:
                    raise RuntimeError(
                        f"changelog {self.changelog_topic} partitions {sorted(ends)} "
                        "could not be read to their end"
                    )
        except Exception:
            for p in wanted:
                self._parts.pop(p, None)
            raise
        finally:
            consumer.close()
        for p in wanted:
            for key, parts in self._parts[p].items():
                self._rebuild(p, key, parts)
        log.info(
            "state_restored",
            changelog=self.changelog_topic,
            partitions=wanted,
            keys=sum(len(self._parts[p]) for p in wanted),
            records=self.restored_records,
            seconds=round(time.monotonic() - started, 3),
        )

    def _apply_record(self, partition: int, raw_key: bytes | None, value: bytes | None) -> None:
        parsed = _parse_key(raw_key)
        if parsed is None:
            log.warning("changelog_key_unreadable", partition=partition)
            return
        self._apply(partition, *parsed, value)

    def _apply(self, partition: int, key: str, part: str, value: bytes | None) -> None:
        """One part of a key as the changelog now holds it (None: deleted)."""
        states = self._parts.setdefault(partition, {})
        if value is None:
            parts = states.get(key)
            if parts is not None:
                parts.pop(part, None)
                if not parts:
                    del states[key]
        else:
            states.setdefault(key, {})[part] = value

    def _rebuild(self, partition: int, key: str, parts: Mapping[str, bytes]) -> None:
        try:
            state = self.handler.load(key, parts)
        except Exception:  # one unreadable state must not stop the others (logged, dropped)
            log.exception("state_unreadable", key_len=len(key), partition=partition)
            self._forget(key)
            return
        self.handler.mark_clean(state)
        self._live[key] = state
        self._partition_of[key] = partition
        self._set_wake(key, state)

    def drop(self, partitions: Iterable[int]) -> None:
        """Forget the states of partitions this worker no longer owns."""
        gone = set(partitions)
        for p in gone:
            self._parts.pop(p, None)
        for key in [k for k, p in self._partition_of.items() if p in gone]:
            self._forget(key)

    def _forget(self, key: str) -> None:
        self._live.pop(key, None)
        self._partition_of.pop(key, None)
        self._wake.pop(key, None)
        self._touched.discard(key)
        self._deleted.discard(key)

    # ---- handling -----------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._live)

    def states(self) -> list[S]:
        """Every live state (for gauges and tests)."""
        return list(self._live.values())

    def get(self, key: str) -> S | None:
        """The live state of a key (for inspection and tests)."""
        return self._live.get(key)

    def handle(self, incoming: Incoming) -> list[Emit]:
        """The worker's handler: run the stateful handler on its key's state."""
        key = self.handler.key_of(incoming)
        if incoming.partition not in self._parts:
            # the worker's fault, never the input's: run the batch again, do not dead-letter it
            raise RetryBatch(f"partition {incoming.partition} of the state is not restored")
        state = self._live.get(key)
        try:
            new, emits = self.handler.handle(state, incoming, self.clock())
        except Exception:
            # Handlers raise before they change anything; should one not, a state untouched
            # earlier in this batch is rebuilt as it was (a touched one keeps this batch's
            # changes, whose outputs are on their way).
            if key not in self._touched:
                self.revert([key])
            raise
        self._put(incoming.partition, key, new)
        return emits

    def tick(self) -> list[Emit]:
        """Run the handler's clock for every state whose wake time has passed."""
        now = self.clock()
        emits: list[Emit] = []
        for key in [k for k, at in self._wake.items() if at <= now]:
            state = self._live.get(key)
            if state is None:
                self._wake.pop(key, None)
                continue
            try:
                new, out = self.handler.tick(state, now)
            except Exception:  # one state's bug must not stop every other clock (logged)
                log.exception("state_tick_failed", key_len=len(key))
                if key not in self._touched:
                    self.revert([key])
                self._wake.pop(key, None)
                continue
            emits.extend(out)
            self._put(self._partition_of[key], key, new)
        return emits

    def _put(self, partition: int, key: str, state: S | None) -> None:
        self._touched.add(key)
        self._partition_of[key] = partition
        if state is None:
            self._live.pop(key, None)
            self._wake.pop(key, None)
            self._deleted.add(key)
            return
        self._deleted.discard(key)
        self._live[key] = state
        self._set_wake(key, state)

    def _set_wake(self, key: str, state: S) -> None:
        at = self.handler.wake_at(state)
        if at is None:
            self._wake.pop(key, None)
        else:
            self._wake[key] = at

    # ---- the changelog ------------------------------------------------------------------

    def pending_records(self) -> list[OutRecord]:
        """The changelog records for what changed since the last commit (to produce now)."""
        records: list[OutRecord] = []
        self._pending = []
        for key in sorted(self._touched):
            partition = self._partition_of.get(key)
            if partition is None:
                continue
            if key in self._deleted:
                acked = self._parts.get(partition, {}).get(key, {})
                parts: Parts = dict.fromkeys(acked)
            else:
                state = self._live.get(key)
                if state is None:
                    continue
                parts = self.handler.dirty_parts(state)
            if not parts:
                continue
            self._pending.append((partition, key, parts))
            for part, value in parts.items():
                records.append(
                    OutRecord(
                        self.changelog_topic, _record_key(key, part), value, [], partition=partition
                    )
                )
        self._pending_bytes = sum(len(r.value or b"") + len(r.key or b"") for r in records)
        return records

    def commit(self) -> None:
        """The pending records were acknowledged: they are the state now."""
        for partition, key, parts in self._pending:
            for part, value in parts.items():
                self._apply(partition, key, part, value)
            self.written_records += len(parts)
            state = self._live.get(key)
            if state is not None:
                self.handler.mark_clean(state)
        for key in self._deleted:
            self._partition_of.pop(key, None)
        self.written_bytes += self._pending_bytes
        self._pending_bytes = 0
        self._pending = []
        self._touched.clear()
        self._deleted.clear()

    def rollback(self) -> None:
        """The batch failed: rebuild every touched state from its acknowledged parts."""
        self.revert(list(self._touched))
        self._pending = []
        self._pending_bytes = 0

    def revert(self, keys: Iterable[str]) -> None:
        """Rebuild these states from the parts last acknowledged (or forget them)."""
        for key in list(keys):
            partition = self._partition_of.get(key)
            parts = self._parts.get(partition, {}).get(key) if partition is not None else None
            self._touched.discard(key)
            self._deleted.discard(key)
            self._live.pop(key, None)
            self._wake.pop(key, None)
            if parts and partition is not None:
                self._rebuild(partition, key, parts)
            else:
                self._partition_of.pop(key, None)


def changelog_topic_name(group_id: str) -> str:
    """The changelog topic of a stateful service's consumer group."""
    return f"{group_id}-state-changelog"


def ensure_changelog(
    config: Mapping[str, Any],
    changelog: str,
    input_topics: Iterable[str],
    *,
    replication_factor: int = 1,
    timeout_s: float = 90.0,
) -> int:
    """Create the compacted changelog with the inputs' partition count; check it if it exists.

    Every input topic must have the same partition count (keys are co-partitioned), and so
    must the changelog: a state lives in the partition numbered like its input's. Raises
    ValueError naming the topics when they disagree. Returns the partition count.
    """
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    from loopwise.topics import wait_for_leaders

    admin = AdminClient(dict(config))
    inputs = sorted(set(input_topics))
    wait_for_leaders(admin, inputs, timeout_s)
    topics = admin.list_topics(timeout=30).topics
    counts = {name: len(topics[name].partitions) for name in inputs}
    if len(set(counts.values())) != 1:
        raise ValueError(f"input topics must have equal partition counts to share state: {counts}")
    partitions = next(iter(counts.values()))
    if changelog in topics:
        have = len(topics[changelog].partitions)
        if have != partitions:
            raise ValueError(
                f"changelog {changelog} has {have} partitions, its inputs {partitions}: "
                "recreate it (or the inputs) with equal counts"
            )
        return partitions
    future = admin.create_topics(
        [
            NewTopic(
                changelog,
                num_partitions=partitions,
                replication_factor=replication_factor,
                config={"cleanup.policy": "compact", "min.compaction.lag.ms": "60000"},
            )
        ],
        operation_timeout=30,
    )[changelog]
    try:
        future.result(timeout=timeout_s)
        log.info("changelog_created", topic=changelog, partitions=partitions)
    except KafkaException as exc:
        if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
            raise
    wait_for_leaders(admin, [changelog], timeout_s)
    return partitions
