"""Rule packs: YAML files of compliance rules, versioned by name, version and content hash.

A pack is one YAML file (`name`, `version`, `rules`, optional `match` defaults);
it may `extends:` another pack file, overriding rules by id and removing some
with `disable:`. An index file maps tenants to packs, with a default for every
other tenant. Every error names the file, the line and the rule id.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from loopwise.config_files import ConfigFileError, Loc, locate, read_yaml
from loopwise.events.base import PartyRole
from loopwise.events.scores import Severity
from loopwise.events.transcripts import RedactionType

RULE_ID_PATTERN = r"^[a-z][a-z0-9_.-]{0,127}$"
CATEGORY_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MatchSettings(_Config):
    """How phrases match transcript text; a pack default that each rule may override."""

    fuzzy: bool = Field(default=True, description="Allow near matches (ASR errors)")
    threshold: float = Field(
        default=85.0, ge=50.0, le=100.0, description="Lowest rapidfuzz ratio (0-100) that matches"
    )
    min_fuzzy_chars: int = Field(
        default=6, ge=1, description="Phrases shorter than this must match exactly"
    )
    word_threshold: float = Field(
        default=75.0, ge=0.0, le=100.0, description="Lowest similarity of each aligned word"
    )
    exact_word_chars: int = Field(
        default=3, ge=0, description="Phrase words this short must be heard exactly"
    )


def _all_speakers() -> list[PartyRole]:
    return ["agent", "customer", "mixed", "unknown", "ivr", "supervisor"]


def _agent() -> list[PartyRole]:
    return ["agent"]


class _RuleBase(_Config):
    id: str = Field(pattern=RULE_ID_PATTERN, description="Rule id, unique in the pack")
    category: str = Field(pattern=CATEGORY_PATTERN, description="Finding category")
    severity: Severity = Field(description="Severity of a finding")
    description: str = Field(default="", max_length=2_000, description="What the rule checks")
    queues: list[str] | None = Field(
        default=None,
        min_length=1,
        description="Glob patterns of call queues where the rule applies; absent means all",
    )


def _check_phrases(phrases: list[str]) -> list[str]:
    from loopwise_compliance.matching import normalise_phrase

    for phrase in phrases:
        if not normalise_phrase(phrase):
            raise ValueError(f"phrase {phrase!r} has no words")
    return phrases


class PhraseRule(_RuleBase):
    """Fires on a segment whose text matches one of the phrases or regex patterns."""

    type: Literal["phrase"]
    speakers: list[PartyRole] = Field(min_length=1, description="Whose speech is checked")
    phrases: list[str] = Field(default_factory=list, description="Phrases (matched with `match`)")
    patterns: list[str] = Field(
        default_factory=list, description="Regular expressions on the lower-cased text"
    )
    match: MatchSettings | None = Field(default=None, description="Overrides the pack's `match`")

    _phrases_ok = field_validator("phrases")(_check_phrases)

    @field_validator("patterns")
    @classmethod
    def _patterns_compile(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"pattern {pattern!r} is not a valid regex: {exc}") from None
        return patterns

    @model_validator(mode="after")
    def _something_to_match(self) -> PhraseRule:
        if not self.phrases and not self.patterns:
            raise ValueError("a phrase rule needs `phrases` or `patterns`")
        return self


class RedactionRule(_RuleBase):
    """Fires on a segment with redaction spans (or `[TYPE]` tokens) of the given types."""

    type: Literal["redaction"]
    speakers: list[PartyRole] = Field(
        default_factory=_all_speakers,
        min_length=1,
        description="Whose speech is checked",
    )
    redaction_types: list[RedactionType] = Field(min_length=1, description="Kinds of value")
    min_confidence: float = Field(
        default=0.0, ge=0.0, le=1.0, description="Ignore spans the redactor was less sure of"
    )
    tokens: bool = Field(
        default=True, description="Also count `[TYPE]` tokens in the text that no span covers"
    )


class RequiredPhraseRule(_RuleBase):
    """Call-level: a phrase must be said within `within_s` seconds of the speakers' first speech."""

    type: Literal["required_phrase"]
    speakers: list[PartyRole] = Field(
        default_factory=_agent, min_length=1, description="Who must say it"
    )
    phrases: list[str] = Field(min_length=1, description="Accepted wordings")
    within_s: float = Field(gt=0, description="Deadline after the speakers' first speech, seconds")
    late_severity: Severity | None = Field(
        default=None, description="Severity when said late (default: `severity`)"
    )
    match: MatchSettings | None = Field(default=None, description="Overrides the pack's `match`")

    _phrases_ok = field_validator("phrases")(_check_phrases)


