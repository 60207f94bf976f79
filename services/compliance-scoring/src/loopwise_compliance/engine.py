"""The rule engine: segment findings now, call findings when the call ends, per-call state.

Pure functions over plain data: `check_segment` gives a segment's findings from
the segment alone (so a redelivered segment gives the same findings again),
`observe_segment` folds a segment into the call's `CallState` (once per segment
id), and `decide_call` takes the call-level decisions from that state. Call
rules order what they saw by call time, not by arrival, so out-of-order
delivery does not change the result.
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from loopwise.events.scores import ComplianceFinding, Evidence
from loopwise.events.transcripts import RedactionSpan, Word
from loopwise_compliance.matching import (
    MatchOptions,
    NormWord,
    PhraseMatch,
    Words,
    find_all,
    find_any,
    normalise,
    normalise_phrase,
)
from loopwise_compliance.rules import (
    MatchSettings,
    PhraseRule,
    RedactionRule,
    RequiredPhraseRule,
    RulePack,
    VerifyBeforeRule,
)

_TOKEN_TYPE = re.compile(r"\[([A-Z][A-Z0-9_]*)\]")
# Tokens loopwise.redaction writes whose name differs from the redaction type.
_TOKEN_ALIASES = {"EXPIRY": "CARD_EXPIRY", "SSN": "US_SSN", "REDACTED": "OTHER_PII"}
MAX_EXCERPT = 300


@dataclass(frozen=True)
class Segment:
    """What the rules need of a transcript segment (from an event or a batch line)."""

    segment_id: str
    speaker: str
    start_s: float
    end_s: float
    text: str
    redactions: Sequence[RedactionSpan] = ()
    words: Sequence[Word] = ()

    def time_at(self, offset: int) -> float:
        """Call time of a character offset: from word timings if any, else interpolated."""
        if self.words:
            position = 0
            for word in self.words:
                found = self.text.find(word.word, position)
                if found < 0:
                    continue
                if found + len(word.word) > offset:
                    return word.start_s
                position = found + len(word.word)
            return self.words[-1].start_s
        if not self.text or self.end_s <= self.start_s:
            return self.start_s
        fraction = min(max(offset / len(self.text), 0.0), 1.0)
        return round(self.start_s + fraction * (self.end_s - self.start_s), 3)


def finding_id(*parts: str) -> str:
    """A readable finding id that is the same on every replay (hashed if too long)."""
    raw = "/".join(parts)
    if len(raw) <= 200:
        return raw
    return f"{raw[:150]}#{hashlib.sha256(raw.encode()).hexdigest()[:40]}"


def _options(pack: RulePack, own: MatchSettings | None) -> MatchOptions:
    chosen = own or pack.match
    return MatchOptions(
        chosen.fuzzy,
        chosen.threshold,
        chosen.min_fuzzy_chars,
        chosen.word_threshold,
        chosen.exact_word_chars,
    )


def _excerpt(text: str, start: int, end: int) -> str:
    return text[start:end][:MAX_EXCERPT]


def queue_matches(patterns: list[str] | None, queue: str | None) -> bool:
    """Whether a rule scoped to queue patterns applies to a call's queue."""
    if patterns is None:
        return True
    if queue is None:
        return False
    return any(fnmatch.fnmatchcase(queue.lower(), p.lower()) for p in patterns)


