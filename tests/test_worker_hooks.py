"""The shared worker's hooks for stateful handlers, on a real broker.

A `Holder` handler keeps some inputs in memory (metadata `{"hold": name}`) and
releases them on a later input (`{"release": name}`), gives up on them
(`{"give_up": name}`: a dead letter for the earlier input), or lets its timer turn
deal with them (`timed-*`: an output caused by time alone; `expire-*`: a dead letter);
`{"unavailable": n}` makes it raise `RetryBatch` the first n times it sees that input.
Run as a process with `python -m tests.test_worker_hooks` and `LOOPWISE_HOOKS_*` settings.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from loopwise.events import CallMetadataV1
from loopwise.kafka.intake import DeadLetterRequest, Emit, Incoming, RetryBatch, output_id
from loopwise.kafka.worker import TICK_INDEX_BASE, ChildEmit, Partition, Worker, WorkerSettings
from loopwise.logging import configure_logging
from loopwise.settings import load_settings
from tests.support.kafka_io import produce_events, read_all, read_topic, wait_for

ROOT = Path(__file__).resolve().parents[1]
SERVICE = "hooks"
CALL = "call-hooks"


class HookSettings(WorkerSettings):
    """Settings of the holder worker."""

    model_config = SettingsConfigDict(env_prefix="LOOPWISE_HOOKS_", env_nested_delimiter="__")

    output_topic: str = Field(description="Where echoes and timed outputs go")
    tick_interval_s: float = Field(default=0.05, gt=0, description="Timer turn period")


class Holder:
    """A stateful handler: echoes every input and holds some of them in memory."""

    def __init__(self, output_topic: str) -> None:
        self.output_topic = output_topic
        self.held: dict[str, Incoming] = {}
        self.ticks = 0
        self.fail_next_tick = False
        self.revoked: list[set[Partition]] = []
        self._dead: list[DeadLetterRequest] = []
        self.unavailable: Counter[str] = Counter()  # event id -> RetryBatch raised for it

    def _out(self, metadata: dict[str, Any]) -> Emit:
        event = CallMetadataV1(
            tenant_id="acme", call_id=CALL, occurred_at=datetime.now(UTC), metadata=metadata
        )
        latest = metadata.get("latest")
        return Emit(
            self.output_topic, event, supersedes=latest if isinstance(latest, str) else None
        )

    def __call__(self, incoming: Incoming) -> list[Emit]:
        event = incoming.event
        assert isinstance(event, CallMetadataV1)
        meta = event.metadata
        times = meta.get("unavailable")
        if isinstance(times, int) and self.unavailable[incoming.envelope.id] < times:
            self.unavailable[incoming.envelope.id] += 1  # its store is down: not the input
            raise RetryBatch(f"store unavailable ({self.unavailable[incoming.envelope.id]})")
        if isinstance(name := meta.get("hold"), str):
            self.held[name] = incoming
        if isinstance(name := meta.get("release"), str):
            self.held.pop(name, None)
        if isinstance(name := meta.get("give_up"), str) and name in self.held:
            earlier = self.held.pop(name)
            self._dead.append(DeadLetterRequest(earlier, "GaveUp", f"gave up on {name}"))
        return [self._out({**meta, "echo_of": incoming.envelope.id})]

    def offset_floors(self) -> dict[Partition, int]:
        floors: dict[Partition, int] = {}
        for held in self.held.values():
            tp = (held.topic, held.partition)
            floors[tp] = min(floors.get(tp, held.offset), held.offset)
        return floors

    def tick(self) -> list[ChildEmit]:
        self.ticks += 1
        if self.fail_next_tick:
            self.fail_next_tick = False
            raise RuntimeError("a failing timer turn")
        out: list[ChildEmit] = []
        for name, held in list(self.held.items()):
            if name.startswith("timed"):
                del self.held[name]
                out.append((held, self._out({"timed_of": held.envelope.id})))
            elif name.startswith("expire"):
                del self.held[name]
                self._dead.append(DeadLetterRequest(held, "Expired", f"{name} held too long"))
        return out

    def take_dead_letters(self) -> list[DeadLetterRequest]:
        dead, self._dead = self._dead, []
        return dead

    def drop_partitions(self, partitions: set[Partition]) -> None:
        self.revoked.append(partitions)


def build_worker(settings: HookSettings) -> tuple[Worker, Holder]:
    """A worker whose handler's state hooks are all wired in."""
    holder = Holder(settings.output_topic)
    worker = Worker(
        service=SERVICE,
        settings=settings,
        handler=holder,
        output_topics=[settings.output_topic],
        accepted={CallMetadataV1.event_type: CallMetadataV1},
        offset_floors=holder.offset_floors,
        tick=holder.tick,
        tick_interval_s=settings.tick_interval_s,
        dead_letters=holder.take_dead_letters,
        on_revoke=holder.drop_partitions,
    )
    return worker, holder


