"""The topic catalogue (`topics.yaml` beside this module) and its idempotent `apply`."""

from __future__ import annotations

import functools
import time
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from loopwise.config_files import load_model
from loopwise.events import EVENT_TYPES
from loopwise.events.audit import DeadLetterV1

CATALOGUE_RESOURCE = "topics.yaml"


class TopicDefaults(BaseModel):
    """Values a topic takes when it does not set its own."""

    model_config = ConfigDict(extra="forbid")

    partitions: int = Field(ge=1, le=1000, description="Partitions of every call topic")
    replication_factor: int = Field(ge=1, le=7, description="Replicas wanted in production")
    min_insync_replicas: int = Field(ge=1, le=7, description="min.insync.replicas wanted")


class TopicSpec(BaseModel):
    """One topic: name, layout, retention, key and the events it carries."""

    model_config = ConfigDict(extra="forbid")

    label: str = Field(pattern=r"^[a-z]+\.[a-z.-]+$", description="Short name used in code")
    name: str = Field(pattern=r"^loopwise\.[a-z0-9.-]+\.v[0-9]+$", description="Kafka topic name")
    description: str = Field(min_length=1, description="What flows here")
    partitions: int | None = Field(default=None, ge=1, le=1000, description="Override of default")
    replication_factor: int | None = Field(default=None, ge=1, le=7, description="Override")
    retention_ms: int = Field(ge=-1, description="retention.ms (-1 keeps forever)")
    cleanup_policy: Literal["delete", "compact", "compact,delete"] = Field(
        description="cleanup.policy"
    )
    key: Literal["call_id", "tenant_id", "original_key"] = Field(description="What the key holds")
    max_message_bytes: int | None = Field(default=None, ge=1024, description="max.message.bytes")
    events: list[str] = Field(min_length=1, description="CloudEvents types carried")

    @model_validator(mode="after")
    def _known_events(self) -> TopicSpec:
        known = {*EVENT_TYPES, DeadLetterV1.event_type}
        unknown = [e for e in self.events if e not in known]
        if unknown:
            raise ValueError(f"unknown event type(s): {', '.join(unknown)}")
        return self


class TopicCatalogue(BaseModel):
    """Every Loopwise topic."""

    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = Field(description="Catalogue format version")
    defaults: TopicDefaults = Field(description="Defaults for every topic")
    topics: list[TopicSpec] = Field(min_length=1, description="The topics")

    @model_validator(mode="after")
    def _unique(self) -> TopicCatalogue:
        for attr in ("label", "name"):
            values = [getattr(t, attr) for t in self.topics]
            dupes = {v for v in values if values.count(v) > 1}
            if dupes:
                raise ValueError(f"duplicate topic {attr}(s): {', '.join(sorted(dupes))}")
        return self

    def by_label(self, label: str) -> TopicSpec:
        """Return the topic with this short label."""
        for spec in self.topics:
            if spec.label == label:
                return spec
        raise KeyError(f"no topic labelled {label!r} in the catalogue")

    def partitions(self, spec: TopicSpec) -> int:
        """Partition count of a topic."""
        return spec.partitions or self.defaults.partitions

    def replication(self, spec: TopicSpec) -> int:
        """Replication factor wanted for a topic."""
        return spec.replication_factor or self.defaults.replication_factor

    def topic_config(self, spec: TopicSpec, replication: int) -> dict[str, str]:
        """Topic-level Kafka configs for a topic at a given replication factor."""
        config = {
            "retention.ms": str(spec.retention_ms),
            "cleanup.policy": spec.cleanup_policy,
            "min.insync.replicas": str(
                max(1, min(self.defaults.min_insync_replicas, replication - 1))
            ),
        }
        if spec.max_message_bytes:
            config["max.message.bytes"] = str(spec.max_message_bytes)
        return config


def load_catalogue(path: Path | str | None = None) -> TopicCatalogue:
    """Load a catalogue file, by default the one shipped with this library."""
    if path is None:
        ref = resources.files("loopwise").joinpath(CATALOGUE_RESOURCE)
        text = ref.read_text("utf-8")
        return load_model(f"loopwise/{CATALOGUE_RESOURCE}", TopicCatalogue, text)
    return load_model(path, TopicCatalogue)


@functools.cache
def catalogue() -> TopicCatalogue:
    """The shipped catalogue, loaded once."""
    return load_catalogue()


def topic(label: str) -> str:
    """Kafka name of the topic with this short label, e.g. `topic("cx.transcripts")`."""
    return catalogue().by_label(label).name


PRODUCER_MAX_MESSAGE_BYTES = 1_000_000
"""librdkafka's default `message.max.bytes`: a larger record is refused when produced."""


def message_limit(name: str) -> int | None:
    """The catalogue's `max.message.bytes` of a topic by its Kafka name; None where it sets
    none (the broker's default, 1 MiB) or does not know the topic."""
    for spec in catalogue().topics:
        if spec.name == name:
            return spec.max_message_bytes
    return None


