"""Kafka runtime: the confluent-kafka worker for stateless services, dead letters, admin."""

from loopwise.kafka.intake import (
    DeadLetterRequest,
    Emit,
    Incoming,
    Rejection,
    admit,
    encode_output,
)
from loopwise.kafka.worker import Handler, Worker, WorkerSettings, serve

__all__ = [
    "DeadLetterRequest",
    "Emit",
    "Handler",
    "Incoming",
    "Rejection",
    "Worker",
    "WorkerSettings",
    "admit",
    "encode_output",
    "serve",
]
