"""A tiny service on the shared worker runtime, for runtime tests: metadata in, metadata out.

Each input `CallMetadataV1` yields one output that names the input's event id;
`{"explode": true}` in the metadata makes the handler raise. Run it as a
process with `python -m tests.support.echo_worker` and `LOOPWISE_ECHO_*` settings.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from loopwise.events import CallMetadataV1
from loopwise.kafka import Emit, Incoming, Worker, WorkerSettings, serve
from loopwise.logging import configure_logging
from loopwise.settings import load_settings


class EchoSettings(WorkerSettings):
    """Settings of the echo worker."""

    model_config = SettingsConfigDict(env_prefix="LOOPWISE_ECHO_", env_nested_delimiter="__")

    output_topic: str = Field(description="Where echoes go")
    delay_s: float = Field(default=0.0, ge=0, description="Pretend work per event")


class Exploded(RuntimeError):
    """The test asked the handler to fail."""


def make_handler(settings: EchoSettings):  # type: ignore[no-untyped-def]
    """Build the echo handler."""

    def handle(incoming: Incoming) -> Iterator[Emit]:
        event = incoming.event
        assert isinstance(event, CallMetadataV1)
        if event.metadata.get("explode"):
            raise Exploded("asked to explode")
        if settings.delay_s:
            time.sleep(settings.delay_s)
        yield Emit(
            settings.output_topic,
            CallMetadataV1(
                tenant_id=event.tenant_id,
                call_id=event.call_id,
                occurred_at=event.occurred_at,
                metadata={**event.metadata, "echo_of": incoming.envelope.id},
            ),
        )

    return handle


def build_worker(settings: EchoSettings) -> Worker:
    """The echo worker for these settings."""
    return Worker(
        service="echo",
        settings=settings,
        handler=make_handler(settings),
        output_topics=[settings.output_topic],
        accepted={CallMetadataV1.event_type: CallMetadataV1},
    )


def main() -> None:
    """Run as a process."""
    settings = load_settings(EchoSettings)
    configure_logging("echo", log_format="json", level=os.environ.get("LOG_LEVEL", "INFO"))
    serve(build_worker(settings))


if __name__ == "__main__":
    main()


@contextlib.contextmanager
def running_in_thread(worker: Worker) -> Iterator[Worker]:
    """Run a worker's loop in a thread of this process; stop it and wait for it after."""
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        yield worker
    finally:
        worker.stop()
        thread.join(60)
    assert not thread.is_alive(), "worker did not stop after stop()"
