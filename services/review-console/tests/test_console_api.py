"""The REST API: every endpoint and every error, cross-tenant access included."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from sqlalchemy import update

from loopwise.events import ReviewDecisionV1, ReviewTaskEscalatedV1, ReviewTaskExpiredV1
from loopwise.events.review import ConsoleAuditV1
from loopwise.topics import topic
from loopwise_console.schema import tasks
from loopwise_console.store import utcnow
from tests.support.card_numbers import holds_test_card

DECISIONS = topic("hitl.decisions")
AUDIT = topic("audit.console")


def audits(kit: Any) -> list[ConsoleAuditV1]:
    return [ConsoleAuditV1.model_validate_json(r["value"]) for r in kit.outbox(AUDIT)]


def error(resp: Any, status: int, code: str | None = None) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    body = resp.json()["error"]
    assert body["status"] == status and body["message"]
    if code is not None:
        assert body["code"] == code, body
    return dict(body)


def test_401_for_missing_unknown_and_malformed_credentials_each_audited(kit: Any) -> None:
    kit.add(kit.task("t-1"))
    error(kit.client.get("/api/v1/tasks"), 401, "unauthenticated")
    error(kit.client.get("/api/v1/tasks", headers={"Authorization": "Bearer lwc_nope"}), 401)
    error(kit.client.get("/api/v1/tasks/t-1", headers={"Authorization": "Basic abc"}), 401)
    found = audits(kit)
    assert [a.status for a in found] == [401, 401, 401]
    assert all(a.outcome == "denied" and a.auth == "none" for a in found)
    assert found[0].tenant_id == "loopwise-console"  # nobody known: the console's audit tenant
    assert found[2].tenant_id == "acme" and found[2].task_id == "t-1"  # the task's own tenant


def test_queue_filters_pagination_and_counts(kit: Any) -> None:
    kit.add(
        kit.task("a-1", priority="p1", queue="billing"),
        kit.task("a-2", priority="p2", queue="sales", kind="sample"),
        kit.task("a-3", priority="p2", queue="billing", due_in_s=-60, rule_ids=("late-rule",)),
        kit.task("b-1", tenant_id="other", priority="p1"),
    )
    auth = kit.token()
    page = kit.client.get("/api/v1/tasks", headers=auth).json()
    assert [t["task_id"] for t in page["items"]] == ["a-1", "a-3", "a-2"]  # p1, then due first
    assert page["total"] == 3 and page["counts"]["p2"]["open"] == 2
    assert page["counts"]["p2"]["overdue"] == 1 and page["counts"]["p1"]["oldest_age_s"] >= 29
    get = lambda **q: [  # noqa: E731
        t["task_id"]
        for t in kit.client.get("/api/v1/tasks", params=q, headers=auth).json()["items"]
    ]
    assert get(queue="billing") == ["a-1", "a-3"]
    assert get(priority="p2") == ["a-3", "a-2"]
    assert get(kind="sample") == ["a-2"]
    assert get(sla="overdue") == ["a-3"]
    assert get(sla="ok") == ["a-1", "a-2"]
    assert get(rule="late-rule") == ["a-3"]
    assert get(tenant="other") == []  # not the caller's tenant: nothing, as if absent
    second = kit.client.get("/api/v1/tasks", params={"limit": 2, "offset": 2}, headers=auth).json()
    assert [t["task_id"] for t in second["items"]] == ["a-2"] and second["total"] == 3
    error(kit.client.get("/api/v1/tasks", params={"limit": 100_000}, headers=auth), 422, "invalid")
    error(kit.client.get("/api/v1/tasks", params={"priority": "p9"}, headers=auth), 422)
    counts = kit.client.get("/api/v1/queue/counts", headers=auth).json()
    assert counts["p1"]["open"] == 1 and counts["p4"] == {
        "open": 0,
        "oldest_age_s": 0,
        "overdue": 0,
    }


def test_task_view_shows_why_it_was_held_and_another_tenant_gets_404(kit: Any) -> None:
    task = kit.task("v-1")
    kit.add(task, kit.routing(task))
    auth = kit.token()
    view = kit.client.get("/api/v1/tasks/v-1", headers=auth).json()
    assert view["held_because"]["conditions"] == [
        {"rule_id": "card-hold", "condition": "queue == billing", "observed": "billing"}
    ]
    assert view["held_because"]["policy_version"] == "sha256:test"
    assert view["segments"][1]["findings"][0]["evidence"]["text"] == "[CARD_NUMBER]"
    assert view["segments"][1]["sentiment_confidence"] == 0.66
    assert view["due_at"].endswith("Z") or "+00:00" in view["due_at"]
    stranger = kit.token(tenants=("other",), subject="stranger")
    absent = error(kit.client.get("/api/v1/tasks/v-1", headers=stranger), 404, "not_found")
    nothing = error(kit.client.get("/api/v1/tasks/nope", headers=stranger), 404, "not_found")
    assert absent["message"].replace("v-1", "nope") == nothing["message"]  # as if absent
    error(kit.client.post("/api/v1/tasks/v-1/claim", headers=stranger), 404)
    denied = [a for a in audits(kit) if a.status == 404]
    assert {a.tenant_id for a in denied if a.task_id == "v-1"} == {"acme"}  # acme's auditors see it
    assert all(a.actor_id == "stranger" for a in denied)


def test_claim_lease_release_and_conflicts(kit: Any) -> None:
    kit.add(kit.task("c-1"))
    ann, bob = kit.token(subject="ann"), kit.token(subject="bob")
    claimed = kit.client.post("/api/v1/tasks/c-1/claim", headers=ann).json()
    assert claimed["claimed_by"] == "ann" and claimed["lease_until"]
    error(kit.client.post("/api/v1/tasks/c-1/claim", headers=bob), 409, "already_claimed")
    error(kit.client.post("/api/v1/tasks/c-1/release", headers=bob), 409, "not_claimed")
    assert kit.client.post("/api/v1/tasks/c-1/claim", headers=ann).status_code == 200  # extend
    released = kit.client.post("/api/v1/tasks/c-1/release", headers=ann).json()
    assert released["claimed_by"] is None
    assert kit.client.post("/api/v1/tasks/c-1/claim", headers=bob).json()["claimed_by"] == "bob"
    # bob's lease runs out: ann may take it, and bob's decision is refused (lease lost)
    with kit.store.write() as conn:
        conn.execute(update(tasks).values(lease_until=utcnow() - timedelta(seconds=1)))
    error(
        kit.client.post("/api/v1/tasks/c-1/decision", json={"verdict": "approve"}, headers=bob),
        409,
        "lease_lost",
    )
    assert kit.client.post("/api/v1/tasks/c-1/claim", headers=ann).json()["claimed_by"] == "ann"
    error(
        kit.client.post("/api/v1/tasks/c-1/decision", json={"verdict": "approve"}, headers=bob),
        409,
        "not_claimed",
    )
    metrics = kit.client.app  # the counters live in the process registry
    from prometheus_client import REGISTRY

    assert (REGISTRY.get_sample_value("loopwise_review_claim_conflicts_total") or 0) >= 1
    assert metrics is not None


def test_decision_goes_to_the_outbox_with_corrections_redacted_and_is_audited(kit: Any) -> None:
    task = kit.task("d-1")
    kit.add(task)
    auth = kit.token(subject="ann")
    error(
        kit.client.post("/api/v1/tasks/d-1/decision", json={"verdict": "approve"}, headers=auth),
        409,
        "not_claimed",
    )
    kit.client.post("/api/v1/tasks/d-1/claim", headers=auth)
    body = {
        "verdict": "approve",
        "transcript_corrections": [
            {
                "segment_id": "seg-001",
                "text": "my card is 4111 1111 1111 1111 and I am really unhappy",
            }
        ],
        "sentiment_labels": [{"segment_id": "seg-001", "label": "negative"}],
        "finding_verdicts": [
            {"finding_id": "call-d-1/seg-001/card", "verdict": "confirmed", "note": "read out"}
        ],
        "comment": "ok",
    }
    bad = {**body, "transcript_corrections": [{"segment_id": "seg-999", "text": "x"}]}
    error(
        kit.client.post("/api/v1/tasks/d-1/decision", json=bad, headers=auth),
        422,
        "unknown_segment",
    )
    bad = {**body, "finding_verdicts": [{"finding_id": "nope", "verdict": "confirmed"}]}
    error(
        kit.client.post("/api/v1/tasks/d-1/decision", json=bad, headers=auth),
        422,
        "unknown_finding",
    )
    error(
        kit.client.post("/api/v1/tasks/d-1/decision", json={"verdict": "maybe"}, headers=auth), 422
    )
    error(kit.client.post("/api/v1/tasks/d-1/decision", json={**body, "x": 1}, headers=auth), 422)
    done = kit.client.post("/api/v1/tasks/d-1/decision", json=body, headers=auth).json()
    assert done["state"] == "decided" and done["decision_id"]
    [row] = kit.outbox(DECISIONS)
    decision = ReviewDecisionV1.model_validate_json(row["value"])
    assert row["key"] == "call-d-1" and row["published_at"] is None
    assert decision.decision_id == done["decision_id"] and decision.reviewer_id == "ann"
    assert decision.transcript_corrections[0].text == (
        "my card is [CARD_NUMBER] and I am really unhappy"
    )  # a card number typed by a reviewer is redacted like any transcript
    assert not holds_test_card(json.dumps([r["value"] for r in kit.outbox()]))
    assert decision.finding_verdicts[0].rule_id == "card_data.spoken"
    assert decision.finding_verdicts[0].note == "read out"
    assert decision.seconds_to_decide is not None
    assert any(
        a.action == "task.decide" and a.decision_id == decision.decision_id for a in audits(kit)
    )
    error(kit.client.post("/api/v1/tasks/d-1/claim", headers=auth), 409, "task_decided")
    error(kit.client.post("/api/v1/tasks/d-1/decision", json=body, headers=auth), 409)
    assert (
        kit.client.get("/api/v1/tasks", params={"state": "decided"}, headers=auth).json()["total"]
        == 1
    )


def test_roles_auditor_reads_only_reviewer_cannot_supervise(kit: Any) -> None:
    kit.add(kit.task("r-1"))
    auditor, reviewer = kit.token("auditor"), kit.token("reviewer", subject="rev")
    assert kit.client.get("/api/v1/tasks/r-1", headers=auditor).status_code == 200
    error(kit.client.post("/api/v1/tasks/r-1/claim", headers=auditor), 403, "forbidden")
    error(kit.client.post("/api/v1/tasks/r-1/rework", json={"note": "x"}, headers=reviewer), 403)
    error(
        kit.client.post("/api/v1/tasks/r-1/assign", json={"reviewer_id": "x"}, headers=reviewer),
        403,
    )
    error(kit.client.get("/api/v1/supervisor/overview", headers=reviewer), 403)
    error(kit.client.get("/api/v1/supervisor/alerts", headers=reviewer), 403)
    new = {"subject": "x", "role": "reviewer", "tenants": ["acme"]}
    error(kit.client.post("/api/v1/tokens", json=new, headers=reviewer), 403)
    assert sum(a.status == 403 for a in audits(kit)) == 6
    me = kit.client.get("/api/v1/me", headers=auditor).json()
    assert me["role"] == "auditor" and me["tenants"] == ["acme"]


def test_admin_creates_tokens_only_for_its_tenants(kit: Any) -> None:
    admin = kit.token("admin")
    made = kit.client.post(
        "/api/v1/tokens",
        json={"subject": "new-rev", "role": "reviewer", "tenants": ["acme"]},
        headers=admin,
    )
    assert made.status_code == 201
    token = made.json()["token"]
    me = kit.client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"}).json()
    assert me["subject"] == "new-rev"
    error(
        kit.client.post(
            "/api/v1/tokens",
            json={"subject": "x", "role": "admin", "tenants": ["other"]},
            headers=admin,
        ),
        403,
    )
    from sqlalchemy import select

    from loopwise_console.schema import tokens

    with kit.store.read() as conn:
        stored = [r.token_hash for r in conn.execute(select(tokens))]
    assert token not in stored and all(len(h) == 64 for h in stored)  # only hashes are kept


def test_second_opinion_agreement_dispute_and_supervisor(make_kit: Any) -> None:
    kit = make_kit(second_opinion=["p1"])
    kit.add(kit.task("s-1", priority="p1"), kit.task("s-2", priority="p1"))
    ann, bob = kit.token(subject="ann"), kit.token(subject="bob")
    sup = kit.token("supervisor", subject="sue")
    approve = {"verdict": "approve"}
    for task_id, second in (("s-1", "approve"), ("s-2", "reject")):
        kit.client.post(f"/api/v1/tasks/{task_id}/claim", headers=ann)
        first = kit.client.post(
            f"/api/v1/tasks/{task_id}/decision", json=approve, headers=ann
        ).json()
        assert first["state"] == "second_opinion" and first["decision_id"] is None
        error(
            kit.client.post(f"/api/v1/tasks/{task_id}/claim", headers=ann),
            409,
            "second_opinion_needed",
        )
        kit.client.post(f"/api/v1/tasks/{task_id}/claim", headers=bob)
        out = kit.client.post(
            f"/api/v1/tasks/{task_id}/decision", json={"verdict": second}, headers=bob
        )
        assert out.json()["state"] == ("decided" if second == "approve" else "disputed")
    assert len(kit.outbox(DECISIONS)) == 1  # the agreed one only
    error(kit.client.post("/api/v1/tasks/s-2/claim", headers=ann), 403)  # disputed: supervisors
    kit.client.post("/api/v1/tasks/s-2/claim", headers=sup)
    settled = kit.client.post(
        "/api/v1/tasks/s-2/decision", json={"verdict": "reject"}, headers=sup
    ).json()
    assert settled["state"] == "decided"
    decisions = [ReviewDecisionV1.model_validate_json(r["value"]) for r in kit.outbox(DECISIONS)]
    assert decisions[1].verdict == "reject" and "supervisor" in (decisions[1].comment or "")
    overview = kit.client.get("/api/v1/supervisor/overview", headers=sup).json()
    assert overview["agreement"] == {"pairs": 2, "agreed": 1, "rate": 0.5}
    assert {w["reviewer_id"] for w in overview["workload"]} == {"ann", "bob", "sue"}


def test_blind_review_hides_model_labels_until_the_reviewer_gave_theirs(make_kit: Any) -> None:
    kit = make_kit(blind_review=True)
    kit.add(kit.task("b-1"))
    auth = kit.token(subject="ann")
    view = kit.client.get("/api/v1/tasks/b-1", headers=auth).json()
    assert view["blind"]["model_labels_hidden"] is True
    assert {s["sentiment_label"] for s in view["segments"]} == {None}
    labels = {"labels": [{"segment_id": "seg-001", "label": "negative"}]}
    error(
        kit.client.post("/api/v1/tasks/b-1/labels", json=labels, headers=auth), 409, "not_claimed"
    )
    kit.client.post("/api/v1/tasks/b-1/claim", headers=auth)
    error(kit.client.post("/api/v1/tasks/b-1/labels", json={"labels": []}, headers=auth), 422)
    assert kit.client.post("/api/v1/tasks/b-1/labels", json=labels, headers=auth).status_code == 200
    view = kit.client.get("/api/v1/tasks/b-1", headers=auth).json()
    assert (
        view["segments"][1]["sentiment_label"] == "negative"
        and not view["blind"]["model_labels_hidden"]
    )
    assert view["blind"]["own_labels"] == {"seg-001": "negative"}


def test_supervisor_reassigns_sends_back_and_sees_overdue(kit: Any) -> None:
    kit.add(kit.task("o-1", due_in_s=-5), kit.task("o-2"))
    sup, ann = kit.token("supervisor", subject="sue"), kit.token(subject="ann")
    overview = kit.client.get("/api/v1/supervisor/overview", headers=sup).json()
    assert [t["task_id"] for t in overview["overdue"]] == ["o-1"]
    assigned = kit.client.post("/api/v1/tasks/o-1/assign", json={"reviewer_id": "ann"}, headers=sup)
    assert assigned.json()["claimed_by"] == "ann"
    error(
        kit.client.post("/api/v1/tasks/o-1/assign", json={"reviewer_id": "a b"}, headers=sup), 422
    )
    back = kit.client.post(
        "/api/v1/tasks/o-1/rework", json={"note": "listen again"}, headers=sup
    ).json()
    assert back["state"] == "open" and back["claimed_by"] is None
    assert kit.client.get("/api/v1/tasks/o-1", headers=ann).json()["note"] == "listen again"
    kit.client.post("/api/v1/tasks/o-2/claim", headers=ann)
    kit.client.post("/api/v1/tasks/o-2/decision", json={"verdict": "reject"}, headers=ann)
    error(
        kit.client.post("/api/v1/tasks/o-2/rework", json={"note": "x"}, headers=sup),
        409,
        "task_decided",
    )
    assert {a.action for a in audits(kit)} >= {"task.assign", "task.rework", "task.decide"}


def test_escalation_and_expiry_events_change_the_task(kit: Any) -> None:
    task = kit.task("e-1", priority="p3")
    kit.add(task)
    auth = kit.token(subject="ann")
    kit.client.post("/api/v1/tasks/e-1/claim", headers=auth)
    common = {
        "tenant_id": "acme",
        "call_id": task.call_id,
        "occurred_at": task.occurred_at,
        "producer": task.producer,
    }
    kit.add(
        ReviewTaskEscalatedV1(
            **common, task_id="e-1", level=1, priority="p1", due_at=task.due_at, reason="sla"
        )
    )
    assert kit.client.get("/api/v1/tasks/e-1", headers=auth).json()["priority"] == "p1"
    kit.add(
        ReviewTaskExpiredV1(**common, task_id="e-1", reason="final deadline", action="kept_held")
    )
    error(
        kit.client.post("/api/v1/tasks/e-1/decision", json={"verdict": "approve"}, headers=auth),
        409,
        "task_expired",
    )


def test_replayed_events_add_nothing(kit: Any) -> None:
    task = kit.task("i-1")
    from loopwise.events import Envelope

    env = Envelope(type=task.event_type, source="test", id="fixed-id")
    first = kit.store.materialise([(env, task)])
    again = kit.store.materialise([(env, task), (Envelope(type=task.event_type, source="t"), task)])
    assert (first.applied, again.applied, again.duplicates, again.ignored) == (1, 0, 1, 1)
    assert kit.client.get("/api/v1/tasks", headers=kit.token()).json()["total"] == 1


def test_413_body_limit_and_429_rate_limit(make_kit: Any) -> None:
    kit = make_kit(limits={"max_body_bytes": 2048, "requests_per_minute": 5})
    kit.add(kit.task("l-1"))
    auth = kit.token()
    big = {"verdict": "approve", "comment": "x" * 5000}
    error(kit.client.post("/api/v1/tasks/l-1/decision", json=big, headers=auth), 413, "too_large")
    statuses = [kit.client.get("/api/v1/me", headers=auth).status_code for _ in range(8)]
    assert statuses[:4] == [200] * 4 and statuses[-1] == 429
    assert {413, 429} <= {a.status for a in audits(kit)}


def test_metrics_are_exposed_with_the_agreed_names(kit: Any) -> None:
    from prometheus_client import REGISTRY, generate_latest

    from loopwise_console.service import refresh_gauges

    kit.add(kit.task("m-1", priority="p1", due_in_s=-1), kit.task("m-2", priority="p2"))
    refresh_gauges(kit.store)
    text = generate_latest(REGISTRY).decode()
    for name in (
        'loopwise_review_queue_depth{priority="p1"} 1.0',
        "loopwise_review_queue_oldest_age_seconds",
        'loopwise_review_decisions_total{verdict="approve"}',
        "loopwise_review_claim_conflicts_total",
        "loopwise_review_outbox_backlog",
        'loopwise_review_sla_breaches_total{priority="p1"}',
    ):
        assert name in text, name
    before = REGISTRY.get_sample_value("loopwise_review_sla_breaches_total", {"priority": "p1"})
    refresh_gauges(kit.store)  # a breach is counted once
    assert (
        REGISTRY.get_sample_value("loopwise_review_sla_breaches_total", {"priority": "p1"})
        == before
    )


def test_alerts_stream_realtime_tasks_as_server_sent_events(kit: Any) -> None:
    kit.add(kit.task("rt-0", mode="realtime"))
    sup = kit.token("supervisor")
    kit.add(kit.task("rt-1", mode="realtime", priority="p1"), kit.task("pc-1"))
    with kit.client.stream(
        "GET", "/api/v1/supervisor/alerts", params={"after": 1, "max_s": 1}, headers=sup
    ) as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        text = "".join(resp.iter_text())
    events = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ")]
    assert [e["task_id"] for e in events] == ["rt-1"]  # after seq 1, realtime only
    assert "event: alert" in text and events[0]["reasons"]


def test_unknown_route_and_ui_redirects_to_sign_in(kit: Any) -> None:
    error(kit.client.get("/api/v1/nothing"), 404, "not_found")
    page = kit.client.get("/ui/queue", follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"] == "/ui/login"