@dataclass
class CompiledPack:
    """A pack with its phrases normalised once."""

    pack: RulePack
    phrases: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    patterns: dict[str, list[re.Pattern[str]]] = field(default_factory=dict)
    universe: dict[MatchOptions, tuple[str, ...]] = field(default_factory=dict)
    """Per match options, every phrase of the pack's rules that use them: a segment's
    text is scored against all of them at once (see `matching.find_any`)."""

    @classmethod
    def compile(cls, pack: RulePack) -> CompiledPack:
        """Normalise every phrase and compile every pattern of the pack."""
        compiled = cls(pack)
        universe: dict[MatchOptions, dict[str, None]] = {}
        for rule in pack.rules:
            groups: dict[str, list[str]] = {}
            if isinstance(rule, PhraseRule):
                groups["phrases"] = rule.phrases
                compiled.patterns[rule.id] = [re.compile(p) for p in rule.patterns]
            elif isinstance(rule, RequiredPhraseRule):
                groups["phrases"] = rule.phrases
            elif isinstance(rule, VerifyBeforeRule):
                groups["verified"] = rule.verified_phrases
                groups["challenge"] = rule.challenge_phrases
                groups["protected"] = rule.protected_phrases
            for group, phrases in groups.items():
                normalised = [normalise_phrase(p) for p in phrases]
                compiled.phrases[(rule.id, group)] = normalised
                own = universe.setdefault(_options(pack, getattr(rule, "match", None)), {})
                own.update(dict.fromkeys(normalised))
        compiled.universe = {options: tuple(phrases) for options, phrases in universe.items()}
        return compiled

    def words_of(self, rule_id: str, group: str) -> list[str]:
        """The normalised phrases of one group of a rule."""
        return self.phrases.get((rule_id, group), [])


def _phrase_finding(
    cp: CompiledPack, rule: PhraseRule, segment: Segment, words: list[NormWord], call_id: str
) -> ComplianceFinding | None:
    options = _options(cp.pack, rule.match)
    found = find_any(words, cp.words_of(rule.id, "phrases"), options, cp.universe.get(options))
    start = end = 0
    similarity = 0.0
    matched: str | None = None
    if found is not None:
        start, end, similarity, matched = found.start, found.end, found.similarity, found.phrase
    else:
        lowered = segment.text.lower()
        for pattern in cp.patterns.get(rule.id, []):
            hit = pattern.search(lowered)
            if hit is not None and hit.end() > hit.start():
                start, end, similarity, matched = hit.start(), hit.end(), 100.0, pattern.pattern
                break
    if matched is None:
        return None
    return ComplianceFinding(
        finding_id=finding_id(call_id, segment.segment_id, rule.id),
        rule_id=rule.id,
        category=rule.category,
        severity=rule.severity,
        score=round(similarity / 100.0, 4),
        evidence=Evidence(
            segment_id=segment.segment_id,
            start=start,
            end=end,
            text=_excerpt(segment.text, start, end),
            start_s=segment.time_at(start),
            end_s=segment.time_at(end),
        ),
        segment_id=segment.segment_id,
        matched_phrase=matched,
    )


def _redaction_finding(
    rule: RedactionRule, segment: Segment, call_id: str
) -> ComplianceFinding | None:
    wanted = set(rule.redaction_types)
    spans: list[tuple[int, int, str, float]] = [
        (s.start, s.end, str(s.type), s.confidence)
        for s in segment.redactions
        if s.type in wanted and s.confidence >= rule.min_confidence
    ]
    if rule.tokens:
        covered = [(s.start, s.end) for s in segment.redactions]
        for hit in _TOKEN_TYPE.finditer(segment.text):
            inside = any(a <= hit.start() < b for a, b in covered)
            kind = _TOKEN_ALIASES.get(hit.group(1), hit.group(1))
            if kind in wanted and not inside:
                spans.append((hit.start(), hit.end(), kind, 1.0))
    if not spans:
        return None
    spans.sort()
    start, end, kind, _ = spans[0]
    types = sorted({str(s[2]) for s in spans})
    return ComplianceFinding(
        finding_id=finding_id(call_id, segment.segment_id, rule.id),
        rule_id=rule.id,
        category=rule.category,
        severity=rule.severity,
        score=round(max(s[3] for s in spans), 4),
        evidence=Evidence(
            segment_id=segment.segment_id,
            start=start,
            end=end,
            text=_excerpt(segment.text, start, end) or f"[{kind}]",
            start_s=segment.time_at(start),
            end_s=segment.time_at(end),
        ),
        segment_id=segment.segment_id,
        matched_phrase=f"[{kind}]",
        explanation=f"{len(spans)} redacted value(s) of {', '.join(types)} spoken by "
        f"{segment.speaker}",
    )


