"""The shipped default pack on scripted calls: every rule category, call rules, idempotency."""

from __future__ import annotations

from typing import Any

from loopwise.events import CallComplianceV1, ComplianceFinding, SegmentComplianceV1
from loopwise_compliance.handler import ComplianceScorer, Outcome


def seg_findings(outcome: Outcome) -> list[ComplianceFinding]:
    (event,) = outcome.outputs
    assert isinstance(event, SegmentComplianceV1)
    return list(event.findings)


def rule_ids(findings: list[ComplianceFinding]) -> set[str]:
    return {f.rule_id for f in findings}


def call_result(outcome: Outcome) -> CallComplianceV1:
    (event,) = outcome.outputs
    assert isinstance(event, CallComplianceV1)
    return event


def one_segment(
    kit: Any, scorer: ComplianceScorer, speaker: str, text: str, **kw: Any
) -> list[ComplianceFinding]:
    script = kit.script("call-one")
    return seg_findings(kit.replayer(scorer)([script.say(speaker, 1.0, text, **kw)])[0])


def test_card_number_from_redaction_span_and_token(kit: Any, scorer: ComplianceScorer) -> None:
    text = "sure it is [CARD_NUMBER] expiring [EXPIRY]"  # tokens as loopwise.redaction writes
    findings = one_segment(kit, scorer, "customer", text, redactions=[kit.card_span(text)])
    by_rule = {f.rule_id: f for f in findings}
    card = by_rule["card-number-spoken"]
    assert (card.category, card.severity) == ("card_data", "critical")
    assert card.evidence.text == "[CARD_NUMBER]"
    assert text[card.evidence.start : card.evidence.end] == "[CARD_NUMBER]"
    assert card.segment_id == "call-one-seg-001" == card.evidence.segment_id
    # No span for the expiry: the bare token in the text still counts.
    assert by_rule["card-security-data-spoken"].severity == "high"

    clean = one_segment(kit, scorer, "customer", "my card ends in four")
    assert not {"card-number-spoken", "card-security-data-spoken"} & rule_ids(clean)


def test_agent_asking_for_card_number(kit: Any, scorer: ComplianceScorer) -> None:
    findings = one_segment(kit, scorer, "agent", "Okay, can you read me your card number?")
    assert "agent-asks-card-number" in rule_ids(findings)


def test_prohibited_agent_language(kit: Any, scorer: ComplianceScorer) -> None:
    threat = one_segment(kit, scorer, "agent", "If you don't pay we will take you to court.")
    assert rule_ids(threat) == {"agent-threat"}
    assert threat[0].category == "prohibited_language"
    assert threat[0].severity == "critical"
    returns = one_segment(kit, scorer, "agent", "It's a guaranteed return of ten percent a year")
    assert rule_ids(returns) == {"agent-guaranteed-returns"}
    swear = one_segment(kit, scorer, "agent", "Oh for fucks sake, just hold on.")
    assert rule_ids(swear) == {"agent-profanity"}
    assert swear[0].evidence.text.lower().startswith("fuck")
    # The same words from the customer are not agent misconduct.
    customer = one_segment(kit, scorer, "customer", "we will take you to court")
    assert "agent-threat" not in rule_ids(customer)


def test_vulnerable_customer_cues(kit: Any, scorer: ComplianceScorer) -> None:
    cases = {
        "vulnerable-bereavement": "My husband passed away last month so I am sorting his bills",
        "vulnerable-illness": "I have been in hospital with chemotherapy all week",
        "vulnerable-financial-hardship": "I lost my job and I can't afford the payment",
    }
    for rule_id, text in cases.items():
        findings = one_segment(kit, scorer, "customer", text)
        assert rule_id in rule_ids(findings), (rule_id, text, findings)
        assert all(f.category == "vulnerable_customer" for f in findings if f.rule_id == rule_id)
    assert not rule_ids(one_segment(kit, scorer, "customer", "I can afford that, thanks"))


def test_escalation_cues(kit: Any, scorer: ComplianceScorer) -> None:
    cases = {
        "escalation-complaint": "I want to make a complaint about this",
        "escalation-cancel": "Just cancel my account then",
        "escalation-legal-regulator": "I'll be talking to my lawyer and the regulator",
        "escalation-frustration": "This is ridiculous, I have been waiting forever",
    }
    for rule_id, text in cases.items():
        findings = one_segment(kit, scorer, "customer", text)
        assert rule_id in rule_ids(findings), (rule_id, text)
    lawyer = one_segment(kit, scorer, "customer", cases["escalation-legal-regulator"])
    assert {f.severity for f in lawyer} == {"high"}


