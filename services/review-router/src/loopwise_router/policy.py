"""The routing policy file: rules, conditions, per-tenant overrides, loaded with file/line errors.

A policy is YAML (see `deploy/policies/default.yaml` for a commented example).
Its version is the content hash of the file, so every decision names exactly
the text that made it. Conditions are parsed at load time: an unknown field, a
bad operator or a literal of the wrong kind stops the load with file, line and
rule id, never at the first event.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationInfo,
    field_validator,
    model_validator,
)

from loopwise.config_files import load_model

Outcome = Literal["auto", "sample", "hold"]
Mode = Literal["realtime", "post_call"]
Priority = Literal["p1", "p2", "p3", "p4"]
Scope = Literal["segment", "call"]
OnMissing = Literal["hold", "sample", "evaluate", "skip"]
"""What a rule does when an input it reads had not arrived when its item was decided:
hold or sample the item (fail closed), evaluate the condition with the input absent,
or skip the rule."""
Input = Literal["sentiment", "compliance"]
_ON_MISSING_RANK: dict[str, int] = {"skip": 0, "evaluate": 1, "sample": 2, "hold": 3}
SEVERITIES: dict[str, int] = {"low": 1, "medium": 2, "high": 3, "critical": 4}

FieldKind = Literal["number", "text", "severity", "bool"]
SEGMENT_FIELDS: dict[str, FieldKind] = {
    "transcript.confidence": "number",
    "segment.speaker": "text",
    "segment.duration_s": "number",
    "segment.words": "number",
    "sentiment.label": "text",
    "sentiment.score": "number",
    "sentiment.confidence": "number",
    "findings.count": "number",
    "findings.max_severity": "severity",
    "findings.max_score": "number",
}
CALL_FIELDS: dict[str, FieldKind] = {
    "call.segments": "number",
    "call.duration_s": "number",
    "call.end_reason": "text",
    "call.transcript_confidence.min": "number",
    "call.transcript_confidence.mean": "number",
    "call.customer_sentiment.min": "number",
    "call.customer_sentiment.mean": "number",
    "call.negative_segments": "number",
    "call.sentiment.final": "number",
    "call.sentiment.worst": "number",
    "call.sentiment.trend": "number",
    "call.sentiment.label": "text",
    "call.sentiment.confidence": "number",
    "call.findings.count": "number",
    "call.findings.max_severity": "severity",
    "call.findings.max_score": "number",
    "call.segments_held": "number",
    "call.segments_sampled": "number",
    "call.risk": "number",
    "call.risk_budget": "bool",
}
RISK_FIELDS: frozenset[str] = frozenset({"call.risk", "call.risk_budget"})
"""Call fields that need the policy's `risk` section (a rule using one without it is an error)."""
RISK_INPUTS: tuple[str, ...] = (
    "escalation_findings",
    "vulnerable_findings",
    "sentiment_final_negative",
    "sentiment_falling",
    "negative_share",
    "positive_share",
    "sentiment_confidence",
    "asr_doubt",
)
"""What the per-call risk score reads (computed in `risk.risk_inputs`; docs/routing-policy.md)."""
COMMON_FIELDS: dict[str, FieldKind] = {
    "language": "text",
    "queue": "text",
    "region": "text",
    "direction": "text",
    "agent_id": "text",
}
METADATA_PREFIX = "metadata."

_COMPARISON = re.compile(
    r"^\s*(?P<field>[A-Za-z_][A-Za-z0-9_.\-]*)\s*"
    r"(?P<op><=|>=|==|!=|<|>|\bnot in\b|\bin\b|\bexists\b|\bmissing\b)\s*(?P<value>.*?)\s*$"
)
Op = Literal["<", "<=", ">", ">=", "==", "!=", "in", "not in", "exists", "missing"]
_ORDERED: frozenset[str] = frozenset({"<", "<=", ">", ">="})


