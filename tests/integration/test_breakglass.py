"""Break-the-glass over loopback HTTP, on SQLite and PostgreSQL: declaring, using
a declaration within and after its 72 hours, who may declare, the privacy
officer's review queue with its overdue flag, and what reaches the audit log."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from audit.models import AuditEntry
from tests.conftest import (
    AGENCIES,
    Harness,
    broker_settings,
    clean,
    register_partners,
    serve_broker,
)
from tests.integration.conftest import PRIVACY_OFFICER, Clock, Timed

P01 = "999990007"  # Ruben
DECLARED_AT = datetime.fromisoformat("2026-09-02T23:05:00+02:00")
JUSTIFICATION = "Knife threat witnessed by the children; FACT-team unreachable"
AGREEMENT = "agr-zvh-mdaplusplus"
PURPOSE = "zorginformatie_casusoverleg"
CONTEXT = {"mda_case_id": "MDA-LB-2026-015", "mda_case_status": "actief"}


def declaration(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "ACU-T1",
        "agreement_id": AGREEMENT,
        "purpose_id": PURPOSE,
        "subjects": [P01],
        "justification": JUSTIFICATION,
        "evidence": {
            "vt_safety_assessment": {"acute_onveilig": True, "date": "2026-09-02T23:00:00+02:00"}
        },
    }
    body.update(overrides)
    return body


def police_request(declaration_id: str | None = "ACU-T1") -> dict[str, Any]:
    request: dict[str, Any] = {
        "agreement_id": AGREEMENT,
        "purpose_id": PURPOSE,
        "provider": {"party": "ggz"},
        "subjects": [P01],
        "elements": ["health.treating_professional_contact", "health.diagnosis"],
        "context": CONTEXT,
    }
    if declaration_id is not None:
        request["acute_declaration_id"] = declaration_id
    return request


async def entries(timed: Timed, **where: Any) -> list[AuditEntry]:
    async with timed.harness.broker.services.db.session() as session:
        stmt = select(AuditEntry).order_by(AuditEntry.seq)
        for name, value in where.items():
            stmt = stmt.where(getattr(AuditEntry, name) == value)
        return list((await session.scalars(stmt)).all())


async def test_declare_use_and_expire(timed: Timed) -> None:
    timed.clock.now = DECLARED_AT
    created = await timed.call("veilig_thuis", "POST", "/v1/acute-declarations", declaration())
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["id"] == "ACU-T1"
    assert body["subjects"] == [P01] and body["subject_count"] == 1
    assert body["declared_by_party"] == "veilig_thuis" and body["active"]
    assert datetime.fromisoformat(body["expires_at"]) == DECLARED_AT + timedelta(hours=72)
    assert datetime.fromisoformat(body["review_due_at"]) == DECLARED_AT + timedelta(days=5)
    assert (body["review_status"], body["overdue"]) == ("pending", False)

    # Within 72 hours: the police get the acute whitelist only.
    timed.clock.now = DECLARED_AT + timedelta(hours=1, minutes=10)
    used = await timed.exchange("politie", police_request())
    reasons = {i["element"]: i for i in used["items"]}
    contact = reasons["health.treating_professional_contact"]
    assert (contact["reason"], contact["acute_declaration_id"]) == ("allow_break_glass", "ACU-T1")
    assert reasons["health.diagnosis"]["reason"] == "deny_element_not_allowed"
    decision = [
        json.loads(e.entry)
        for e in await entries(timed, exchange_id=used["exchange_id"], kind="decision")
    ]
    allowed = [d for d in decision if d["reason"] == "allow_break_glass"]
    assert allowed and all(d["acute_declaration_id"] == "ACU-T1" for d in allowed)

    # Without the declaration the police are no recipient at all.
    without = await timed.exchange("politie", police_request(None))
    assert {i["reason"] for i in without["items"]} == {"deny_purpose_mismatch"}

    # After 72 hours it is expired.
    timed.clock.now = DECLARED_AT + timedelta(hours=72)
    expired = await timed.exchange("politie", police_request())
    assert {i["reason"] for i in expired["items"]} == {"deny_break_glass_expired"}
    got = await timed.call("veilig_thuis", "GET", "/v1/acute-declarations/ACU-T1")
    assert got.status_code == 200
    assert (got.json()["active"], got.json()["subjects"]) == (False, None)

    # The audit log has the declaration without the justification or any BSN.
    declared = await entries(timed, kind="acute_declared")
    assert len(declared) == 1
    entry = json.loads(declared[0].entry)
    assert entry["acute_declaration_id"] == "ACU-T1"
    assert entry["evidence_keys"] == ["vt_safety_assessment"]
    for e in await entries(timed):
        assert JUSTIFICATION not in e.entry and P01 not in e.entry


async def test_who_may_declare_and_read(timed: Timed) -> None:
    school = await timed.call("school", "POST", "/v1/acute-declarations", declaration())
    assert (school.status_code, school.json()["code"]) == (403, "not_declarable")
    statutory = await timed.call(
        "veilig_thuis",
        "POST",
        "/v1/acute-declarations",
        declaration(purpose_id="veiligheidsoverleg"),
    )
    assert (statutory.status_code, statutory.json()["code"]) == (
        422,
        "acute_danger_not_applicable",
    )
    cases: list[tuple[dict[str, Any], str, str]] = [
        (declaration(subjects=["123456789"]), "invalid_bsn", "subjects[0]"),
        (declaration(justification=" "), "validation_failed", "justification"),
        (declaration(justification="x" * 2001), "validation_failed", "justification"),
        (declaration(evidence={"Free Text": "..."}), "invalid_evidence", "evidence"),
        (declaration(evidence={}), "validation_failed", "evidence"),
        (declaration(purpose_id="nope"), "unknown_purpose", "purpose_id"),
    ]
    for body, code, field in cases:
        response = await timed.call("politie", "POST", "/v1/acute-declarations", body)
        assert response.status_code == 422, response.text
        assert (response.json()["code"], response.json()["field"]) == (code, field)

    ok = await timed.call("politie", "POST", "/v1/acute-declarations", declaration(id=None))
    assert ok.status_code == 201, ok.text
    declaration_id = ok.json()["id"]
    assert declaration_id.startswith("ACU-")
    mine = await timed.call("politie", "GET", f"/v1/acute-declarations/{declaration_id}")
    assert mine.status_code == 200 and mine.json()["justification"] == JUSTIFICATION
    theirs = await timed.call("veilig_thuis", "GET", f"/v1/acute-declarations/{declaration_id}")
    assert theirs.status_code == 404

    unknown = await timed.exchange_response("politie", police_request("ACU-NONE"))
    assert unknown.status_code == 422
    assert (unknown.json()["code"], unknown.json()["field"]) == (
        "unknown_acute_declaration",
        "acute_declaration_id",
    )


async def test_a_declaration_for_another_purpose_is_not_used(timed: Timed) -> None:
    created = await timed.call("veilig_thuis", "POST", "/v1/acute-declarations", declaration())
    assert created.status_code == 201
    other = await timed.exchange(
        "veilig_thuis",
        {
            "agreement_id": AGREEMENT,
            "purpose_id": "plan_van_aanpak_en_voortgang",
            "provider": {"party": "gemeente_wijkteam"},
            "subjects": [P01],
            "elements": ["mda.progress_phase"],
            "context": CONTEXT,
            "acute_declaration_id": "ACU-T1",
        },
    )
    assert other["items"][0]["reason"] == "deny_consent_missing"
    assert other["items"][0]["acute_declaration_id"] is None


async def test_review_queue_overdue_and_review(timed: Timed) -> None:
    timed.clock.now = DECLARED_AT
    created = await timed.call("veilig_thuis", "POST", "/v1/acute-declarations", declaration())
    assert created.status_code == 201
    queue = "/v1/review/acute-declarations"

    denied = await timed.call("veilig_thuis", "GET", queue)
    assert (denied.status_code, denied.json()["code"]) == (403, "not_a_privacy_officer")
    review_denied = await timed.call(
        "veilig_thuis", "POST", f"{queue}/ACU-T1", {"decision": "approve"}
    )
    assert review_denied.status_code == 403

    pending = await timed.call(PRIVACY_OFFICER, "GET", queue)
    assert pending.status_code == 200, pending.text
    assert [(d["id"], d["overdue"]) for d in pending.json()] == [("ACU-T1", False)]
    assert pending.json()[0]["justification"] == JUSTIFICATION

    timed.clock.now = DECLARED_AT + timedelta(days=5, minutes=1)
    late = await timed.call(PRIVACY_OFFICER, "GET", queue)
    assert [(d["id"], d["overdue"]) for d in late.json()] == [("ACU-T1", True)]

    no_comment = await timed.call(
        PRIVACY_OFFICER, "POST", f"{queue}/ACU-T1", {"decision": "question"}
    )
    assert (no_comment.status_code, no_comment.json()["field"]) == (422, "comment")
    comment = "Evidence date precedes the incident report; ask Veilig Thuis"
    reviewed = await timed.call(
        PRIVACY_OFFICER, "POST", f"{queue}/ACU-T1", {"decision": "question", "comment": comment}
    )
    assert reviewed.status_code == 200, reviewed.text
    body = reviewed.json()
    assert (body["review_status"], body["overdue"]) == ("questioned", False)
    assert body["reviewed_by"] == AGENCIES[PRIVACY_OFFICER]
    twice = await timed.call(PRIVACY_OFFICER, "POST", f"{queue}/ACU-T1", {"decision": "approve"})
    assert (twice.status_code, twice.json()["code"]) == (409, "already_reviewed")
    missing = await timed.call(
        PRIVACY_OFFICER, "POST", f"{queue}/ACU-NONE", {"decision": "approve"}
    )
    assert missing.status_code == 404

    assert (await timed.call(PRIVACY_OFFICER, "GET", queue)).json() == []
    everything = await timed.call(PRIVACY_OFFICER, "GET", queue + "?status=all")
    assert [d["review_status"] for d in everything.json()] == ["questioned"]
    # Privacy officers may also read the declaration itself.
    assert (await timed.call(PRIVACY_OFFICER, "GET", "/v1/acute-declarations/ACU-T1")).is_success

    review_entry = json.loads((await entries(timed, kind="acute_declaration_reviewed"))[0].entry)
    assert review_entry["review"] == "questioned" and review_entry["overdue"] is True
    assert comment not in json.dumps(review_entry)


async def test_logs_hold_no_justification_or_bsn(
    sqlite_url: str,
    simulators: dict[str, Any],
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    clean(sqlite_url)
    settings = broker_settings(
        sqlite_url, simulators, tmp_path, log_level="INFO", log_format="json"
    )
    partners = await register_partners(settings, simulators)
    clock = Clock(DECLARED_AT)
    async with serve_broker(settings, clock) as broker:
        timed = Timed(Harness(broker, partners), clock)
        created = await timed.call("veilig_thuis", "POST", "/v1/acute-declarations", declaration())
        assert created.status_code == 201
        clock.advance(minutes=30)
        used = await timed.exchange("politie", police_request())
        assert used["items"][0]["reason"] == "allow_break_glass"
    err = capfd.readouterr().err
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert any(line.get("event") == "breakglass.declared" for line in lines)
    assert JUSTIFICATION not in err
    assert P01 not in err