def check_segment(
    cp: CompiledPack,
    segment: Segment,
    call_id: str,
    queue: str | None,
    words: Words | None = None,
) -> list[ComplianceFinding]:
    """Findings of the segment-level rules for one segment.

    `words`: the segment's text already normalised (the same object may then serve
    `observe_segment`, sharing its scoring).
    """
    words = words if words is not None else normalise(segment.text)
    findings: list[ComplianceFinding] = []
    for rule in cp.pack.rules:
        if not isinstance(rule, PhraseRule | RedactionRule):
            continue
        if segment.speaker not in rule.speakers or not queue_matches(rule.queues, queue):
            continue
        if isinstance(rule, PhraseRule):
            finding = _phrase_finding(cp, rule, segment, words, call_id)
        else:
            finding = _redaction_finding(rule, segment, call_id)
        if finding is not None:
            findings.append(finding)
    return findings


class Hit(BaseModel):
    """Where a call rule saw one of its phrases."""

    model_config = ConfigDict(frozen=True)

    segment_id: str
    time_s: float
    end_s: float
    start: int
    end: int
    text: str
    phrase: str
    similarity: float


class CallState(BaseModel):
    """What the call rules remember about one call; stored in a changelogged table."""

    tenant_id: str
    call_id: str
    queue: str | None = None
    started: bool = False
    seen_event_ids: list[str] = Field(default_factory=list)
    seen_segment_ids: list[str] = Field(default_factory=list)
    segments_checked: int = 0
    first_speech_s: dict[str, float] = Field(default_factory=dict)
    hits: dict[str, list[Hit]] = Field(default_factory=dict)
    """Rule id + ':' + phrase group -> hits, earliest first."""
    ended_event_id: str | None = None
    call_findings: list[ComplianceFinding] | None = None
    revision: int = 0
    late_event_ids: list[str] = Field(default_factory=list)
    """Segments that arrived after the call was decided, each of which revised the result."""
    _written: set[str] = PrivateAttr(default_factory=set)
    """Parts of this state already on the changelog (see `loopwise_compliance.app`)."""


def _hit(segment: Segment, match: PhraseMatch) -> Hit:
    return Hit(
        segment_id=segment.segment_id,
        time_s=segment.time_at(match.start),
        end_s=segment.time_at(match.end),
        start=match.start,
        end=match.end,
        text=_excerpt(segment.text, match.start, match.end),
        phrase=match.phrase,
        similarity=match.similarity,
    )


def observe_segment(
    cp: CompiledPack, state: CallState, segment: Segment, words: Words | None = None
) -> None:
    """Fold one (new) segment into the call state for the call-level rules."""
    state.segments_checked += 1
    state.seen_segment_ids.append(segment.segment_id)
    first = state.first_speech_s.get(segment.speaker)
    if first is None or segment.start_s < first:
        state.first_speech_s[segment.speaker] = segment.start_s
    for rule in cp.pack.rules:
        if not isinstance(rule, RequiredPhraseRule | VerifyBeforeRule):
            continue
        if segment.speaker not in rule.speakers:
            continue
        words = words if words is not None else normalise(segment.text)
        options = _options(cp.pack, rule.match)
        universe = cp.universe.get(options)
        groups = (
            ["phrases"]
            if isinstance(rule, RequiredPhraseRule)
            else [
                "verified",
                "challenge",
                "protected",
            ]
        )
        for group in groups:
            phrases = cp.words_of(rule.id, group)
            if group == "challenge":
                matches = find_all(words, phrases, options, universe)
            else:
                one = find_any(words, phrases, options, universe)
                matches = [one] if one is not None else []
            if matches:
                key = f"{rule.id}:{group}"
                merged = state.hits.get(key, []) + [_hit(segment, m) for m in matches]
                state.hits[key] = sorted(merged, key=lambda h: (h.time_s, h.segment_id))[:50]