def field_kind(name: str, scope: Scope) -> FieldKind | None:
    """The kind of a fact field in a scope, or None if the scope has no such field."""
    if name.startswith(METADATA_PREFIX) and len(name) > len(METADATA_PREFIX):
        return "text"  # metadata values are compared as written: numbers stay numbers
    if name in COMMON_FIELDS:
        return COMMON_FIELDS[name]
    table = SEGMENT_FIELDS if scope == "segment" else CALL_FIELDS
    return table.get(name)


def parse_duration(value: Any) -> int:
    """Seconds from an int or a string like `90s`, `15m`, `4h`, `2d`."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a string like 15m, 4h")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return value
    if isinstance(value, str):
        match = re.fullmatch(r"\s*(\d+)\s*([smhd]?)\s*", value)
        if match:
            factor = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
            return int(match.group(1)) * factor
    raise ValueError(f"{value!r} is not a duration (use seconds or 90s, 15m, 4h, 2d)")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Comparison(_Strict):
    """`field op literal`, e.g. `sentiment.score <= -0.6` or `queue in [billing, fraud]`."""

    text: str = Field(description="The condition as written")
    field: str = Field(description="Fact field compared")
    op: Op = Field(description="Operator")
    value: Any = Field(default=None, description="Literal compared with")

    @model_validator(mode="before")
    @classmethod
    def _parse(cls, data: Any) -> Any:
        if not isinstance(data, str):
            raise ValueError("a comparison is a string like 'sentiment.score <= -0.5'")
        match = _COMPARISON.match(data)
        if not match:
            raise ValueError(f"cannot read condition {data!r}: expected 'FIELD OP VALUE'")
        op = match.group("op")
        raw = match.group("value")
        if op in ("exists", "missing"):
            if raw:
                raise ValueError(f"{op!r} takes no value in {data!r}")
            value = None
        else:
            if not raw:
                raise ValueError(f"condition {data!r} has no value")
            try:
                value = yaml.safe_load(raw)
            except yaml.YAMLError:
                raise ValueError(f"cannot read the value {raw!r} in {data!r}") from None
        return {"text": data.strip(), "field": match.group("field"), "op": op, "value": value}

    @model_validator(mode="after")
    def _fits(self) -> Comparison:
        kind = field_kind(self.field, "segment") or field_kind(self.field, "call")
        if kind is None:
            known = sorted({*COMMON_FIELDS, *SEGMENT_FIELDS, *CALL_FIELDS})
            raise ValueError(
                f"unknown field {self.field!r} in {self.text!r}; "
                f"known: {', '.join(known)}, metadata.<key>"
            )
        if self.op in ("exists", "missing"):
            return self
        if self.op in ("in", "not in") and not isinstance(self.value, list):
            raise ValueError(f"{self.op!r} needs a list like [a, b] in {self.text!r}")
        values = self.value if self.op in ("in", "not in") else [self.value]
        for value in values:
            if isinstance(value, list | dict) or value is None:
                raise ValueError(f"{value!r} is not a plain value in {self.text!r}")
            if kind == "number" and (isinstance(value, bool) or not isinstance(value, int | float)):
                raise ValueError(f"{self.field} is a number; {value!r} is not, in {self.text!r}")
            if kind == "severity" and value not in SEVERITIES:
                raise ValueError(
                    f"{self.field} is a severity (low, medium, high, critical); "
                    f"{value!r} is not, in {self.text!r}"
                )
        if (
            self.op in _ORDERED
            and kind in ("text", "bool")
            and not self.field.startswith(METADATA_PREFIX)
        ):
            raise ValueError(f"{self.op!r} does not order text; use == or in, in {self.text!r}")
        return self

    def check_scope(self, scope: Scope) -> None:
        """Raise ValueError if the field does not exist for rules of this scope."""
        if field_kind(self.field, scope) is None:
            other = "call" if scope == "segment" else "segment"
            raise ValueError(
                f"{self.field!r} is a {other} field; a {scope} rule cannot use it ({self.text!r})"
            )


class FindingSpec(_Strict):
    """Matches when any compliance finding in scope meets every given constraint."""

    category: str | list[str] | None = Field(default=None, description="Category or categories")
    rule_id: str | list[str] | None = Field(default=None, description="Rule id or ids")
    min_severity: Literal["low", "medium", "high", "critical"] | None = Field(
        default=None, description="Lowest severity that matches"
    )
    min_score: float | None = Field(default=None, ge=0, le=1, description="Lowest score")

    def describe(self) -> str:
        """The spec as one line, for fired-condition records."""
        parts = [f"{k}={v}" for k, v in self.model_dump(exclude_none=True).items()]
        return "finding(" + ", ".join(parts) + ")"


class FindingCondition(_Strict):
    """`finding: {category: card_data, min_severity: high}`."""

    finding: FindingSpec = Field(description="Constraints on one finding")


class AllOf(_Strict):
    """Every sub-condition holds."""

    all: list[Condition] = Field(min_length=1, description="Sub-conditions")


class AnyOf(_Strict):
    """At least one sub-condition holds."""

    any: list[Condition] = Field(min_length=1, description="Sub-conditions")


class NotOf(_Strict):
    """The sub-condition does not hold."""

    not_: Condition = Field(alias="not", description="Negated condition")


def _condition_tag(data: Any) -> str | None:
    if isinstance(data, str | Comparison):
        return "cond[cmp]"
    if isinstance(data, dict) and len(data) == 1:
        key = next(iter(data))
        return {
            "all": "cond[all]",
            "any": "cond[any]",
            "not": "cond[not]",
            "finding": "cond[finding]",
        }.get(key)
    for cls, tag in ((AllOf, "all"), (AnyOf, "any"), (NotOf, "not"), (FindingCondition, "finding")):
        if isinstance(data, cls):
            return f"cond[{tag}]"
    return None


Condition = Annotated[
    Annotated[Comparison, Tag("cond[cmp]")]
    | Annotated[AllOf, Tag("cond[all]")]
    | Annotated[AnyOf, Tag("cond[any]")]
    | Annotated[NotOf, Tag("cond[not]")]
    | Annotated[FindingCondition, Tag("cond[finding]")],
    Discriminator(
        _condition_tag,
        custom_error_type="condition",
        custom_error_message=(
            "a condition is a string 'FIELD OP VALUE' or a mapping with one key: "
            "all, any, not or finding"
        ),
    ),
]
AllOf.model_rebuild()
AnyOf.model_rebuild()
NotOf.model_rebuild()


def _check_condition(condition: Condition, scope: Scope) -> None:
    if isinstance(condition, Comparison):
        condition.check_scope(scope)
    elif isinstance(condition, AllOf):
        for child in condition.all:
            _check_condition(child, scope)
    elif isinstance(condition, AnyOf):
        for child in condition.any:
            _check_condition(child, scope)
    elif isinstance(condition, NotOf):
        _check_condition(condition.not_, scope)


def _field_input(name: str) -> Input | None:
    """Which scored input a fact field comes from (None: the transcript or call events)."""
    if name.startswith(("findings.", "call.findings.")):
        return "compliance"
    if name.startswith(("sentiment.", "call.sentiment.", "call.customer_sentiment.")) or (
        name == "call.negative_segments"
    ):
        return "sentiment"
    return None


def inputs_read(condition: Condition) -> frozenset[Input]:
    """The scored inputs a condition reads (a finding condition reads compliance)."""
    if isinstance(condition, FindingCondition):
        return frozenset({"compliance"})
    if isinstance(condition, Comparison):
        found = _field_input(condition.field)
        return frozenset({found}) if found else frozenset()
    if isinstance(condition, AllOf):
        return frozenset().union(*(inputs_read(c) for c in condition.all))
    if isinstance(condition, AnyOf):
        return frozenset().union(*(inputs_read(c) for c in condition.any))
    return inputs_read(condition.not_)


class MissingDefaults(_Strict):
    """What rules do by default when an input they read is missing, per input."""

    compliance: OnMissing = Field(
        default="hold",
        description="Rules on compliance findings: a missing result is never 'no finding'",
    )
    sentiment: OnMissing = Field(
        default="evaluate",
        description="Rules on sentiment: evaluate with the score absent (comparisons fail)",
    )


class Defaults(_Strict):
    """What a rule gets when it does not say, and what happens after the last escalation."""

    priority: Priority = Field(default="p3", description="Review priority")
    sla: int = Field(default=4 * 3600, description="Seconds a reviewer has (or 15m, 4h, 2d)")
    mode: Mode = Field(default="post_call", description="realtime alert or post-call review")
    escalations: int = Field(
        default=2, ge=0, le=9, description="Escalations after SLA breaches before the task expires"
    )
    on_expiry: Literal["release", "keep_held"] = Field(
        default="keep_held",
        description="What an expired hold does: release unreviewed, or stay held for audit",
    )
    on_missing: MissingDefaults = Field(
        default_factory=MissingDefaults,
        description="Per input, what a rule reading it does when it is missing at decision time",
    )

    _sla = field_validator("sla", mode="before")(lambda cls, v: parse_duration(v))


class TenantDefaults(_Strict):
    """Tenant overrides of the defaults; anything left out comes from the policy defaults."""

    priority: Priority | None = Field(default=None, description="Review priority")
    sla: int | None = Field(default=None, description="Seconds a reviewer has")
    mode: Mode | None = Field(default=None, description="realtime or post_call")
    escalations: int | None = Field(default=None, ge=0, le=9, description="Escalations")
    on_expiry: Literal["release", "keep_held"] | None = Field(default=None, description="Expiry")
    on_missing: MissingDefaults | None = Field(
        default=None, description="What rules do when an input is missing (replaces the policy's)"
    )

    _sla = field_validator("sla", mode="before")(
        lambda cls, v: None if v is None else parse_duration(v)
    )


class Rule(_Strict):
    """One rule: where it applies, when it fires and what it asks for."""

    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$", description="Rule id")
    description: str | None = Field(default=None, max_length=500, description="Why it exists")
    scope: Scope = Field(description="segment: each segment; call: the finished call")
    when: Condition = Field(description="Condition tree")
    outcome: Outcome = Field(description="auto, sample or hold")
    rate: float | None = Field(default=None, ge=0, le=1, description="Sample rate (sample only)")
    priority: Priority | None = Field(default=None, description="Review priority")
    sla: int | None = Field(default=None, description="Seconds a reviewer has")
    mode: Mode | None = Field(default=None, description="realtime or post_call")
    on_missing: OnMissing | None = Field(
        default=None,
        description="When an input the rule reads is missing: hold, sample, evaluate or skip "
        "(default: the policy's defaults.on_missing for that input)",
    )

    _sla = field_validator("sla", mode="before")(
        lambda cls, v: None if v is None else parse_duration(v)
    )

    @field_validator("when", mode="after")
    @classmethod
    def _fields_fit_scope(cls, when: Condition, info: ValidationInfo) -> Condition:
        scope = info.data.get("scope")
        if scope in ("segment", "call"):
            _check_condition(when, scope)
        return when

    @model_validator(mode="after")
    def _consistent(self) -> Rule:
        if self.outcome == "sample" and self.rate is None:
            raise ValueError("a sample rule needs a rate between 0 and 1")
        if self.outcome != "sample" and self.rate is not None:
            raise ValueError("rate is only for sample rules")
        if self.scope == "call" and self.mode == "realtime":
            raise ValueError(
                "a call rule is decided after the call: mode realtime needs scope segment"
            )
        _check_condition(self.when, self.scope)
        return self


class TenantPolicy(_Strict):
    """A tenant's changes: other defaults, rules switched off, rules added or replaced."""

    defaults: TenantDefaults = Field(default_factory=TenantDefaults, description="Overrides")
    disable: list[str] = Field(default_factory=list, description="Ids of shared rules to drop")
    rules: list[Rule] = Field(
        default_factory=list, description="Extra rules; one with a shared rule's id replaces it"
    )


