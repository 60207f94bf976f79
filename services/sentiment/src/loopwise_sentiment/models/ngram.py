"""VADER's features plus negation-scoped word n-grams through one logistic model (`vader-ngram`).

VADER knows general English sentiment words but reads them one by one; the
calibrated model corrects its valences with a few cues. This model adds what a
lexicon cannot know: which words and word pairs carry sentiment in the
labelled data, with negation scope marked the classic way (Das & Chen 2001,
Pang et al. 2002): every word after "not", "no", "never", "n't" ... up to the
next punctuation or contrast word is read as its own negated token, so
"not good" and "good" are different evidence and "no problem at all" can be
learnt as positive. The weights are small (a JSON file of a few thousand
numbers, `ngram_v1.json`, fitted with scikit-learn; `fitted_on` says on what),
scoring needs no library beyond VADER.

Confidence is the fitted probability of the direction, max(p, 1 - p), capped
for the call-centre risks the fitting data cannot teach (sarcasm cues,
positive words in a complaint, very short turns, mixed polarity, negation; the
same caps as `vader-calibrated`), and scaled by transcript confidence and
language support.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Sequence
from importlib.metadata import version as package_version
from importlib.resources import files
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from loopwise.config_files import load_model
from loopwise_sentiment.models import Label, SentimentResult, Signal, asr_factor, language_factor
from loopwise_sentiment.models.calibrated import NO_EVIDENCE_SHRINK, caps_for
from loopwise_sentiment.models.features import (
    _NEGATIONS,
    _REDACTION_TOKEN,
    FEATURE_NAMES,
    feature_vector,
    text_features,
)

DEFAULT_WEIGHTS = "ngram_v1.json"
NEGATED_PREFIX = "not_"
EVIDENCE_WEIGHT = 0.5
"""A text with no lexicon word still counts as having evidence when its n-grams add up to this."""

_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|[.,!?;:]")
_SCOPE_END = frozenset(".,!?;:") | {"but", "however", "although", "though", "yet", "except"}


def tokens(text: str) -> list[str]:
    """Lower-cased words with negation scope marked (`not_word`), punctuation dropped after use."""
    text = _REDACTION_TOKEN.sub(" ", text).lower().replace("\u2019", "'")
    out: list[str] = []
    negated = False
    for token in _TOKEN.findall(text):
        if token in _SCOPE_END:
            negated = False
            if token in ("!", "?"):
                out.append(token)
            continue
        if token in _NEGATIONS or token.endswith("n't"):
            out.append(token)
            negated = True
            continue
        out.append(NEGATED_PREFIX + token if negated else token)
    return out


def ngrams(text: str) -> list[str]:
    """The distinct unigrams and bigrams of a text (bigrams joined by a space)."""
    words = tokens(text)
    grams = set(words)
    grams.update(f"{a} {b}" for a, b in itertools.pairwise(words))
    return sorted(grams)


class NgramWeights(BaseModel):
    """Coefficients of the logistic model and where they came from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str = Field(min_length=1, description="Weights version, part of the model version")
    features: list[str] = Field(description="Dense feature names (features.FEATURE_NAMES)")
    mean: list[float] = Field(description="Dense feature means used to standardise inputs")
    scale: list[float] = Field(description="Dense feature standard deviations (all > 0)")
    dense_weights: list[float] = Field(description="Weights of the standardised dense features")
    ngram_weights: dict[str, float] = Field(description="Weight of each n-gram present in a text")
    intercept: float = Field(description="Intercept")
    fitted_on: dict[str, str | int | float] = Field(
        default_factory=dict, description="Data, split, rows and regularisation of the fit"
    )

    @model_validator(mode="after")
    def _consistent(self) -> NgramWeights:
        if self.features != list(FEATURE_NAMES):
            raise ValueError(f"features must be exactly {list(FEATURE_NAMES)}")
        n = len(self.features)
        for name in ("mean", "scale", "dense_weights"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} has {len(getattr(self, name))} values, expected {n}")
        if any(s <= 0 for s in self.scale):
            raise ValueError("every scale value must be > 0")
        return self

    def logit(self, dense: Sequence[float], grams: Sequence[str]) -> tuple[float, float]:
        """The model's log-odds of positive, and the part the n-grams contributed."""
        z = self.intercept + sum(
            w * (v - m) / s
            for w, v, m, s in zip(self.dense_weights, dense, self.mean, self.scale, strict=True)
        )
        lexical = sum(self.ngram_weights.get(g, 0.0) for g in grams)
        return z + lexical, lexical


