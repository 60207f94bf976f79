"""Measuring a model the way reviewers use it, and fitting a calibration from labelled text.

Used by `loopwise-sentiment calibrate` (reviewer relabels -> a new calibration
file) and by bench/sentiment_eval.py, so both report the same figures.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from loopwise_sentiment.models.calibrated import CalibratedVaderModel
from loopwise_sentiment.models.calibration import Calibration, fit_calibration
from loopwise_sentiment.models.features import feature_vector, text_features


@dataclass(frozen=True)
class Example:
    """A text with its binary truth (True = positive)."""

    text: str
    positive: bool


def review_figures(right: Sequence[bool], confidence: Sequence[float]) -> dict[str, float]:
    """Accuracy, rest accuracy when the 10%/20% least confident go to people, error ratio."""
    n = len(right)
    if n < 5:
        raise ValueError(f"need at least 5 answers to measure, got {n}")
    order = sorted(range(n), key=lambda i: confidence[i])  # stable: ties keep input order
    out = {"n": float(n), "accuracy": sum(right) / n}
    for share in (0.1, 0.2):
        k = round(share * n)
        rest = [right[i] for i in order[k:]]
        out[f"rest_accuracy_{int(share * 100)}"] = sum(rest) / len(rest)
    k = round(0.2 * n)
    low_err = 1 - sum(right[i] for i in order[:k]) / k
    rest_err = 1 - sum(right[i] for i in order[k:]) / (n - k)
    out["low20_error"] = low_err
    out["rest_error"] = rest_err
    out["error_ratio_20"] = low_err / rest_err if rest_err else float("inf")
    return out


def fit_examples(
    examples: Sequence[Example], *, version: str, fitted_on: dict[str, str | int | float]
) -> Calibration:
    """Fit a calibration on these examples only."""
    x = [feature_vector(text_features(e.text)) for e in examples]
    y = [int(e.positive) for e in examples]
    return fit_calibration(x, y, version=version, fitted_on={**fitted_on, "rows": len(examples)})


def cross_validate(examples: Sequence[Example], folds: int = 5) -> dict[str, float]:
    """k-fold CV of the fitting procedure: each fold scored by a model fitted without it."""
    right: list[bool] = []
    confidence: list[float] = []
    for k in range(folds):
        held = [e for i, e in enumerate(examples) if i % folds == k]
        train = [e for i, e in enumerate(examples) if i % folds != k]
        model = CalibratedVaderModel(fit_examples(train, version=f"cv{k}", fitted_on={}))
        for example in held:
            result = model.score(example.text)
            right.append((result.score >= 0) == example.positive)
            confidence.append(result.confidence)
    return review_figures(right, confidence)
