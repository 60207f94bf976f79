"""VADER with a rule-based confidence: the baseline model (no fitting, no data needed).

The score is VADER's compound in [-1, 1] and the label uses VADER's usual
+-0.05 band. Confidence starts from the strength of the compound and is cut by
every known way VADER goes wrong (see `features`); each cut is reported as a
signal with its (negative) weight so a reviewer sees why an answer was doubted.
"""

from __future__ import annotations

from importlib.metadata import version as package_version

from loopwise_sentiment.models import SentimentResult, Signal, asr_factor, label_of, language_factor
from loopwise_sentiment.models.features import TextFeatures, text_features

RULES_VERSION = "r1"


def risk_signals(f: TextFeatures, score: float) -> list[Signal]:
    """Multiplicative confidence penalties (as factor - 1) for the known failure modes."""
    cuts: list[Signal] = []
    if f.mixed > 0:
        cuts.append(Signal("mixed_polarity", -0.6 * f.mixed))
    if f.negations:
        cuts.append(Signal("negation", -0.25))
    if f.contrasts:
        cuts.append(Signal("contrast", -0.15))
    if score > 0 and f.sarcasm_cues:
        cuts.append(Signal("sarcasm_cue", -0.6))
    elif score > 0 and f.complaint_cues:
        cuts.append(Signal("complaint_context", -0.15 * min(f.complaint_cues, 3)))
    if f.words <= 3:
        cuts.append(Signal("short_text", -0.35))
    if not f.polar_words:
        cuts.append(Signal("no_sentiment_words", -0.4))
    return cuts


def apply_cuts(confidence: float, cuts: list[Signal]) -> float:
    """Apply penalties as factors (1 + weight), keeping the result in [0, 1]."""
    for cut in cuts:
        confidence *= max(0.0, 1.0 + cut.weight)
    return max(0.0, min(1.0, confidence))


class VaderModel:
    """VADER compound as score, rule-based confidence."""

    name = "vader"

    def __init__(self, neutral_band: float = 0.05) -> None:
        self.neutral_band = neutral_band
        self.version = f"{package_version('vadersentiment')}+{RULES_VERSION}"

    def score(
        self, text: str, *, asr_confidence: float | None = None, language: str | None = None
    ) -> SentimentResult:
        """Score one text with VADER and doubt it where VADER is known to fail."""
        f = text_features(text)
        score = f.compound
        strength = min(1.0, abs(score) / 0.6)
        cuts = risk_signals(f, score)
        asr = asr_factor(asr_confidence)
        if asr < 1.0:
            cuts.append(Signal("low_asr_confidence", asr - 1.0))
        lang = language_factor(language)
        if lang < 1.0:
            cuts.append(Signal("unsupported_language", lang - 1.0))
        confidence = apply_cuts(0.5 + 0.5 * strength, cuts)
        signals = (Signal("vader_compound", round(score, 4)), *cuts)
        return SentimentResult(
            label=label_of(score, self.neutral_band),
            score=max(-1.0, min(1.0, score)),
            confidence=round(confidence, 4),
            signals=tuple(Signal(s.name, round(s.weight, 4)) for s in signals),
        )