class VerifyBeforeRule(_RuleBase):
    """Call-level: protected details may be said only after the caller's identity is verified."""

    type: Literal["verify_before"]
    speakers: list[PartyRole] = Field(
        default_factory=_agent,
        min_length=1,
        description="Whose speech holds the verification and the protected details",
    )
    verified_phrases: list[str] = Field(
        default_factory=list, description="Wordings that say verification passed"
    )
    challenge_phrases: list[str] = Field(
        default_factory=list, description="Security questions; enough distinct ones also verify"
    )
    min_challenges: int = Field(
        default=2, ge=1, description="Distinct challenge phrases that count as verification"
    )
    protected_phrases: list[str] = Field(min_length=1, description="Account-detail wordings")
    match: MatchSettings | None = Field(default=None, description="Overrides the pack's `match`")

    _phrases_ok = field_validator("verified_phrases", "challenge_phrases", "protected_phrases")(
        _check_phrases
    )

    @model_validator(mode="after")
    def _some_verification(self) -> VerifyBeforeRule:
        if not self.verified_phrases and not self.challenge_phrases:
            raise ValueError("needs `verified_phrases` or `challenge_phrases`")
        return self


Rule = Annotated[
    PhraseRule | RedactionRule | RequiredPhraseRule | VerifyBeforeRule,
    Field(discriminator="type"),
]
SEGMENT_RULE_TYPES = (PhraseRule, RedactionRule)
CALL_RULE_TYPES = (RequiredPhraseRule, VerifyBeforeRule)


class PackFile(_Config):
    """One rule pack file as written."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_.-]{0,99}$", description="Pack name")
    version: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$", description="Pack version set by its author"
    )
    description: str = Field(default="", max_length=4_000, description="What the pack is for")
    extends: str | None = Field(default=None, description="Base pack file, relative to this one")
    match: MatchSettings | None = Field(default=None, description="Default phrase matching")
    disable: list[str] = Field(default_factory=list, description="Base rule ids to drop")
    rules: list[Rule] = Field(default_factory=list, description="Rules; same id overrides base")

    @model_validator(mode="after")
    def _unique_ids(self) -> PackFile:
        seen: set[str] = set()
        for rule in self.rules:
            if rule.id in seen:
                raise ValueError(f"rule id {rule.id!r} appears twice")
            seen.add(rule.id)
        return self


class RulePack(_Config):
    """A resolved pack (base packs merged in): what the engine runs."""

    name: str
    version: str
    content_hash: str = Field(description="sha256 of the resolved rules, hex")
    match: MatchSettings
    rules: tuple[Rule, ...]
    source: str = Field(description="File the pack was loaded from")

    @property
    def version_label(self) -> str:
        """Version plus a short content hash, e.g. `1.0.0+3f2a9c1b0d4e`."""
        return f"{self.version}+{self.content_hash[:12]}"


def _clean_loc(data: Any, loc: tuple[str | int, ...]) -> Loc:
    """Drop pydantic's union-tag parts (e.g. `phrase`) that are not keys in the data."""
    out: list[str | int] = []
    node = data
    for part in loc:
        if isinstance(part, str) and "[" in part:
            continue
        if isinstance(node, dict) and part not in node and part == node.get("type"):
            continue
        if isinstance(node, dict):
            node = node.get(part) if isinstance(part, str) else None
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        else:
            node = None
        out.append(part)
    return tuple(out)


def read_pack_file(path: Path) -> tuple[PackFile, dict[Loc, int], Any]:
    """Parse and validate one pack file; errors name file, line and rule."""
    data, lines = read_yaml(path)
    if not isinstance(data, dict):
        raise ConfigFileError(str(path), 1, None, "a rule pack must be a YAML mapping")
    try:
        pack = PackFile.model_validate(data)
    except ValidationError as exc:
        err = exc.errors(include_url=False, include_input=False)[0]
        loc = _clean_loc(data, tuple(err["loc"]))
        if err["type"] == "union_tag_invalid":
            loc = (*loc, "type")  # point at the `type:` line, not the rule's first line
        line, rule = locate(data, lines, loc)
        where = ".".join(str(p) for p in loc) or "<root>"
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise ConfigFileError(str(path), line, rule, f"{where}: {err['msg']}{more}") from None
    return pack, lines, data


