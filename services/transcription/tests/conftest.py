"""Fixtures of the transcription tests: the real model, loaded once per session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from loopwise_transcription.config import AsrSettings
from loopwise_transcription.engine import Engine
from services.transcription.tests.transcription_helpers import ASR_DATA, CLIPS


@pytest.fixture(scope="session")
def asr_data() -> Path:
    """The shared ASR clips; the tests skip where they are absent."""
    if not (ASR_DATA / "manifest.jsonl").is_file():
        pytest.skip(f"ASR dev data not found at {ASR_DATA} (expected ../shared/data/asr)")
    return CLIPS


@pytest.fixture(scope="session")
def asr_settings() -> AsrSettings:
    """Default recogniser settings (the bundled Whisper-tiny, int8, 2 threads)."""
    return AsrSettings(_env_file=None)  # type: ignore[call-arg]


@pytest.fixture(scope="session")
def engine(asr_settings: AsrSettings) -> Iterator[Engine]:
    """The real model, loaded once for the whole session."""
    yield Engine(asr_settings)