def _call_finding(
    state: CallState,
    rule: RequiredPhraseRule | VerifyBeforeRule,
    severity: str,
    score: float,
    hit: Hit | None,
    explanation: str,
) -> ComplianceFinding:
    evidence = (
        Evidence(
            segment_id=hit.segment_id,
            start=hit.start,
            end=hit.end,
            text=hit.text,
            start_s=hit.time_s,
            end_s=hit.end_s,
        )
        if hit is not None
        else Evidence(text=explanation[:2_000])
    )
    return ComplianceFinding.model_validate(
        {
            "finding_id": finding_id(state.call_id, "call", rule.id),
            "rule_id": rule.id,
            "category": rule.category,
            "severity": severity,
            "score": round(score, 4),
            "evidence": evidence,
            "segment_id": hit.segment_id if hit is not None else None,
            "matched_phrase": hit.phrase if hit is not None else None,
            "explanation": explanation[:1_000],
        }
    )


def _first_speech(state: CallState, speakers: list[str]) -> float | None:
    times = [state.first_speech_s[s] for s in speakers if s in state.first_speech_s]
    return min(times) if times else None


def _required_phrase(state: CallState, rule: RequiredPhraseRule) -> ComplianceFinding | None:
    first = _first_speech(state, list(rule.speakers))
    if first is None:
        return None  # nobody who should have said it spoke: nothing to judge
    deadline = first + rule.within_s
    hits = state.hits.get(f"{rule.id}:phrases", [])
    if not hits:
        who = "/".join(rule.speakers)
        return _call_finding(
            state,
            rule,
            rule.severity,
            1.0,
            None,
            f"never said in the call ({rule.description or rule.id}); required within "
            f"{rule.within_s:g} s of the first {who} speech at {first:g} s",
        )
    hit = hits[0]
    if hit.time_s <= deadline:
        return None
    return _call_finding(
        state,
        rule,
        rule.late_severity or rule.severity,
        hit.similarity / 100.0,
        hit,
        f"said late: at {hit.time_s:g} s, deadline {deadline:g} s "
        f"({rule.within_s:g} s after the first speech at {first:g} s)",
    )


def _verify_before(state: CallState, rule: VerifyBeforeRule) -> ComplianceFinding | None:
    protected = state.hits.get(f"{rule.id}:protected", [])
    if not protected:
        return None
    verified = [h.time_s for h in state.hits.get(f"{rule.id}:verified", [])]
    challenges: dict[str, float] = {}
    for h in state.hits.get(f"{rule.id}:challenge", []):
        challenges.setdefault(h.phrase, h.time_s)
    if len(challenges) >= rule.min_challenges:
        verified.append(sorted(challenges.values())[rule.min_challenges - 1])
    verified_at = min(verified) if verified else None
    early = [h for h in protected if verified_at is None or h.time_s < verified_at]
    if not early:
        return None
    hit = early[0]
    when = "never verified" if verified_at is None else f"verified only at {verified_at:g} s"
    return _call_finding(
        state,
        rule,
        rule.severity,
        hit.similarity / 100.0,
        hit,
        f"{len(early)} protected detail(s) before identity verification, first at "
        f"{hit.time_s:g} s; {when} ({len(challenges)} distinct challenge(s) asked)",
    )


def decide_call(cp: CompiledPack, state: CallState) -> list[ComplianceFinding]:
    """The call-level findings, from everything the call state saw."""
    findings: list[ComplianceFinding] = []
    for rule in cp.pack.rules:
        if not queue_matches(rule.queues, state.queue):
            continue
        finding: ComplianceFinding | None = None
        if isinstance(rule, RequiredPhraseRule):
            finding = _required_phrase(state, rule)
        elif isinstance(rule, VerifyBeforeRule):
            finding = _verify_before(state, rule)
        if finding is not None:
            findings.append(finding)
    return findings