def load_weights(path: Path | str | None = None) -> NgramWeights:
    """Read a weights file (default: the one shipped with the package)."""
    if path is None:
        resource = files("loopwise_sentiment.models").joinpath(DEFAULT_WEIGHTS)
        return load_model(DEFAULT_WEIGHTS, NgramWeights, text=resource.read_text("utf-8"))
    return load_model(path, NgramWeights)


def fit_ngram(
    texts: Sequence[str],
    positive: Sequence[bool],
    *,
    version: str,
    fitted_on: dict[str, str | int | float],
    c: float = 0.5,
    min_df: int = 2,
) -> NgramWeights:
    """Fit L2 logistic regression (scikit-learn) on dense VADER features and binary n-grams."""
    import numpy as np
    from scipy.sparse import csr_matrix, hstack  # type: ignore[import-untyped]
    from sklearn.feature_extraction.text import CountVectorizer  # type: ignore[import-untyped]
    from sklearn.linear_model import LogisticRegression  # type: ignore[import-untyped]

    dense = np.asarray([feature_vector(text_features(t)) for t in texts], dtype=float)
    mean = dense.mean(axis=0)
    scale = dense.std(axis=0)
    scale[scale == 0] = 1.0
    vectorizer = CountVectorizer(analyzer=ngrams, binary=True, min_df=min_df)
    sparse = vectorizer.fit_transform(texts)
    x = hstack([csr_matrix((dense - mean) / scale), sparse]).tocsr()
    model = LogisticRegression(C=c, max_iter=5000)
    model.fit(x, np.asarray(positive, dtype=int))
    coef = model.coef_[0]
    k = dense.shape[1]
    vocabulary = vectorizer.get_feature_names_out()
    grams = {
        str(g): round(float(w), 5)
        for g, w in zip(vocabulary, coef[k:], strict=True)
        if abs(w) >= 1e-3
    }
    return NgramWeights(
        version=version,
        features=list(FEATURE_NAMES),
        mean=[round(float(v), 8) for v in mean],
        scale=[round(float(v), 8) for v in scale],
        dense_weights=[round(float(v), 6) for v in coef[:k]],
        ngram_weights=dict(sorted(grams.items())),
        intercept=round(float(model.intercept_[0]), 6),
        fitted_on={**fitted_on, "rows": len(texts), "C": c, "min_df": min_df},
    )


def write_weights(weights: NgramWeights, path: Path) -> None:
    """Write a weights file as JSON (one n-gram per line, so diffs stay readable)."""
    data: dict[str, Any] = weights.model_dump()
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


class NgramModel:
    """VADER features and negation-scoped n-grams through a fitted logistic model."""

    name = "vader-ngram"

    def __init__(self, weights: str | Path | NgramWeights | None = None) -> None:
        self.weights = weights if isinstance(weights, NgramWeights) else load_weights(weights)
        self.version = f"{package_version('vadersentiment')}+{self.weights.version}"

    def score(
        self, text: str, *, asr_confidence: float | None = None, language: str | None = None
    ) -> SentimentResult:
        """Score one text; doubt it where the fitting data cannot vouch for it."""
        f = text_features(text)
        z, lexical = self.weights.logit(feature_vector(f), ngrams(text))
        p = 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, z))))
        score = 2.0 * p - 1.0
        label: Label
        if f.evidence or abs(lexical) >= EVIDENCE_WEIGHT:
            label = "positive" if p >= 0.5 else "negative"
        else:
            label, score = "neutral", score * NO_EVIDENCE_SHRINK
        confidence = max(p, 1.0 - p)
        signals = [
            Signal("p_positive", round(p, 4)),
            Signal("vader_compound", f.compound),
            Signal("ngram_logit", round(lexical, 4)),
        ]
        for name, cap in caps_for(f, score):
            if confidence > cap:
                signals.append(Signal(name, round(cap - confidence, 4)))
                confidence = cap
            else:
                signals.append(Signal(name, 0.0))
        if label == "neutral":
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
