"""Text features behind scores and confidence: VADER's valences plus cues VADER is blind to.

VADER reads words one by one. It is most often wrong where the words and the
meaning part: mixed polarity, a negation it does not scope, positive words
said in a complaint ("oh great, another hour on hold"), very short answers,
and complaints with no sentiment word at all ("I want a refund"). Each of
those is measured here so a model can lower its confidence (or change its
mind) and say why in its signals.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from vaderSentiment.vaderSentiment import (  # type: ignore[import-untyped]
    NEGATE,
    SentimentIntensityAnalyzer,
)

_REDACTION_TOKEN = re.compile(r"\[[A-Z][A-Z0-9_]*\]")
_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")
_NEGATIONS = frozenset(NEGATE) | {"no", "nothing", "nobody", "none", "nowhere", "without"}
_CONTRASTS = frozenset({"but", "however", "although", "though", "yet", "except", "unfortunately"})
_SARCASM = re.compile(
    r"\b(?:oh|just|yeah|wow|gee|well)\W{0,3}(?:great|wonderful|fantastic|perfect|brilliant|"
    r"lovely|nice|terrific|awesome|super|thanks)\b"
    r"|\bthanks? (?:a lot|for nothing|so much for)\b"
    r"|\byeah,? right\b|\bas if\b|\bwhat a (?:joke|surprise)\b"
    r"|\b(?:love|loving|enjoy|enjoying) (?:being|waiting|sitting|it when)\b"
    r"|\b(?:great|wonderful|fantastic|perfect|brilliant|lovely|awesome|nice)\b[^.?!]{0,40}"
    r"\b(?:another|again|still|hold|waiting|wait)\b"
)
# Words of a complaint: what a call is about when positive words are likely sarcasm.
_COMPLAINT = re.compile(
    r"\b(?:on hold|hold|waiting|waited|wait|again|still|another|hours?|cancel\w*|refund\w*|"
    r"broken|broke|charged|overcharged|complain\w*|supervisor|manager|transferr?ed|"
    r"disconnected|useless|ridiculous|waste\w*|return\w*|never arrived|nobody|no one|"
    r"third time|second time|escalate\w*|stopped working|doesn't work|didn't work|not working)\b"
)


@lru_cache(maxsize=1)
def analyzer() -> Any:
    """The VADER analyzer (its lexicon ships with the package); built once."""
    return SentimentIntensityAnalyzer()


@dataclass(frozen=True)
class TextFeatures:
    """What a text looks like to the models."""

    compound: float
    pos: float
    neg: float
    neu: float
    words: int
    positive_words: int
    negative_words: int
    negations: int
    contrasts: int
    sarcasm_cues: int
    complaint_cues: int
    question: bool
    exclamation: bool

    @property
    def polar_words(self) -> int:
        """Lexicon words with a valence."""
        return self.positive_words + self.negative_words

    @property
    def mixed(self) -> float:
        """How balanced positive and negative evidence are: 0 one-sided, 1 even."""
        high = max(self.pos, self.neg)
        return min(self.pos, self.neg) / high if high > 0 else 0.0

    @property
    def evidence(self) -> bool:
        """True when anything in the text bears sentiment."""
        return bool(self.polar_words or self.sarcasm_cues or self.complaint_cues)


def text_features(text: str) -> TextFeatures:
    """Measure one text (redaction tokens such as [CARD_NUMBER] carry no sentiment)."""
    text = _REDACTION_TOKEN.sub(" ", text)
    scores = analyzer().polarity_scores(text)
    lowered = text.lower()
    words = _WORD.findall(lowered)
    lexicon = analyzer().lexicon
    positive = sum(1 for w in words if lexicon.get(w, 0.0) > 0)
    negative = sum(1 for w in words if lexicon.get(w, 0.0) < 0)
    negations = sum(1 for w in words if w in _NEGATIONS or w.endswith("n't"))
    return TextFeatures(
        compound=float(scores["compound"]),
        pos=float(scores["pos"]),
        neg=float(scores["neg"]),
        neu=float(scores["neu"]),
        words=len(words),
        positive_words=positive,
        negative_words=negative,
        negations=negations,
        contrasts=sum(1 for w in words if w in _CONTRASTS),
        sarcasm_cues=len(_SARCASM.findall(lowered)),
        complaint_cues=len(_COMPLAINT.findall(lowered)),
        question="?" in text,
        exclamation="!" in text,
    )


FEATURE_NAMES: tuple[str, ...] = (
    "compound",
    "pos",
    "neg",
    "no_evidence",
    "log_words",
    "short_text",
    "positive_words",
    "negative_words",
    "mixed",
    "negated",
    "negated_x_compound",
    "contrast",
    "contrast_x_compound",
    "sarcasm_cue",
    "complaint_cues",
    "complaint_x_positive",
    "exclamation",
)
"""Inputs of the calibrated model, in order; a calibration file names them to match.

A question mark is measured but not an input: in reviews questions are rhetorical
complaints, in calls they are mostly neutral requests ("may I have your name?").
"""


def feature_vector(f: TextFeatures) -> list[float]:
    """The calibrated model's inputs for one text (order of FEATURE_NAMES)."""
    negated = 1.0 if f.negations else 0.0
    contrast = 1.0 if f.contrasts else 0.0
    complaint = min(f.complaint_cues, 3) / 3.0
    return [
        f.compound,
        f.pos,
        f.neg,
        0.0 if f.polar_words else 1.0,
        math.log1p(f.words),
        1.0 if f.words <= 3 else 0.0,
        min(f.positive_words, 5) / 5.0,
        min(f.negative_words, 5) / 5.0,
        f.mixed,
        negated,
        negated * f.compound,
        contrast,
        contrast * f.compound,
        1.0 if f.sarcasm_cues else 0.0,
        complaint,
        complaint * max(f.compound, 0.0),
        1.0 if f.exclamation else 0.0,
    ]
