"""VADER corrected by a fitted logistic model, with caps for risks the fitting data lacks.

Score and label come from P(positive | VADER's valences and the cue features),
fitted on held-out labelled text (see the calibration file's `fitted_on`).
Confidence is the probability that the binary direction is right, max(p, 1-p),
then capped where call-centre speech is known to fool a lexicon but review
data cannot teach it: sarcasm cues, positive words in a complaint, negation,
very short turns, strongly mixed polarity; and scaled by the transcript's
confidence. The caps were chosen so they do not reorder the measured
least-confident 20% on the fitting split (docs/bench/sentiment.md).
"""

from __future__ import annotations

from importlib.metadata import version as package_version
from pathlib import Path

from loopwise_sentiment.models import Label, SentimentResult, Signal, asr_factor, language_factor
from loopwise_sentiment.models.calibration import Calibration, load_calibration
from loopwise_sentiment.models.features import TextFeatures, feature_vector, text_features

CAPS = {
    "sarcasm_cue": 0.35,
    "complaint_context": 0.65,
    "short_text": 0.7,
    "mixed_polarity": 0.75,
    "negation": 0.85,
}
NO_EVIDENCE_SHRINK = 0.25


def caps_for(f: TextFeatures, score: float) -> list[tuple[str, float]]:
    """The confidence caps that apply to a text and the direction it was given."""
    caps: list[tuple[str, float]] = []
    if score > 0 and f.sarcasm_cues:
        caps.append(("sarcasm_cue", CAPS["sarcasm_cue"]))
    elif score > 0 and f.complaint_cues:
        caps.append(("complaint_context", CAPS["complaint_context"]))
    if f.words <= 3:
        caps.append(("short_text", CAPS["short_text"]))
    if f.mixed >= 0.5 or (f.mixed > 0 and f.contrasts):
        caps.append(("mixed_polarity", CAPS["mixed_polarity"]))
    if f.negations:
        caps.append(("negation", CAPS["negation"]))
    return caps


class CalibratedVaderModel:
    """VADER plus cue features through a fitted logistic model."""

    name = "vader-calibrated"

    def __init__(self, calibration: str | Path | Calibration | None = None) -> None:
        self.calibration = (
            calibration if isinstance(calibration, Calibration) else load_calibration(calibration)
        )
        self.version = f"{package_version('vadersentiment')}+{self.calibration.version}"

    def score(
        self, text: str, *, asr_confidence: float | None = None, language: str | None = None
    ) -> SentimentResult:
        """Score one text; doubt it where the calibration data cannot vouch for it."""
        f = text_features(text)
        p = self.calibration.probability(feature_vector(f))
        score = 2.0 * p - 1.0
        label: Label
        if f.evidence:
            label = "positive" if p >= 0.5 else "negative"
        else:
            # Nothing in the text bears sentiment: say neutral and keep only a lean.
            label, score = "neutral", score * NO_EVIDENCE_SHRINK
        confidence = max(p, 1.0 - p)
        signals = [Signal("p_positive", round(p, 4)), Signal("vader_compound", f.compound)]
        for name, cap in caps_for(f, score):
            if confidence > cap:
                signals.append(Signal(name, round(cap - confidence, 4)))
                confidence = cap
            else:
                signals.append(Signal(name, 0.0))
        if not f.evidence:
            signals.append(Signal("no_sentiment_words", 0.0))
        asr = asr_factor(asr_confidence)
        if asr < 1.0:
            signals.append(Signal("low_asr_confidence", round(confidence * (asr - 1.0), 4)))
            confidence *= asr
        lang = language_factor(language)
        if lang < 1.0:
            signals.append(Signal("unsupported_language", round(confidence * (lang - 1.0), 4)))
            confidence *= lang
        return SentimentResult(
            label=label,
            score=round(max(-1.0, min(1.0, score)), 4),
            confidence=round(max(0.0, min(1.0, confidence)), 4),
            signals=tuple(signals),
        )