def _rule_dump(rule: BaseModel) -> dict[str, Any]:
    return rule.model_dump(mode="json")


def load_pack(path: Path | str, _chain: tuple[Path, ...] = ()) -> RulePack:
    """Load a pack file and its bases into one resolved, hashed `RulePack`."""
    path = Path(path).resolve()
    if path in _chain:
        cycle = " -> ".join(str(p) for p in (*_chain, path))
        raise ConfigFileError(str(path), None, None, f"`extends` makes a cycle: {cycle}")
    pack, lines, _ = read_pack_file(path)
    rules: dict[str, Any] = {}
    match = pack.match
    if pack.extends is not None:
        base_path = (path.parent / pack.extends).resolve()
        if not base_path.is_file():
            raise ConfigFileError(
                str(path), lines.get(("extends",)), None, f"extends: no file {base_path}"
            )
        base = load_pack(base_path, (*_chain, path))
        rules = {rule.id: rule for rule in base.rules}
        match = match or base.match
        for index, rule_id in enumerate(pack.disable):
            if rule_id not in rules:
                raise ConfigFileError(
                    str(path),
                    lines.get(("disable", index)),
                    rule_id,
                    f"disable: base pack {base.name} has no rule {rule_id!r}",
                )
            del rules[rule_id]
    elif pack.disable:
        raise ConfigFileError(str(path), lines.get(("disable",)), None, "disable: needs `extends`")
    for rule in pack.rules:
        rules[rule.id] = rule
    resolved_match = match or MatchSettings()
    body = {
        "name": pack.name,
        "version": pack.version,
        "match": resolved_match.model_dump(mode="json"),
        "rules": [_rule_dump(rule) for rule in rules.values()],
    }
    digest = hashlib.sha256(
        json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()
    return RulePack(
        name=pack.name,
        version=pack.version,
        content_hash=digest,
        match=resolved_match,
        rules=tuple(rules.values()),
        source=str(path),
    )


class IndexFile(_Config):
    """Which pack each tenant uses: `default` for everyone not listed in `tenants`."""

    default: str = Field(description="Pack file for tenants not listed, relative to the index")
    tenants: dict[str, str] = Field(
        default_factory=dict, description="Tenant id -> pack file, relative to the index"
    )


class PackIndex:
    """The packs of every tenant, loaded and validated at start-up."""

    def __init__(self, default: RulePack, tenants: Mapping[str, RulePack], source: str) -> None:
        self.default = default
        self.tenants = dict(tenants)
        self.source = source

    def for_tenant(self, tenant_id: str | None) -> RulePack:
        """The pack for a tenant (the default when none is configured)."""
        if tenant_id is None:
            return self.default
        return self.tenants.get(tenant_id, self.default)

    def packs(self) -> list[RulePack]:
        """Every distinct pack, default first."""
        seen: dict[str, RulePack] = {self.default.source: self.default}
        for pack in self.tenants.values():
            seen.setdefault(pack.source, pack)
        return list(seen.values())


def load_packs(path: Path | str) -> PackIndex:
    """Load a pack file (used for every tenant), an index file, or a directory with index.yaml."""
    path = Path(path)
    if path.is_dir():
        path = path / "index.yaml"
    data, lines = read_yaml(path)
    if isinstance(data, dict) and "rules" not in data and "default" in data:
        try:
            index = IndexFile.model_validate(data)
        except ValidationError as exc:
            err = exc.errors(include_url=False, include_input=False)[0]
            loc = tuple(err["loc"])
            line, _ = locate(data, lines, loc)
            where = ".".join(str(p) for p in loc) or "<root>"
            raise ConfigFileError(str(path), line, None, f"{where}: {err['msg']}") from None
        cache: dict[Path, RulePack] = {}

        def pack_at(relative: str, loc: Loc) -> RulePack:
            target = (path.parent / relative).resolve()
            if not target.is_file():
                raise ConfigFileError(str(path), lines.get(loc), None, f"no pack file {target}")
            if target not in cache:
                cache[target] = load_pack(target)
            return cache[target]

        default = pack_at(index.default, ("default",))
        tenants = {t: pack_at(p, ("tenants", t)) for t, p in index.tenants.items()}
        return PackIndex(default, tenants, str(path))
    return PackIndex(load_pack(path), {}, str(path))
