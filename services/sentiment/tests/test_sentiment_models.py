"""Sentiment models: clear cases labelled right, doubtful ones get low confidence, loading."""

from __future__ import annotations

from pathlib import Path

import pytest

from loopwise.config_files import ConfigFileError
from loopwise_sentiment.models import ModelLoadError, SentimentModel, load_model
from loopwise_sentiment.models.calibrated import CalibratedVaderModel
from loopwise_sentiment.models.vader import VaderModel

CLEAR = {
    "Thank you so much, you have been wonderful and this is excellent!": "positive",
    "That is great news, I really appreciate your help.": "positive",
    "This is terrible, I am furious and very disappointed.": "negative",
    "Your service is awful and I hate waiting for useless answers.": "negative",
}
DOUBTFUL = {
    "sarcasm": "Oh great, another hour on hold.",
    "sarcasm_thanks": "Thanks a lot for nothing, I love being transferred again.",
    "negation": "It is not bad, I guess.",
    "short": "ok",
    "mixed": "I like the new plan but the fees are awful.",
}


@pytest.fixture(params=["vader", "vader-calibrated", "vader-ngram"])
def model(request: pytest.FixtureRequest) -> SentimentModel:
    return load_model(request.param)


def test_clear_cases_get_the_right_label_and_high_confidence(model: SentimentModel) -> None:
    for text, label in CLEAR.items():
        result = model.score(text)
        assert result.label == label, (text, result)
        assert result.confidence >= 0.85, (text, result)
        assert (result.score > 0) == (label == "positive")


@pytest.mark.parametrize("case", sorted(DOUBTFUL))
def test_doubtful_cases_get_lower_confidence_than_clear_ones(
    model: SentimentModel, case: str
) -> None:
    result = model.score(DOUBTFUL[case])
    least_clear = min(model.score(text).confidence for text in CLEAR)
    assert result.confidence < least_clear, (case, result)
    assert result.confidence <= 0.85, (case, result)


def test_sarcasm_is_never_confidently_positive(model: SentimentModel) -> None:
    for text in (DOUBTFUL["sarcasm"], DOUBTFUL["sarcasm_thanks"]):
        result = model.score(text)
        if result.label == "positive":
            assert result.confidence <= 0.4, result
            assert any(s.name in ("sarcasm_cue", "complaint_context") for s in result.signals)


def test_signals_name_the_reason_for_doubt() -> None:
    vader = VaderModel()
    names = {s.name for s in vader.score(DOUBTFUL["sarcasm"]).signals}
    assert "sarcasm_cue" in names
    assert "negation" in {s.name for s in vader.score(DOUBTFUL["negation"]).signals}
    assert "short_text" in {s.name for s in vader.score("ok").signals}
    assert "mixed_polarity" in {s.name for s in vader.score(DOUBTFUL["mixed"]).signals}


def test_low_asr_confidence_lowers_confidence(model: SentimentModel) -> None:
    text = "This is terrible, I am furious and very disappointed."
    sure = model.score(text, asr_confidence=0.95)
    unsure = model.score(text, asr_confidence=0.4)
    assert unsure.label == sure.label == "negative"
    assert unsure.confidence < 0.5 * sure.confidence
    assert "low_asr_confidence" in {s.name for s in unsure.signals}


def test_text_without_sentiment_is_neutral(model: SentimentModel) -> None:
    result = model.score("I am calling about the invoice from March.")
    assert result.label == "neutral"
    assert abs(result.score) < 0.3


def test_scores_are_deterministic_and_in_range(model: SentimentModel) -> None:
    for text in [*CLEAR, *DOUBTFUL.values(), "", "!!!", "a" * 5000]:
        first, second = model.score(text), model.score(text)
        assert first == second
        assert -1.0 <= first.score <= 1.0
        assert 0.0 <= first.confidence <= 1.0


def test_models_name_themselves_with_versions() -> None:
    vader, calibrated = load_model("vader"), load_model("vader-calibrated")
    assert vader.name == "vader" and vader.version.startswith("3.3.2+")
    assert calibrated.name == "vader-calibrated" and calibrated.version.endswith("+cal-v1")


def test_a_model_is_selected_by_dotted_path_too() -> None:
    model = load_model("loopwise_sentiment.models.vader:VaderModel", {"neutral_band": 0.6})
    assert isinstance(model, VaderModel)
    assert model.score("It was fine, good enough.").label == "neutral"  # wide band


def test_unknown_model_names_are_refused_with_the_known_ones() -> None:
    with pytest.raises(ModelLoadError, match="vader-calibrated"):
        load_model("no-such-model")
    with pytest.raises(ModelLoadError, match="cannot import"):
        load_model("no_such_package.mod:Model")
    with pytest.raises(ModelLoadError, match="no name, version and score"):
        load_model("builtins:dict")


def test_a_broken_calibration_file_names_file_and_line(tmp_path: Path) -> None:
    shipped = CalibratedVaderModel().calibration
    text = shipped.model_dump_json(indent=2).replace('"intercept"', '"intercept": "x",\n  "z"', 1)
    path = tmp_path / "cal.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigFileError) as err:
        CalibratedVaderModel(path)
    assert str(path) in str(err.value) and err.value.line is not None
    short = shipped.model_copy(update={"weights": shipped.weights[:-1]})
    path.write_text(short.model_dump_json(indent=2), encoding="utf-8")
    with pytest.raises(ConfigFileError, match="weights has"):
        CalibratedVaderModel(path)


def test_other_languages_get_low_confidence(model: SentimentModel) -> None:
    text = "This is terrible, I am furious and very disappointed."
    english = model.score(text, language="en-GB")
    german = model.score(text, language="de")
    assert english.confidence >= 0.85
    assert german.confidence <= 0.25 * english.confidence + 1e-3
    assert "unsupported_language" in {s.name for s in german.signals}


def test_redaction_tokens_carry_no_sentiment(model: SentimentModel) -> None:
    plain = model.score("my card is and I am really unhappy")
    redacted = model.score("my card is [CARD_NUMBER] and I am really unhappy")
    assert redacted == plain
