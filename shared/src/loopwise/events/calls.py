"""Call lifecycle, audio and external transcript events: what CX platforms produce."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from loopwise.events.base import CallEvent, ContractModel, PartyRole, Probability

AudioEncoding = Literal["pcm_s16le", "mulaw", "alaw"]
MetadataValue = str | int | float | bool


class AudioFormat(ContractModel):
    """How the audio of a call is encoded."""

    encoding: AudioEncoding = Field(
        description="Sample encoding: pcm_s16le, mulaw (G.711 u-law) or alaw"
    )
    sample_rate_hz: Literal[8000, 16000] = Field(description="Samples per second per channel")
    channels: Literal[1, 2] = Field(
        description="Channels in the stream; audio chunks carry one channel each"
    )


class ChannelSpec(ContractModel):
    """One audio channel of a call and the party who speaks on it."""

    index: int = Field(ge=0, le=1, description="Channel index, 0-based")
    role: PartyRole = Field(description="Party on this channel (mixed for a mono recording)")


class CallStartedV1(CallEvent):
    """A call began; names its queue, region, language and audio layout."""

    event_type = "io.loopwise.call.started.v1"

    queue: str = Field(min_length=1, max_length=200, description="Contact-center queue or skill")
    region: str = Field(min_length=1, max_length=64, description="Region or site handling the call")
    language_hint: str | None = Field(
        default=None,
        pattern=r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$",
        description="Expected language (BCP 47, e.g. en or en-US); absent means detect",
    )
    direction: Literal["inbound", "outbound"] = Field(
        default="inbound", description="Who placed the call"
    )
    agent_id: str | None = Field(
        default=None, max_length=128, description="Pseudonymous id of the handling agent"
    )
    audio: AudioFormat | None = Field(
        default=None,
        description="Format of the cx.audio chunks; absent when only transcripts are sent",
    )
    channels: list[ChannelSpec] = Field(
        min_length=1, max_length=2, description="Channels and the party role of each"
    )
    metadata: dict[str, MetadataValue] = Field(
        default_factory=dict, max_length=64, description="Free call metadata (no PII)"
    )

    @model_validator(mode="after")
    def _channels_match_audio(self) -> CallStartedV1:
        indexes = [c.index for c in self.channels]
        if len(set(indexes)) != len(indexes):
            raise ValueError("channel indexes must be unique")
        if self.audio is not None and len(self.channels) != self.audio.channels:
            raise ValueError(
                f"audio.channels is {self.audio.channels} "
                f"but {len(self.channels)} channels are listed"
            )
        return self


class CallEndedV1(CallEvent):
    """A call ended; per-call decisions are taken now."""

    event_type = "io.loopwise.call.ended.v1"

    reason: Literal["completed", "abandoned", "transferred", "dropped", "unknown"] = Field(
        default="completed", description="Why the call ended"
    )
    duration_s: float | None = Field(default=None, ge=0, description="Call length in seconds")
    last_audio_sequence: dict[str, int] | None = Field(
        default=None,
        description="Last audio chunk sequence number sent per channel index (as a string key)",
    )


class CallMetadataV1(CallEvent):
    """New or changed metadata of a running or finished call."""

    event_type = "io.loopwise.call.metadata.v1"

    metadata: dict[str, MetadataValue] = Field(
        max_length=64, description="Keys to set on the call's metadata (no PII)"
    )


class AudioChunkV1(CallEvent):
    """A slice of one channel's audio, in the format the call-started event gave."""

    event_type = "io.loopwise.audio.chunk.v1"

    channel: int = Field(ge=0, le=1, description="Channel index this audio belongs to")
    sequence: int = Field(ge=0, description="Chunk number within the channel, from 0, no gaps")
    start_ms: int | None = Field(
        default=None, ge=0, description="Offset of the first sample from the call start, ms"
    )
    audio: bytes = Field(
        max_length=1_048_576,
        description="Raw sample bytes; base64 in JSON (standard or URL-safe alphabet)",
    )


class ExternalWord(ContractModel):
    """A word with timing from the CX platform's own ASR."""

    word: str = Field(max_length=200, description="The word as recognised")
    start_s: float = Field(ge=0, description="Word start, seconds from call start")
    end_s: float = Field(ge=0, description="Word end, seconds from call start")
    probability: Probability | None = Field(default=None, description="Recogniser confidence")


class ExternalTranscriptSegmentV1(CallEvent):
    """A final segment from the CX platform's own speech recogniser (not yet redacted)."""

    event_type = "io.loopwise.transcript.external.v1"

    segment_id: str = Field(min_length=1, max_length=128, description="Platform segment id")
    speaker: PartyRole = Field(description="Who spoke")
    channel: int | None = Field(default=None, ge=0, le=1, description="Channel index, if known")
    start_s: float = Field(ge=0, description="Segment start, seconds from call start")
    end_s: float = Field(ge=0, description="Segment end, seconds from call start, >= start_s")
    text: str = Field(max_length=20_000, description="Transcript text, possibly containing PII")
    confidence: Probability | None = Field(default=None, description="Recogniser confidence")
    language: str | None = Field(default=None, max_length=16, description="Language code")
    words: list[ExternalWord] = Field(
        default_factory=list, max_length=5_000, description="Word timings, if the platform has them"
    )
    engine: str | None = Field(default=None, max_length=200, description="Platform ASR engine name")

    @field_validator("end_s")
    @classmethod
    def _end_not_before_start(cls, end_s: float, info: ValidationInfo) -> float:
        start_s = info.data.get("start_s")
        if start_s is not None and end_s < start_s:
            raise ValueError("end_s is before start_s")
        return end_s