def main() -> None:
    """Run as a process."""
    from loopwise.kafka.worker import serve

    configure_logging(SERVICE, log_format="json", level=os.environ.get("LOG_LEVEL", "INFO"))
    worker, _ = build_worker(load_settings(HookSettings))
    serve(worker)


# -- tests -----------------------------------------------------------------------------------

pytestmark = pytest.mark.kafka


def meta(**metadata: Any) -> CallMetadataV1:
    return CallMetadataV1(
        tenant_id="acme", call_id=CALL, occurred_at=datetime.now(UTC), metadata=metadata
    )


def committed(bootstrap: str, group: str, topic: str) -> int:
    """The group's committed offset of partition 0 (negative when none)."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False}
    )
    try:
        (tp,) = consumer.committed([TopicPartition(topic, 0)], timeout=10)
        return int(tp.offset)
    finally:
        consumer.close()


@pytest.fixture
def hook_topics(new_topic: Callable[..., str], group_id: str) -> dict[str, str]:
    return {
        "input": new_topic("in", partitions=1),
        "output": new_topic("out", partitions=1),
        "dlq": new_topic("dlq", partitions=1),
        "group": group_id,
    }


def hook_settings(bootstrap: str, topics: dict[str, str], **extra: Any) -> HookSettings:
    """Settings of a holder worker in this process on the test's topics."""
    return HookSettings(
        kafka={"bootstrap_servers": bootstrap},
        group_id=topics["group"],
        input_topics=[topics["input"]],
        output_topic=topics["output"],
        dead_letter_topic=topics["dlq"],
        observability={"host": "127.0.0.1", "port": 0},
        **extra,
    )


@pytest.fixture
def running(kafka_bootstrap: str, hook_topics: dict[str, str]) -> Iterator[tuple[Worker, Holder]]:
    """The holder worker in a thread of this process; its first timer turn fails."""
    worker, holder = build_worker(hook_settings(kafka_bootstrap, hook_topics, poll_timeout_s=0.1))
    holder.fail_next_tick = True
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    yield worker, holder
    worker.stop()
    thread.join(60)
    assert not thread.is_alive(), "worker did not stop after stop()"
    assert holder.revoked, "on_revoke was not told of the partitions given up at shutdown"


def start_process(bootstrap: str, topics: dict[str, str]) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "LOOPWISE_HOOKS_GROUP_ID": topics["group"],
        "LOOPWISE_HOOKS_INPUT_TOPICS": json.dumps([topics["input"]]),
        "LOOPWISE_HOOKS_OUTPUT_TOPIC": topics["output"],
        "LOOPWISE_HOOKS_DEAD_LETTER_TOPIC": topics["dlq"],
        "LOOPWISE_HOOKS_OBSERVABILITY__PORT": "0",
        # A killed member leaves the group after this, so the restart is assigned soon.
        "LOOPWISE_HOOKS_CONSUMER_OVERRIDES": json.dumps({"session.timeout.ms": 6000}),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "tests.test_worker_hooks"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def metadata_of(value: bytes | None) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(value or b"")["metadata"]
    return body


def echoes(bootstrap: str, topic: str) -> Counter[str]:
    return Counter(metadata_of(r.value)["echo_of"] for r in read_all(bootstrap, topic))