def test_phrase_rules_tolerate_asr_errors(kit: Any, scorer: ComplianceScorer) -> None:
    garbled = one_segment(kit, scorer, "customer", "I wanna speak to you manger right now")
    (finding,) = [f for f in garbled if f.rule_id == "escalation-complaint"]
    assert 0.85 <= finding.score < 1.0
    assert finding.evidence.text == "speak to you manger"
    assert finding.matched_phrase == "speak to your manager"
    fillers = one_segment(kit, scorer, "customer", "I, um, lost my uh job in May")
    assert "vulnerable-financial-hardship" in rule_ids(fillers)


def test_recording_notice_on_time_is_clean(kit: Any, scorer: ComplianceScorer) -> None:
    script = kit.script("call-ok")
    replay = kit.replayer(scorer)
    replay([script.started(), script.say("agent", 3.0, "Hi, this call is being recorded.")])
    result = call_result(replay([script.ended()])[0])
    assert result.findings == []
    assert result.segments_checked == 1
    assert result.producer.name == "default"
    assert result.rule_pack_hash == scorer.packs.default.content_hash


def test_recording_notice_late_and_never(kit: Any, scorer: ComplianceScorer) -> None:
    late = kit.script("call-late")
    replay = kit.replayer(scorer)
    replay(
        [
            late.started(),
            late.say("agent", 2.0, "Hello, you're through to billing."),
            late.say("customer", 7.0, "Hi, I have a question"),
            late.say("agent", 41.0, "By the way, this coal may be record it for training."),
        ]
    )
    (finding,) = call_result(replay([late.ended()])[0]).findings
    assert (finding.rule_id, finding.category, finding.severity) == (
        "recording-notice",
        "disclosure",
        "medium",
    )
    assert finding.segment_id == "call-late-seg-003"
    assert finding.evidence.start_s is not None and finding.evidence.start_s > 32.0
    assert finding.explanation and "deadline 32" in finding.explanation

    never = kit.script("call-never")
    replay = kit.replayer(scorer)
    replay([never.started(), never.say("agent", 1.0, "Hello, how can I help?")])
    (finding,) = call_result(replay([never.ended()])[0]).findings
    assert (finding.rule_id, finding.severity, finding.segment_id) == (
        "recording-notice",
        "high",
        None,
    )
    assert finding.explanation and finding.explanation.startswith("never said")


def test_mini_miranda_only_on_collections_queues(kit: Any, scorer: ComplianceScorer) -> None:
    def call_rules(queue: str, opening: str) -> set[str]:
        script = kit.script(f"call-{queue}", queue=queue)
        replay = kit.replayer(scorer)
        replay([script.started(), script.say("agent", 0.5, opening)])
        return rule_ids(list(call_result(replay([script.ended()])[0]).findings))

    notice = "Hello, this call is recorded."
    assert "mini-miranda" not in call_rules("billing", notice)
    assert "mini-miranda" in call_rules("collections-us", notice)
    miranda = notice + " This is an attempt to collect a debt."
    assert call_rules("collections-us", miranda) == set()


def test_account_details_before_verification(kit: Any, scorer: ComplianceScorer) -> None:
    early = kit.script("call-early")
    replay = kit.replayer(scorer)
    replay(
        [
            early.started(),
            early.say("agent", 1.0, "This call is recorded. Your balance is two hundred dollars."),
            early.say("agent", 6.0, "Can I take your date of birth and your postcode?"),
        ]
    )
    findings = call_result(replay([early.ended()])[0]).findings
    (finding,) = [f for f in findings if f.category == "identity_verification"]
    assert finding.rule_id == "account-details-before-verification"
    assert finding.segment_id == "call-early-seg-001"
    assert finding.evidence.text.lower() == "your balance is"

    # Two distinct security questions first, or an explicit "verified": no finding.
    for opening in (
        "Can I take your date of birth and your postcode?",
        "Thanks for verifying, that's all fine.",
        "Can you tell me your account number, please? Right, and your PIN as well.",
    ):
        ok = kit.script("call-ok")
        replay = kit.replayer(scorer)
        replay(
            [
                ok.started(),
                ok.say("agent", 1.0, "This call is recorded. " + opening),
                ok.say("agent", 9.0, "Your balance is two hundred dollars."),
            ]
        )
        assert call_result(replay([ok.ended()])[0]).findings == []