def condition_fields(condition: Condition) -> set[str]:
    """Every fact field a condition tree compares."""
    if isinstance(condition, Comparison):
        return {condition.field}
    if isinstance(condition, AllOf | AnyOf):
        children = condition.all if isinstance(condition, AllOf) else condition.any
        return set().union(*(condition_fields(c) for c in children))
    if isinstance(condition, NotOf):
        return condition_fields(condition.not_)
    return set()


class RiskModel(_Strict):
    """A calibrated per-call risk: P(review needed) = 1 / (1 + exp(-(intercept + sum w x)))."""

    version: str = Field(min_length=1, max_length=64, description="Risk model version")
    intercept: float = Field(description="Log-odds with every input at 0")
    weights: dict[str, float] = Field(
        description="Weight per input (raw scale); inputs left out weigh 0", min_length=1
    )
    fitted_on: dict[str, str | int | float] = Field(
        default_factory=dict, description="Data, split, rows and regularisation of the fit"
    )

    @field_validator("weights")
    @classmethod
    def _known_inputs(cls, weights: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(weights) - set(RISK_INPUTS))
        if unknown:
            raise ValueError(
                f"unknown risk input(s) {', '.join(unknown)}; known: {', '.join(RISK_INPUTS)}"
            )
        return weights


class RiskBudget(_Strict):
    """The review share a queue gets from the risk score, as the threshold fitted to reach it."""

    share: float = Field(gt=0, le=1, description="Share of calls the threshold was fitted to pick")
    threshold: float = Field(ge=0, le=1, description="Calls with risk at or above it are picked")


