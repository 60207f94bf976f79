"""A small stateful Faust app on the shared factory, for runtime tests.

It counts distinct `CallMetadataV1` events per call (deduplicated by event id, as
every Loopwise consumer is) in a table backed by a changelog topic, and emits for
each input a `CallMetadataV1` carrying the running count. After a restart the
table is rebuilt from its changelog, so counts continue instead of starting over. Run with
`python -m tests.support.faust_counter worker` and `LOOPWISE_COUNTER_*` settings.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from loopwise.events import CallMetadataV1
from loopwise.kafka import Emit, Incoming
from loopwise.settings import load_settings
from loopwise.streaming import StreamRuntime, StreamSettings, create_app, ensure_internal_topics


class CounterSettings(StreamSettings):
    """Settings of the counter app."""

    model_config = SettingsConfigDict(env_prefix="LOOPWISE_COUNTER_", env_nested_delimiter="__")

    input_topic: str = Field(description="Where CallMetadataV1 events arrive")
    output_topic: str = Field(description="Where running counts go")


settings = load_settings(CounterSettings)
app = create_app("counter", settings)
runtime = StreamRuntime(
    app,
    service="counter",
    settings=settings,
    input_topics=[settings.input_topic],
    output_topics=[settings.output_topic],
    accepted={CallMetadataV1.event_type: CallMetadataV1},
)
seen = app.Table("seen-per-call", default=list, partitions=settings.topic_partitions)


async def count(incoming: Incoming) -> Iterable[Emit]:
    """Record the event id under its call and report how many distinct events the call has."""
    event = incoming.event
    assert isinstance(event, CallMetadataV1)
    ids = seen[event.call_id]
    if incoming.envelope.id not in ids:
        seen[event.call_id] = [*ids, incoming.envelope.id]
    return [
        Emit(
            settings.output_topic,
            CallMetadataV1(
                tenant_id=event.tenant_id,
                call_id=event.call_id,
                occurred_at=event.occurred_at,
                metadata={"count": len(seen[event.call_id]), "of": incoming.envelope.id},
            ),
        )
    ]


@app.agent(runtime.raw_topic(settings.input_topic))
async def counter(stream):  # type: ignore[no-untyped-def]
    """Count every event of the input topic."""
    async for event in stream.events():
        await runtime.process(event, count)


if __name__ == "__main__":
    ensure_internal_topics(app, settings)
    sys.argv = [sys.argv[0], *(sys.argv[1:] or ["worker"]), "--loglevel", "warn"]
    app.main()