def test_call_rules_use_call_time_not_arrival_order(kit: Any, scorer: ComplianceScorer) -> None:
    script = kit.script("call-ooo")
    started = script.started()
    notice = script.say("agent", 2.0, "This call is recorded.")
    later = script.say("agent", 50.0, "Anything else?")
    replay = kit.replayer(scorer)
    replay([started, later, notice])  # the early segment arrives last
    assert call_result(replay([script.ended()])[0]).findings == []


def test_redelivered_events_are_not_counted_twice(kit: Any, scorer: ComplianceScorer) -> None:
    script = kit.script("call-dup")
    started = script.started()
    first = script.say("agent", 1.0, "Hello, this call is recorded.")
    second = script.say("customer", 5.0, "I want to make a complaint")
    replay = kit.replayer(scorer)
    outcomes = replay([started, first, second, second, first, started])
    # A redelivered segment is scored again (same findings, same ids downstream) ...
    assert seg_findings(outcomes[3]) == seg_findings(outcomes[2])
    # ... but leaves the call state alone.
    assert outcomes[3].state is None and outcomes[4].state is None and outcomes[5].state is None
    end = script.ended()
    result = call_result(replay([end])[0])
    assert result.segments_checked == 2
    # A redelivered CallEnded gets the stored result back; a second, different one gets nothing.
    again = call_result(replay([end])[0])
    assert again == result
    other = kit.script("call-dup").ended()
    assert replay([("another-end-id", other[1])])[0].outputs == []


def test_every_event_names_pack_and_sources(kit: Any, scorer: ComplianceScorer) -> None:
    script = kit.script("call-refs", tenant_id="acme-bank")
    replay = kit.replayer(scorer)
    event_id, event = script.say("customer", 1.0, "This is ridiculous")
    (out,) = replay([(event_id, event)])[0].outputs
    assert isinstance(out, SegmentComplianceV1)
    assert out.producer.name == "acme-bank"
    assert out.derived_from == [event_id]
    # acme-bank disables the default frustration rule.
    assert out.findings == []
    assert out.rule_pack_hash == scorer.packs.for_tenant("acme-bank").content_hash


def test_segment_after_call_end_revises_the_call_result(kit: Any, scorer: ComplianceScorer) -> None:
    script = kit.script("call-flush")
    replay = kit.replayer(scorer)
    replay([script.started(), script.say("agent", 1.0, "Hello, this call is recorded.")])
    decided = call_result(replay([script.ended()])[0])
    assert (decided.revision, decided.segments_checked, decided.findings) == (0, 1, [])
    # The transcriber flushes the last utterance after CallEnded.
    late = script.say("agent", 60.0, "Your balance is forty dollars, goodbye.")
    segment, revised = replay([late])[0].outputs
    assert isinstance(segment, SegmentComplianceV1) and isinstance(revised, CallComplianceV1)
    assert (revised.revision, revised.segments_checked) == (1, 2)
    assert rule_ids(list(revised.findings)) == {"account-details-before-verification"}
    assert late[0] in revised.derived_from
    # Redelivered: the same revision again, nothing counted twice.
    again = replay([late])[0]
    assert again.state is None
    assert again.outputs[1] == revised


def test_handling_an_event_never_changes_the_state_it_was_given(
    kit: Any, scorer: ComplianceScorer
) -> None:
    """The table keeps the old state until the batch is written: the handler must copy it.

    Every path that changes state runs here (start, segments with hits of every kind,
    the call decided, a late segment revising it) and each old state must read as it did.
    """
    script = kit.script("call-copy")
    replay = kit.replayer(scorer)
    events = [
        script.started(),
        script.say("agent", 1.0, "Hello, this call is recorded for quality and training."),
        script.say("customer", 5.0, "My husband died last month and I cannot pay."),
        script.say("agent", 9.0, "Your balance is forty dollars. Can I have your date of birth?"),
        script.ended(),
        script.say("agent", 60.0, "Thank you for verifying, your balance is forty dollars."),
    ]
    for event in events:
        before = replay.state
        dumped = before.model_dump() if before is not None else None
        written = set(before._written) if before is not None else None
        replay([event])
        assert replay.state is not before
        if before is not None:
            assert before.model_dump() == dumped
            assert before._written == written
    final = replay.state
    assert final is not None and final.revision == 1 and final.hits
    assert len(final.seen_segment_ids) == 4 and len(final.seen_event_ids) == 6