class RiskPolicy(_Strict):
    """The per-call risk score and the review budget per queue (`default` for every other)."""

    model: RiskModel = Field(description="How the risk score is computed")
    budgets: dict[str, RiskBudget] = Field(description="Budget per queue; `default` is required")

    @field_validator("budgets")
    @classmethod
    def _has_default(cls, budgets: dict[str, RiskBudget]) -> dict[str, RiskBudget]:
        if "default" not in budgets:
            raise ValueError("risk budgets need a `default` entry (queues without their own)")
        return budgets

    def threshold(self, queue: str | None) -> float:
        """The risk threshold of a queue."""
        budget = self.budgets.get(queue) if queue is not None else None
        return (budget or self.budgets["default"]).threshold


class PolicyFile(_Strict):
    """The whole file."""

    version: Literal[1] = Field(description="Policy format version")
    name: str = Field(min_length=1, max_length=200, description="Policy name")
    defaults: Defaults = Field(default_factory=Defaults, description="Defaults for every rule")
    rules: list[Rule] = Field(default_factory=list, description="Rules for every tenant")
    tenants: dict[str, TenantPolicy] = Field(default_factory=dict, description="Per-tenant changes")
    risk: RiskPolicy | None = Field(
        default=None, description="Per-call risk score and review budgets (call.risk fields)"
    )

    @model_validator(mode="after")
    def _risk_fields_need_risk(self) -> PolicyFile:
        if self.risk is not None:
            return self
        rules = [*self.rules, *(r for t in self.tenants.values() for r in t.rules)]
        for rule in rules:
            used = sorted(condition_fields(rule.when) & RISK_FIELDS)
            if used:
                raise ValueError(
                    f"rule {rule.id} uses {', '.join(used)} but the policy has no `risk` section"
                )
        return self

    @model_validator(mode="after")
    def _unique_ids(self) -> PolicyFile:
        ids = [r.id for r in self.rules]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"duplicate rule id(s): {', '.join(dupes)}")
        for tenant, spec in self.tenants.items():
            unknown = [d for d in spec.disable if d not in ids]
            if unknown:
                raise ValueError(f"tenant {tenant} disables unknown rule(s): {', '.join(unknown)}")
            own = [r.id for r in spec.rules]
            dupes = sorted({i for i in own if own.count(i) > 1})
            if dupes:
                raise ValueError(f"tenant {tenant}: duplicate rule id(s): {', '.join(dupes)}")
        return self


