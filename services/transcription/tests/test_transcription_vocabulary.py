"""Tenant vocabularies reach the model: a domain phrase the bare model mishears comes out right."""

from __future__ import annotations

from pathlib import Path

import pytest

from loopwise.config_files import ConfigFileError
from loopwise_transcription.batch import transcribe_recording
from loopwise_transcription.config import Vocabulary
from loopwise_transcription.engine import Engine
from services.transcription.tests.transcription_helpers import normalise

CLIP = (
    "pocketsphinx_librivox_sense_and_sensibility_01_austen_64kb-0880.wav"  # "... ill disposed ..."
)


def test_tenant_terms_are_passed_to_the_model(
    engine: Engine, asr_data: Path, tmp_path: Path
) -> None:
    path = tmp_path / "vocabulary.yaml"
    path.write_text("default: []\nausten-books:\n  - ill disposed\n  - Dashwood\n")
    vocabulary = Vocabulary.load(path)
    assert vocabulary.for_tenant("austen-books") == ("ill disposed", "Dashwood")
    assert vocabulary.for_tenant("someone-else") == ()

    bare, _, _ = transcribe_recording(engine, asr_data / CLIP, tenant_id="someone-else")
    tuned, _, _ = transcribe_recording(
        engine,
        asr_data / CLIP,
        tenant_id="austen-books",
        vocabulary=vocabulary.for_tenant("austen-books"),
    )
    bare_text = normalise(" ".join(s.text for s in bare))
    tuned_text = normalise(" ".join(s.text for s in tuned))
    assert "ill disposed" not in bare_text  # the tiny model mishears it on its own
    assert "ill disposed" in tuned_text


def test_a_broken_vocabulary_file_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "vocabulary.yaml"
    path.write_text("acme:\n  - fine\n  - " + "x" * 150 + "\n")
    with pytest.raises(ConfigFileError) as info:
        Vocabulary.load(path)
    assert str(info.value).startswith(f"{path}:3:")
