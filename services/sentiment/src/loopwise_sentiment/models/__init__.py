"""The sentiment model interface, and loading a model by entry-point name or dotted path.

The service only ever talks to `SentimentModel`: anything with a `name`, a
`version` and a `score` method. Models ship as entry points in the group
`loopwise.sentiment.models` (`vader`, `vader-calibrated`, `vader-ngram`); any other model (for
example one trained from reviewer corrections) is selected by setting
`LOOPWISE_SENTIMENT_MODEL` to its entry-point name or to `package.module:factory`,
without a change to the service. Every event the service writes names the
model and version that made it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Literal, Protocol, runtime_checkable

Label = Literal["negative", "neutral", "positive"]
ENTRY_POINT_GROUP = "loopwise.sentiment.models"


@dataclass(frozen=True)
class Signal:
    """One reason behind a score or its confidence; weight is signed (penalties are negative)."""

    name: str
    weight: float


@dataclass(frozen=True)
class SentimentResult:
    """A model's answer for one text."""

    label: Label
    score: float
    confidence: float
    signals: tuple[Signal, ...] = field(default_factory=tuple)


@runtime_checkable
class SentimentModel(Protocol):
    """What the service needs of a sentiment model."""

    name: str
    version: str

    def score(
        self, text: str, *, asr_confidence: float | None = None, language: str | None = None
    ) -> SentimentResult:
        """Score one text; ASR confidence and language (ISO 639-1) when known."""
        ...


class ModelLoadError(ValueError):
    """The configured model cannot be found or built."""


def _resolve(spec: str) -> Callable[..., Any]:
    if ":" in spec:
        module_name, _, attr = spec.partition(":")
        try:
            target: Any = importlib.import_module(module_name)
        except ImportError as exc:
            raise ModelLoadError(f"model {spec!r}: cannot import {module_name!r}: {exc}") from None
        for part in attr.split("."):
            target = getattr(target, part, None)
            if target is None:
                raise ModelLoadError(f"model {spec!r}: {module_name!r} has no {attr!r}")
        return target  # type: ignore[no-any-return]
    found = entry_points(group=ENTRY_POINT_GROUP, name=spec)
    if not found:
        known = sorted(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))
        raise ModelLoadError(
            f"model {spec!r}: no entry point of that name in {ENTRY_POINT_GROUP} "
            f"(known: {', '.join(known) or 'none'}); or give package.module:factory"
        )
    return next(iter(found)).load()  # type: ignore[no-any-return]


def load_model(spec: str, options: Mapping[str, Any] | None = None) -> SentimentModel:
    """Build the model named by an entry point or `module:factory`, with keyword options."""
    factory = _resolve(spec)
    try:
        model = factory(**dict(options or {}))
    except (TypeError, ValueError, OSError) as exc:
        raise ModelLoadError(f"model {spec!r}: cannot build it: {exc}") from exc
    if not isinstance(model, SentimentModel):
        raise ModelLoadError(f"model {spec!r}: {model!r} has no name, version and score()")
    return model


def label_of(score: float, neutral_band: float) -> Label:
    """Three-way label of a score with a neutral band around zero."""
    if score >= neutral_band:
        return "positive"
    if score <= -neutral_band:
        return "negative"
    return "neutral"


UNSUPPORTED_LANGUAGE_FACTOR = 0.25


def language_factor(language: str | None, supported: tuple[str, ...] = ("en",)) -> float:
    """How far to trust a lexicon model on text of this language (1 when unknown or supported)."""
    if not language:
        return 1.0
    base = language.lower().replace("_", "-").split("-", 1)[0]
    return 1.0 if base in supported else UNSUPPORTED_LANGUAGE_FACTOR


def asr_factor(asr_confidence: float | None, trusted_at: float = 0.85) -> float:
    """How far to trust a text given its transcript confidence (1 at or above `trusted_at`)."""
    if asr_confidence is None:
        return 1.0
    return max(0.0, min(1.0, asr_confidence / trusted_at))