class ResolvedRule(BaseModel):
    """A rule with the tenant's defaults filled in."""

    model_config = ConfigDict(frozen=True)

    rule: Rule
    priority: Priority
    sla_s: int
    mode: Mode
    reads: frozenset[Input] = frozenset()
    on_missing: dict[Input, OnMissing] = Field(default_factory=dict)

    def missing_action(self, missing: frozenset[str]) -> OnMissing | None:
        """What this rule does given the missing inputs (None: it reads none of them)."""
        gaps = [i for i in self.reads if i in missing]
        if not gaps:
            return None
        action = max((self.on_missing[i] for i in gaps), key=_ON_MISSING_RANK.__getitem__)
        if self.rule.outcome == "auto" and self.rule.on_missing is None and action != "evaluate":
            return "skip"  # a release rule that cannot see its input does not release
        return action

    def forced(self, action: OnMissing) -> ResolvedRule:
        """This rule as it acts when an input is missing (hold or sample at rate 1)."""
        rule = self.rule.model_copy(
            update={"outcome": action, "rate": 1.0 if action == "sample" else None}
        )
        return self.model_copy(update={"rule": rule})


class Policy:
    """A loaded policy: its version (content hash) and the effective rules of each tenant."""

    def __init__(self, spec: PolicyFile, version: str, source: str) -> None:
        self.spec = spec
        self.version = version
        self.source = source
        self.name = spec.name
        self._cache: dict[str, tuple[Defaults, list[ResolvedRule]]] = {}

    def for_tenant(self, tenant_id: str) -> tuple[Defaults, list[ResolvedRule]]:
        """The defaults and rules (shared ones, minus disabled, plus the tenant's) of a tenant."""
        cached = self._cache.get(tenant_id)
        if cached is not None:
            return cached
        tenant = self.spec.tenants.get(tenant_id)
        defaults = self.spec.defaults
        rules = list(self.spec.rules)
        if tenant is not None:
            overrides = tenant.defaults.model_dump(exclude_none=True, exclude={"on_missing"})
            if tenant.defaults.on_missing is not None:
                overrides["on_missing"] = tenant.defaults.on_missing
            defaults = defaults.model_copy(update=overrides)
            own = {r.id: r for r in tenant.rules}
            rules = [own.pop(r.id, r) for r in rules if r.id not in tenant.disable]
            rules.extend(own.values())
        resolved = []
        for r in rules:
            reads = inputs_read(r.when)
            resolved.append(
                ResolvedRule(
                    rule=r,
                    priority=r.priority or defaults.priority,
                    sla_s=r.sla if r.sla is not None else defaults.sla,
                    mode=r.mode or defaults.mode,
                    reads=reads,
                    on_missing={i: r.on_missing or getattr(defaults.on_missing, i) for i in reads},
                )
            )
        self._cache[tenant_id] = (defaults, resolved)
        return defaults, resolved


def policy_version(text: str) -> str:
    """The version of a policy text: the first 16 hex digits of its SHA-256."""
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def load_policy(path: Path | str, text: str | None = None) -> Policy:
    """Load and check a policy file; raise ConfigFileError naming file, line and rule."""
    if text is None:
        from loopwise.config_files import ConfigFileError

        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigFileError(str(path), None, None, f"cannot read: {exc}") from None
    spec = load_model(path, PolicyFile, text)
    return Policy(spec, policy_version(text), str(path))
