"""Wiring: the shared confluent-kafka worker around the transcription handler.

The handler keeps audio in memory, so it uses the shared worker's hooks for stateful
handlers:

* ``offset_floors``: offsets are stored no further than the oldest input the in-memory
  state still needs (an open call's start event, chunks of an utterance not yet
  published, chunks held for a call not yet started), so a restart or a rebalance
  replays them and no audio is lost;
* ``tick``: a timer turn between polls closes calls idle for too long (or past their
  end grace) and expires chunks held too long for a call that never started;
* ``dead_letters``: such chunks, and held chunks refused once their call starts, are
  dead-lettered with their own coordinates;
* ``on_revoke``: calls of partitions this instance no longer owns are forgotten (the
  next owner replays them from the held offsets).
"""

from __future__ import annotations

from typing import Any

from loopwise.events import (
    AudioChunkV1,
    CallEndedV1,
    CallMetadataV1,
    CallStartedV1,
    ExternalTranscriptSegmentV1,
)
from loopwise.kafka.worker import Worker
from loopwise_transcription.handler import TranscriptionHandler

SERVICE = "transcription"
ACCEPTED = {
    m.event_type: m
    for m in (CallStartedV1, CallEndedV1, CallMetadataV1, AudioChunkV1, ExternalTranscriptSegmentV1)
}
TICK_INTERVAL_S = 0.5


def keep_no_payload(value: bytes) -> bytes | None:
    """Dead letters of this service never carry the input: audio and external text hold PII."""
    return None


class TranscriptionWorker(Worker):
    """The shared worker with the transcription handler's state hooks wired in."""

    def __init__(self, *, handler: TranscriptionHandler, **kwargs: Any) -> None:
        super().__init__(
            service=SERVICE,
            handler=handler,
            accepted=ACCEPTED,
            dead_letter_payload=keep_no_payload,
            offset_floors=handler.offset_floors,
            tick=handler.tick,
            tick_interval_s=TICK_INTERVAL_S,
            dead_letters=handler.take_dead_letters,
            on_revoke=handler.drop_partitions,
            **kwargs,
        )
        self.transcriber = handler