def test_an_offset_floor_holds_back_the_commit_and_a_killed_worker_replays_the_held_input(
    kafka_bootstrap: str, hook_topics: dict[str, str]
) -> None:
    events = [meta(n=0), meta(n=1, hold="a"), *(meta(n=i) for i in range(2, 6))]
    ids = produce_events(kafka_bootstrap, hook_topics["input"], events)
    first = start_process(kafka_bootstrap, hook_topics)
    try:
        assert len(read_topic(kafka_bootstrap, hook_topics["output"], expect=6)) == 6
        # All six are delivered, yet the commit stops at the held input (offset 1).
        assert wait_for(
            lambda: committed(kafka_bootstrap, hook_topics["group"], hook_topics["input"]) == 1,
            30,
        ), "the committed offset never reached the held input's"
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(30)
    assert committed(kafka_bootstrap, hook_topics["group"], hook_topics["input"]) == 1

    second = start_process(kafka_bootstrap, hook_topics)
    try:
        assert wait_for(
            lambda: sum(echoes(kafka_bootstrap, hook_topics["output"]).values()) >= 11, 90
        ), "the restarted worker did not replay from the held input"
        seen = echoes(kafka_bootstrap, hook_topics["output"])
        assert seen[ids[0]] == 1, "input 0 was committed and must not come again"
        assert all(seen[i] == 2 for i in ids[1:]), seen
        # Releasing the held input lifts the floor: the commit moves past everything.
        produce_events(kafka_bootstrap, hook_topics["input"], [meta(n=6, release="a")])
        assert wait_for(
            lambda: committed(kafka_bootstrap, hook_topics["group"], hook_topics["input"]) == 7,
            30,
        ), "the commit did not move on once nothing was held"
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(60)
    assert second.returncode == 0


def test_a_tick_runs_without_input_and_its_outputs_are_children_of_earlier_input(
    kafka_bootstrap: str, hook_topics: dict[str, str], running: tuple[Worker, Holder]
) -> None:
    worker, holder = running
    # No message at all yet: the timer still turns, and its first (failing) turn is survived.
    assert wait_for(lambda: holder.ticks >= 3, 30), "no timer turn without input"
    assert not holder.fail_next_tick and worker.healthy()
    (parent,) = produce_events(kafka_bootstrap, hook_topics["input"], [meta(hold="timed-1")])
    out = read_topic(kafka_bootstrap, hook_topics["output"], expect=2, settle_s=0.5)
    timed = [r for r in out if "timed_of" in metadata_of(r.value)]
    assert len(out) == 2 and len(timed) == 1, [r.value for r in out]
    assert metadata_of(timed[0].value)["timed_of"] == parent
    # A child of the held input with an id that a replay derives again.
    assert timed[0].headers["ce_id"].decode() == output_id(parent, SERVICE, TICK_INDEX_BASE)
    assert holder.held == {}
    # The tick lifted the floor: the commit moves past the held input without new input.
    assert wait_for(
        lambda: committed(kafka_bootstrap, hook_topics["group"], hook_topics["input"]) == 1, 30
    ), "the commit stayed at the input the tick released"


