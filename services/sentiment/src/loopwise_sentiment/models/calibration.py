"""A calibration file and how to fit one: logistic regression over `features.FEATURE_NAMES`.

The file is JSON (read through the YAML loader, so a broken file is reported
with its line). It records what it was fitted on, so a model version always
traces back to its data. Reviewer relabels can be turned into a new file with
`fit_calibration` and selected with a setting, without touching the service.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from importlib.resources import files
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from loopwise.config_files import load_model
from loopwise_sentiment.models.features import FEATURE_NAMES

DEFAULT_CALIBRATION = "calibration_v1.json"


class Calibration(BaseModel):
    """Coefficients of the logistic model P(positive | features) and their provenance."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str = Field(min_length=1, description="Calibration version, part of the model version")
    features: list[str] = Field(description="Feature names, in the order of the weights")
    mean: list[float] = Field(description="Feature means used to standardise inputs")
    scale: list[float] = Field(description="Feature standard deviations (all > 0)")
    weights: list[float] = Field(description="Weights of the standardised features")
    intercept: float = Field(description="Intercept of the logistic model")
    fitted_on: dict[str, str | int | float] = Field(
        default_factory=dict, description="Where the coefficients came from: data, split, size"
    )

    @model_validator(mode="after")
    def _consistent(self) -> Calibration:
        if self.features != list(FEATURE_NAMES):
            raise ValueError(
                f"features must be exactly {list(FEATURE_NAMES)} (this code's feature set)"
            )
        n = len(self.features)
        for name in ("mean", "scale", "weights"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} has {len(getattr(self, name))} values, expected {n}")
        if any(s <= 0 for s in self.scale):
            raise ValueError("every scale value must be > 0")
        return self

    def probability(self, x: Sequence[float]) -> float:
        """P(positive) for one feature vector."""
        z = self.intercept + sum(
            w * (v - m) / s
            for w, v, m, s in zip(self.weights, x, self.mean, self.scale, strict=True)
        )
        return 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, z))))


def load_calibration(path: Path | str | None = None) -> Calibration:
    """Read a calibration file (default: the one shipped with the package)."""
    if path is None:
        resource = files("loopwise_sentiment.models").joinpath(DEFAULT_CALIBRATION)
        return load_model(DEFAULT_CALIBRATION, Calibration, text=resource.read_text("utf-8"))
    return load_model(path, Calibration)


def fit_calibration(
    x: Sequence[Sequence[float]],
    y: Sequence[int],
    *,
    version: str,
    fitted_on: dict[str, str | int | float],
    l2: float = 1.0,
    iterations: int = 4000,
    learning_rate: float = 0.1,
) -> Calibration:
    """Fit L2-regularised logistic regression by gradient descent on standardised features."""
    xa = np.asarray(x, dtype=float)
    ya = np.asarray(y, dtype=float)
    mean = xa.mean(axis=0)
    scale = xa.std(axis=0)
    scale[scale == 0] = 1.0
    z = (xa - mean) / scale
    w = np.zeros(z.shape[1])
    b = 0.0
    n = len(ya)
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(z @ w + b)))
        w -= learning_rate * (z.T @ (p - ya) / n + l2 * w / n)
        b -= learning_rate * float((p - ya).mean())
    return Calibration(
        version=version,
        features=list(FEATURE_NAMES),
        mean=[round(float(v), 8) for v in mean],
        scale=[round(float(v), 8) for v in scale],
        weights=[round(float(v), 8) for v in w],
        intercept=round(b, 8),
        fitted_on={**fitted_on, "l2": l2, "iterations": iterations},
    )


def write_calibration(calibration: Calibration, path: Path) -> None:
    """Write a calibration file as indented JSON."""
    path.write_text(json.dumps(calibration.model_dump(), indent=2) + "\n", encoding="utf-8")
