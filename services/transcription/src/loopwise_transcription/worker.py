"""Wiring: the shared confluent-kafka worker around the transcription handler.

Two additions to the shared worker, both because the handler keeps audio in memory:

* offsets are stored no further than the oldest input the in-memory state still
  needs (an open call's start event, chunks of an utterance not yet published,
  chunks held for a call not yet started), so a restart or a rebalance replays
  them and no audio is lost;
* a timer turn between polls dead-letters chunks held too long for a call that
  never started and closes calls idle for too long.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, Message, Producer, TopicPartition

from loopwise.events import (
    AudioChunkV1,
    CallEndedV1,
    CallMetadataV1,
    CallStartedV1,
    ExternalTranscriptSegmentV1,
)
from loopwise.kafka.deadletter import dead_letter_record
from loopwise.kafka.intake import OutRecord, Rejection
from loopwise.kafka.worker import Worker, _Batch
from loopwise.logging import get_logger
from loopwise_transcription.handler import DeadLetterRequest, TranscriptionHandler

log = get_logger(__name__)

SERVICE = "transcription"
ACCEPTED = {
    m.event_type: m
    for m in (CallStartedV1, CallEndedV1, CallMetadataV1, AudioChunkV1, ExternalTranscriptSegmentV1)
}


def keep_no_payload(value: bytes) -> bytes | None:
    """Dead letters of this service never carry the input: audio and external text hold PII."""
    return None


class _FlooredConsumer:
    """A consumer whose stored offsets never pass what the handler's state still needs."""

    def __init__(self, consumer: Any, floors: Callable[[], dict[tuple[str, int], int]]) -> None:
        self._consumer = consumer
        self._floors = floors

    def store_offsets(self, offsets: list[TopicPartition]) -> None:
        floors = self._floors()
        held = [
            TopicPartition(
                tp.topic,
                tp.partition,
                min(tp.offset, floors.get((tp.topic, tp.partition), tp.offset)),
            )
            for tp in offsets
        ]
        self._consumer.store_offsets(offsets=held)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._consumer, name)


class TranscriptionWorker(Worker):
    """The shared worker with offsets held for in-memory state and a timer turn."""

    def __init__(self, *, handler: TranscriptionHandler, **kwargs: Any) -> None:
        super().__init__(
            service=SERVICE,
            handler=handler,
            accepted=ACCEPTED,
            dead_letter_payload=keep_no_payload,
            **kwargs,
        )
        self.transcriber = handler
        self.tick_interval_s = 0.5
        self._last_tick = 0.0

    def run(self) -> None:
        """Consume until stop(); like Worker.run, with held offsets and a timer turn."""
        self._consumer = _FlooredConsumer(
            Consumer(self._consumer_config()), self.transcriber.offset_floors
        )
        self._producer = Producer(self._producer_config())
        self._consumer.subscribe(
            list(self.settings.input_topics), on_assign=self._on_assign, on_revoke=self._on_revoke
        )
        log.info(
            "worker_started",
            inputs=list(self.settings.input_topics),
            group_id=self.settings.group_id,
        )
        try:
            while not self._stop.is_set():
                self._last_turn = time.monotonic()
                messages = self._consumer.consume(
                    num_messages=self.settings.batch_size, timeout=self.settings.poll_timeout_s
                )
                if messages:
                    self._process_batch(messages)
                if time.monotonic() - self._last_tick >= self.tick_interval_s:
                    self._tick()
        finally:
            self._shutdown()

    def _process_message(self, msg: Message) -> list[OutRecord]:
        return super()._process_message(msg) + self._dead_letters()

    def _dead_letters(self) -> list[OutRecord]:
        return [self._dead_letter(r) for r in self.transcriber.take_dead_letters()]

    def _dead_letter(self, request: DeadLetterRequest) -> OutRecord:
        incoming = request.incoming
        return dead_letter_record(
            service=self.service,
            dead_letter_topic=self.settings.dead_letter_topic,
            rejection=Rejection("handle", request.error_class, request.reason),
            topic=incoming.topic,
            partition=incoming.partition,
            offset=incoming.offset,
            key=(incoming.envelope.call_id or "").encode() or None,
            value=None,
            headers=incoming.envelope.to_headers(),
            payload_filter=keep_no_payload,
        )

    def _tick(self) -> None:
        self._last_tick = time.monotonic()
        try:
            timed = self.transcriber.tick()
        except Exception:  # a timer turn must not stop the service; the loop goes on
            log.exception("timer_turn_failed")
            timed = []
        outs = [
            self._encode(emit, parent.envelope, 1_000 + i) for i, (parent, emit) in enumerate(timed)
        ] + self._dead_letters()
        if not outs:
            return
        batch = _Batch()
        for out in outs:
            self._produce(out, batch)
        self._await_deliveries(batch)
        if batch.failures:
            log.error("timer_outputs_failed", failures=batch.failures[:5])

    def _on_revoke(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        super()._on_revoke(consumer, partitions)
        # The next owner replays from the held offsets, so this instance forgets those calls.
        self.transcriber.drop_partitions({(p.topic, p.partition) for p in partitions})