def test_earlier_inputs_are_dead_lettered_with_their_own_coordinates(
    kafka_bootstrap: str, hook_topics: dict[str, str], running: tuple[Worker, Holder]
) -> None:
    events = [meta(hold="a"), meta(n=1), meta(give_up="a"), meta(hold="expire-b")]
    ids = produce_events(kafka_bootstrap, hook_topics["input"], events)
    dead = read_topic(kafka_bootstrap, hook_topics["dlq"], expect=2, settle_s=0.5)
    by_class = {r.headers["dlq_error_class"].decode(): r for r in dead}
    assert sorted(by_class) == ["Expired", "GaveUp"], [r.headers for r in dead]
    # Given up on while input 2 was handled, dead-lettered as input 0; expired by a tick.
    for error_class, offset in (("GaveUp", 0), ("Expired", 3)):
        record = by_class[error_class]
        assert record.headers["dlq_original_topic"].decode() == hook_topics["input"]
        assert record.headers["dlq_original_partition"] == b"0"
        assert int(record.headers["dlq_original_offset"]) == offset
        assert record.headers["dlq_stage"] == b"handle"
        assert record.headers["dlq_service"] == SERVICE.encode()
        assert record.key == CALL.encode()
        body = json.loads(record.value or b"")
        assert body["original_offset"] == offset and body["call_id"] == CALL
        assert body["original_headers"]["ce_id"] == ids[offset]
        assert body["payload_b64"] is None
    # Nothing is held any more, so the commit reaches the end of the input.
    assert len(read_topic(kafka_bootstrap, hook_topics["output"], expect=4)) == 4
    produce_events(kafka_bootstrap, hook_topics["input"], [meta(n=4)])
    assert wait_for(
        lambda: committed(kafka_bootstrap, hook_topics["group"], hook_topics["input"]) == 5, 30
    )


def test_a_handler_whose_store_is_down_dead_letters_nothing_and_the_batch_runs_again(
    kafka_bootstrap: str, hook_topics: dict[str, str]
) -> None:
    from loopwise.metrics import BATCH_RETRIES

    before = BATCH_RETRIES.labels(SERVICE)._value.get()
    # produced first, so the failing input sits in a batch between good ones
    ids = produce_events(
        kafka_bootstrap,
        hook_topics["input"],
        [meta(n=0), meta(n=1, unavailable=3), meta(n=2), meta(n=3)],
    )
    worker, holder = build_worker(
        hook_settings(kafka_bootstrap, hook_topics, poll_timeout_s=0.1, retry_backoff_s=0.2)
    )
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        assert wait_for(
            lambda: committed(kafka_bootstrap, hook_topics["group"], hook_topics["input"]) == 4, 60
        )
    finally:
        worker.stop()
        thread.join(60)
    assert holder.unavailable[ids[1]] == 3
    assert BATCH_RETRIES.labels(SERVICE)._value.get() - before == 3
    # every input handled and sent once: a rewound batch sends none of its outputs
    assert echoes(kafka_bootstrap, hook_topics["output"]) == Counter(ids)
    assert read_all(kafka_bootstrap, hook_topics["dlq"], 5) == []


if __name__ == "__main__":
    main()


def test_a_result_superseded_within_a_batch_is_not_sent_and_the_last_one_always_is(
    kafka_bootstrap: str, hook_topics: dict[str, str]
) -> None:
    from loopwise.metrics import EVENTS_SUPERSEDED

    # Produced before the worker starts, so its batches hold several of them.
    events = [meta(n=0, latest="k"), meta(n=1), *(meta(n=i, latest="k") for i in range(2, 8))]
    ids = produce_events(kafka_bootstrap, hook_topics["input"], events)
    worker, _ = build_worker(hook_settings(kafka_bootstrap, hook_topics))
    dropped_before = EVENTS_SUPERSEDED.labels(SERVICE)._value.get()
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        assert wait_for(
            lambda: committed(kafka_bootstrap, hook_topics["group"], hook_topics["input"]) == 8,
            30,
        ), "the batch was not committed"
    finally:
        worker.stop()
        thread.join(60)
    dropped = EVENTS_SUPERSEDED.labels(SERVICE)._value.get() - dropped_before
    seen = echoes(kafka_bootstrap, hook_topics["output"])
    latest = [i for n, i in enumerate(ids) if n != 1]
    # The plain output and the last of the superseding ones always go out; each of the
    # others went out or was counted as superseded, never both, and they come in order.
    assert seen[ids[1]] == 1 and seen[ids[-1]] == 1, seen
    assert all(seen[i] <= 1 for i in latest), seen
    assert sum(seen[i] for i in latest) + dropped == len(latest), (seen, dropped)
    assert dropped > 0, "eight inputs fetched together made one batch, yet nothing was dropped"
    order = [
        metadata_of(r.value)["echo_of"] for r in read_all(kafka_bootstrap, hook_topics["output"])
    ]
    assert order == sorted(order, key=ids.index)