def producer_message_max_bytes(topics: Iterable[str]) -> int:
    """`message.max.bytes` for a producer writing to these topics: the largest record any
    of them admits, so a record the topic takes is never refused by the producer first."""
    return max([PRODUCER_MAX_MESSAGE_BYTES, *(message_limit(t) or 0 for t in topics)])


def dead_letter_topic(service: str) -> str:
    """Kafka name of a service's dead-letter topic."""
    return topic(f"dlq.{service}")


@dataclass
class TopicAction:
    """What `apply` did or would do to one topic."""

    topic: str
    action: Literal["create", "add_partitions", "alter_config", "unchanged", "error", "warning"]
    detail: str


def apply_catalogue(
    admin: Any,
    cat: TopicCatalogue,
    *,
    dry_run: bool = False,
    strict_replication: bool = False,
    timeout_s: float = 30.0,
) -> list[TopicAction]:
    """Create missing topics and bring existing ones to the catalogue; safe to run again."""
    from confluent_kafka.admin import (
        AlterConfigOpType,
        ConfigEntry,
        ConfigResource,
        NewPartitions,
        NewTopic,
    )

    metadata = admin.list_topics(timeout=timeout_s)
    brokers = len(metadata.brokers)
    actions: list[TopicAction] = []
    to_create: list[Any] = []
    to_grow: list[Any] = []
    for spec in cat.topics:
        wanted_rf = cat.replication(spec)
        rf = min(wanted_rf, brokers)
        if rf < wanted_rf:
            if strict_replication:
                actions.append(
                    TopicAction(
                        spec.name,
                        "error",
                        f"needs {wanted_rf} replicas, cluster has {brokers} brokers",
                    )
                )
                continue
            actions.append(
                TopicAction(
                    spec.name,
                    "warning",
                    f"replication {wanted_rf} capped to {rf} ({brokers} broker(s))",
                )
            )
        config = cat.topic_config(spec, rf)
        partitions = cat.partitions(spec)
        existing = metadata.topics.get(spec.name)
        if existing is None or existing.error is not None:
            to_create.append(
                NewTopic(spec.name, num_partitions=partitions, replication_factor=rf, config=config)
            )
            actions.append(
                TopicAction(spec.name, "create", f"{partitions} partitions, rf {rf}, {config}")
            )
            continue
        have = len(existing.partitions)
        if have < partitions:
            to_grow.append(NewPartitions(spec.name, partitions))
            actions.append(TopicAction(spec.name, "add_partitions", f"{have} -> {partitions}"))
        elif have > partitions:
            actions.append(
                TopicAction(
                    spec.name,
                    "error",
                    f"has {have} partitions, catalogue says {partitions}; Kafka cannot shrink one",
                )
            )
        drift = _config_drift(admin, spec.name, config, timeout_s)
        if drift:
            if not dry_run:
                resource = ConfigResource(
                    ConfigResource.Type.TOPIC,
                    spec.name,
                    incremental_configs=[
                        ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET)
                        for k, v in drift.items()
                    ],
                )
                for future in admin.incremental_alter_configs([resource]).values():
                    future.result(timeout=timeout_s)
            actions.append(
                TopicAction(
                    spec.name, "alter_config", ", ".join(f"{k}={v}" for k, v in drift.items())
                )
            )
        elif have >= partitions:
            actions.append(TopicAction(spec.name, "unchanged", f"{have} partitions"))
    if not dry_run:
        _wait_all(
            admin.create_topics(to_create, operation_timeout=timeout_s) if to_create else {},
            actions,
            timeout_s,
        )
        _wait_all(
            admin.create_partitions(to_grow, operation_timeout=timeout_s) if to_grow else {},
            actions,
            timeout_s,
        )
    return actions


def _config_drift(
    admin: Any, name: str, wanted: dict[str, str], timeout_s: float
) -> dict[str, str]:
    from confluent_kafka.admin import ConfigResource

    resource = ConfigResource(ConfigResource.Type.TOPIC, name)
    entries = admin.describe_configs([resource])[resource].result(timeout=timeout_s)
    return {k: v for k, v in wanted.items() if k not in entries or entries[k].value != v}


def _wait_all(futures: dict[str, Any], actions: list[TopicAction], timeout_s: float) -> None:
    from confluent_kafka import KafkaError, KafkaException

    for name, future in futures.items():
        try:
            future.result(timeout=timeout_s)
        except KafkaException as exc:
            err = exc.args[0]
            if isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                continue  # created concurrently by another apply: the goal is met
            actions.append(TopicAction(name, "error", str(err)))


def wait_for_leaders(admin: Any, names: Iterable[str], timeout_s: float = 90.0) -> None:
    """Block until every named topic exists and each of its partitions has a leader."""
    wanted = sorted(set(names))
    deadline = time.monotonic() + timeout_s
    while True:
        meta = admin.list_topics(timeout=30).topics
        waiting = [
            name
            for name in wanted
            if name not in meta
            or meta[name].error is not None
            or not meta[name].partitions
            or any(part.leader < 0 for part in meta[name].partitions.values())
        ]
        if not waiting:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"topics without a leader after {timeout_s:.0f} s: {waiting}")
        time.sleep(0.5)
