"""Quality helpers against hand-computed values: kappa, WER, quantiles, settings."""

from __future__ import annotations

from fractions import Fraction

import pytest
from pydantic import ValidationError

from loopwise_feedback.config import FeedbackSettings
from loopwise_feedback.quality import WordErrors, cohen_kappa, quantile, word_errors


def test_kappa_on_a_hand_checked_table() -> None:
    # 10 items; rater A: yes yes yes yes yes yes no no no no; B agrees on 4 yes and 3 no.
    a = ["yes"] * 6 + ["no"] * 4
    b = ["yes"] * 4 + ["no"] * 2 + ["no"] * 3 + ["yes"]
    p_o = Fraction(7, 10)
    p_e = Fraction(6, 10) * Fraction(5, 10) + Fraction(4, 10) * Fraction(5, 10)  # = 1/2
    assert cohen_kappa(a, b) == pytest.approx(float((p_o - p_e) / (1 - p_e)))  # 0.4


def test_kappa_edges() -> None:
    assert cohen_kappa(["a", "b", "a"], ["a", "b", "a"]) == pytest.approx(1.0)
    assert cohen_kappa(["a", "a"], ["a", "a"]) is None  # chance agreement is total
    assert cohen_kappa([], []) is None
    # Systematic disagreement is worse than chance.
    assert cohen_kappa(["a", "b"], ["b", "a"]) == pytest.approx(-1.0)


def test_word_errors_normalise_case_and_punctuation() -> None:
    assert word_errors(["Hello, World!"], ["hello world"]).errors == 0
    we = word_errors(["my card was blocked today"], ["my card is blocked"])
    assert (we.errors, we.reference_words) == (2, 5)
    assert we.wer == pytest.approx(0.4)


def test_word_errors_with_empty_sides() -> None:
    # The reviewer heard no speech: every machine word is an insertion, no reference words.
    assert word_errors(["", "a b"], ["noise words", "a b"]) == WordErrors(2, 2)
    we = word_errors(["two words"], [""])
    assert (we.errors, we.reference_words) == (2, 2)
    assert word_errors([], []).wer is None


def test_quantile_interpolates_like_numpy() -> None:
    assert quantile([4.0, 1.0, 3.0, 2.0], 0.5) == pytest.approx(2.5)
    assert quantile([10.0], 0.9) == 10.0
    assert quantile([], 0.5) is None


def test_audio_template_placeholders_are_checked() -> None:
    with pytest.raises(ValidationError, match="unknown placeholder"):
        FeedbackSettings(
            kafka={"bootstrap_servers": "x:1"},  # type: ignore[arg-type]
            audio_path_template="{tenant_id}/{customer_name}.wav",
        )
