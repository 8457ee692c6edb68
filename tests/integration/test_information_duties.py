"""AVG art. 14 information duties over loopback HTTP, on SQLite and PostgreSQL:
a release records one duty per subject with its due date; an embargo needs a
reason and a running safety investigation and is lifted when the investigation
ends or at the agreement's maximum; overdue duties are listed for the privacy
officer; a duty that cannot be recorded stops the release; nothing stores a BSN."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, select, text

from audit.models import AuditEntry
from broker.exchange.models import Exchange
from broker.information_duties.models import DutyEmbargo, InformationDuty, SafetyInvestigation
from tests.conftest import AGENCIES, Harness, broker_settings, register_partners, serve_broker
from tests.integration.conftest import PRIVACY_OFFICER, Clock, Timed
from tests.integration.test_review_ui import Review

P01 = "999990007"  # Ruben, adult (suspect)
P02 = "999990019"  # Sanne, mother
P03 = "999990020"  # Noor, 13, joint authority of P01 and P02
BSNS = (P01, P02, P03)
RELEASED_AT = datetime.fromisoformat("2026-03-14T02:40:00+01:00")
# One month later on the Dutch calendar (summer time began on 29 March).
DUE_AT = datetime.fromisoformat("2026-04-14T02:40:00+02:00")
REASON = "Informing the parents now would endanger Noor during the safety assessment"
CASE = "VT-LB-2026-0042"
DUTIES = "/v1/information-duties"

CARE_REPORT = {
    "agreement_id": "agr-vt-politie-hg",
    "purpose_id": "zorgmelding_na_incident",
    "provider": {"party": "politie"},
    "subjects": [P01, P03],
    "elements": ["person.name", "police.dv_incident", "police.suspect_history_dv"],
    "context": {"police_incident_id": "PL-LB-2026-0314-0042"},
}


@pytest.fixture
async def timed(
    database_url: str, simulators: dict[str, Any], tmp_path: Path
) -> AsyncIterator[Timed]:
    """As tests/integration/conftest.py, with lapsed embargoes lifted every 0.1 s."""
    clock = Clock(RELEASED_AT)
    settings = broker_settings(
        database_url,
        simulators,
        tmp_path,
        privacy_officers=AGENCIES[PRIVACY_OFFICER],
        information_duty_run_seconds=0.1,
        # Duties follow released items only: a loaded test machine must not turn
        # a slow simulated partner into "unavailable".
        adapter_timeout_seconds=15.0,
        register_timeout_seconds=15.0,
    )
    partners = await register_partners(settings, simulators)
    async with serve_broker(settings, clock) as broker:
        yield Timed(Harness(broker, partners), clock)


async def release(timed: Timed) -> tuple[str, dict[str, dict[str, Any]]]:
    """The care report; returns the exchange id and its duties by addressee rule."""
    body = await timed.exchange("veilig_thuis", CARE_REPORT)
    released = {i["element"] for i in body["items"] if i["status"] == "released"}
    assert released == {"person.name", "police.dv_incident"}, body["items"]
    listed = await timed.call("veilig_thuis", "GET", f"{DUTIES}?exchange_id={body['exchange_id']}")
    assert listed.status_code == 200, listed.text
    return body["exchange_id"], {d["addressee_rule"]: d for d in listed.json()}


async def entries(timed: Timed, kind: str) -> list[dict[str, Any]]:
    async with timed.harness.broker.services.db.session() as session:
        rows = await session.scalars(
            select(AuditEntry).where(AuditEntry.kind == kind).order_by(AuditEntry.seq)
        )
        return [json.loads(e.entry) for e in rows]


async def stored_text(timed: Timed) -> str:
    """Every stored duty, embargo and investigation row, and every audit entry."""
    out: list[str] = []
    async with timed.harness.broker.services.db.session() as session:
        for model in (InformationDuty, DutyEmbargo, SafetyInvestigation):
            for row in await session.scalars(select(model)):
                out.append(
                    json.dumps({c.key: str(getattr(row, c.key)) for c in model.__mapper__.columns})
                )
        out.extend(e.entry for e in await session.scalars(select(AuditEntry)))
    return "\n".join(out)


async def test_release_records_duties_and_overdue_ones_are_listed(timed: Timed) -> None:
    exchange_id, duties = await release(timed)
    assert set(duties) == {"subject", "authority_holders"}
    adult, child = duties["subject"], duties["authority_holders"]
    vt, police = AGENCIES["veilig_thuis"], AGENCIES["politie"]
    for duty in (adult, child):
        assert duty["exchange_id"] == exchange_id
        assert (duty["holder_oin"], duty["recipient_oin"], duty["provider_oin"]) == (vt, vt, police)
        assert duty["elements"] == ["person.name", "police.dv_incident"]  # not the denied one
        assert "wpg_20" in duty["legal_basis_ids"]
        assert duty["duty_basis_ids"] == ["avg_14_informatieplicht"]
        assert datetime.fromisoformat(duty["released_at"]) == RELEASED_AT
        assert datetime.fromisoformat(duty["due_at"]) == DUE_AT
        assert (duty["status"], duty["overdue"], duty["embargo"]) == ("open", False, None)
        assert duty["subject_key"].startswith("psn:")
    # A 13-year-old's parents are informed: both holders of authority, as pseudonyms.
    assert adult["addressees"] == [adult["subject_key"]]
    assert len(child["addressees"]) == 2
    assert adult["subject_key"] in child["addressees"]  # Ruben holds authority over Noor
    assert all(a.startswith("psn:") for a in child["addressees"])

    recorded = await entries(timed, "information_duty_recorded")
    assert {e["information_duty_id"] for e in recorded} == {adult["id"], child["id"]}
    assert all(e["exchange"] == exchange_id for e in recorded)

    # Who sees what: the parties to the release; the privacy officer everything.
    assert (await timed.call("politie", "GET", f"{DUTIES}/{child['id']}")).status_code == 200
    assert (await timed.call("school", "GET", f"{DUTIES}/{child['id']}")).status_code == 404
    assert (await timed.call("school", "GET", DUTIES)).json() == []

    overdue = f"{DUTIES}?status=overdue"
    assert (await timed.call(PRIVACY_OFFICER, "GET", overdue)).json() == []
    timed.clock.now = DUE_AT + timedelta(minutes=1)
    late = await timed.call(PRIVACY_OFFICER, "GET", overdue)
    assert late.status_code == 200, late.text
    assert {d["id"] for d in late.json()} == {adult["id"], child["id"]}
    assert all(d["overdue"] for d in late.json())

    # Fulfilled by the agency that must inform (not by the provider), with evidence.
    fulfilment = {
        "informed_at": (DUE_AT - timedelta(days=1)).isoformat(),
        "method": "letter",
        "evidence_reference": "VT-DOC-2026-1187",
    }
    by_police = await timed.call(
        "politie", "POST", f"{DUTIES}/{adult['id']}/fulfilment", fulfilment
    )
    assert by_police.status_code == 403
    future = dict(fulfilment, informed_at=(DUE_AT + timedelta(days=1)).isoformat())
    bad = await timed.call("veilig_thuis", "POST", f"{DUTIES}/{adult['id']}/fulfilment", future)
    assert (bad.status_code, bad.json()["code"], bad.json()["field"]) == (
        422,
        "invalid_time",
        "informed_at",
    )
    done = await timed.call(
        "veilig_thuis", "POST", f"{DUTIES}/{adult['id']}/fulfilment", fulfilment
    )
    assert done.status_code == 200, done.text
    assert (done.json()["status"], done.json()["fulfil_method"]) == ("fulfilled", "letter")
    again = await timed.call(
        "veilig_thuis", "POST", f"{DUTIES}/{adult['id']}/fulfilment", fulfilment
    )
    assert (again.status_code, again.json()["code"]) == (409, "already_fulfilled")
    assert [d["id"] for d in (await timed.call(PRIVACY_OFFICER, "GET", overdue)).json()] == [
        child["id"]
    ]
    (fulfilled,) = await entries(timed, "information_duty_fulfilled")
    assert (fulfilled["information_duty_id"], fulfilled["late"]) == (adult["id"], False)

    stored = await stored_text(timed)
    assert not any(bsn in stored for bsn in BSNS)


async def test_embargo_needs_a_reason_and_lifts_when_the_investigation_ends(timed: Timed) -> None:
    _, duties = await release(timed)
    duty = duties["authority_holders"]
    url = f"{DUTIES}/{duty['id']}/embargo"
    good = {"reason": REASON, "investigation_reference": CASE}

    for body, field in [
        ({"investigation_reference": CASE}, "reason"),
        ({"reason": "   ", "investigation_reference": CASE}, "reason"),
        ({"reason": REASON}, "investigation_reference"),
        ({"reason": REASON, "investigation_reference": "VT case 42"}, "investigation_reference"),
    ]:
        refused = await timed.call("veilig_thuis", "POST", url, body)
        assert refused.status_code == 422, refused.text
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert refused.json()["field"] == field
    assert (await timed.call("school", "POST", url, good)).status_code == 404
    unknown = await timed.call(
        "politie", "POST", url, dict(good, investigation_agency_oin=AGENCIES["veilig_thuis"])
    )
    assert (unknown.status_code, unknown.json()["code"]) == (422, "unknown_investigation")

    timed.clock.now = RELEASED_AT + timedelta(days=3)
    set_ = await timed.call("veilig_thuis", "POST", url, good)
    assert set_.status_code == 200, set_.text
    embargo = set_.json()["embargo"]
    assert set_.json()["status"] == "embargoed"
    assert (embargo["reason"], embargo["investigation_reference"]) == (REASON, CASE)
    assert embargo["investigation_agency_oin"] == AGENCIES["veilig_thuis"]
    assert datetime.fromisoformat(embargo["lapses_at"]) == datetime.fromisoformat(
        "2026-06-17T02:40:00+02:00"
    )  # the agreement's maximum of three months
    twice = await timed.call("veilig_thuis", "POST", url, good)
    assert (twice.status_code, twice.json()["code"]) == (409, "duty_embargoed")
    early = await timed.call(
        "veilig_thuis",
        "POST",
        f"{DUTIES}/{duty['id']}/fulfilment",
        {
            "informed_at": timed.clock.now.isoformat(),
            "method": "letter",
            "evidence_reference": "X1",
        },
    )
    assert (early.status_code, early.json()["code"]) == (409, "duty_embargoed")

    # Past the original due date, an embargoed duty is not overdue.
    timed.clock.now = RELEASED_AT + timedelta(days=40)
    overdue = await timed.call(PRIVACY_OFFICER, "GET", f"{DUTIES}?status=overdue")
    assert [d["id"] for d in overdue.json()] == [duties["subject"]["id"]]  # not the embargoed one
    embargoed = await timed.call(PRIVACY_OFFICER, "GET", f"{DUTIES}?status=embargoed")
    assert [d["id"] for d in embargoed.json()] == [duty["id"]]

    # Only the agency running the investigation ends it; then the period runs again.
    end = f"/v1/safety-investigations/{CASE}/end"
    assert (await timed.call("politie", "POST", end)).status_code == 404
    ended = await timed.call("veilig_thuis", "POST", end)
    assert ended.status_code == 200, ended.text
    assert (ended.json()["running"], ended.json()["embargoes_lifted"]) == (False, 1)
    after = (await timed.call("veilig_thuis", "GET", f"{DUTIES}/{duty['id']}")).json()
    assert (after["status"], after["embargo"]) == ("open", None)
    remaining = DUE_AT - (RELEASED_AT + timedelta(days=3))
    assert datetime.fromisoformat(after["due_at"]) == timed.clock.now + remaining
    again = await timed.call("veilig_thuis", "POST", end)
    assert (again.status_code, again.json()["code"]) == (409, "investigation_ended")
    other = duties["subject"]
    cited = await timed.call("veilig_thuis", "POST", f"{DUTIES}/{other['id']}/embargo", good)
    assert (cited.status_code, cited.json()["code"], cited.json()["field"]) == (
        422,
        "investigation_ended",
        "investigation_reference",
    )

    (lifted,) = await entries(timed, "information_duty_embargo_lifted")
    assert (lifted["cause"], lifted["information_duty_id"]) == ("investigation_ended", duty["id"])
    (embargoed_entry,) = await entries(timed, "information_duty_embargoed")
    assert embargoed_entry["legal_basis"] == ["avg_23_uavg_41_beperking"]
    assert len(await entries(timed, "safety_investigation_opened")) == 1
    assert len(await entries(timed, "safety_investigation_ended")) == 1
    async with timed.harness.broker.services.db.session() as session:
        audit_text = "\n".join(e.entry for e in await session.scalars(select(AuditEntry)))
    assert REASON not in audit_text and CASE not in audit_text
    stored = await stored_text(timed)
    assert not any(bsn in stored for bsn in BSNS)


async def test_an_embargo_lapses_at_the_agreements_maximum(timed: Timed) -> None:
    _, duties = await release(timed)
    duty = duties["authority_holders"]
    # Veilig Thuis registers its investigation; the police (provider) cite it.
    opened = await timed.call(
        "veilig_thuis", "POST", "/v1/safety-investigations", {"reference": CASE}
    )
    assert opened.status_code == 201, opened.text
    dup = await timed.call("veilig_thuis", "POST", "/v1/safety-investigations", {"reference": CASE})
    assert dup.status_code == 409
    set_ = await timed.call(
        "politie",
        "POST",
        f"{DUTIES}/{duty['id']}/embargo",
        {
            "reason": REASON,
            "investigation_reference": CASE,
            "investigation_agency_oin": AGENCIES["veilig_thuis"],
        },
    )
    assert set_.status_code == 200, set_.text
    lapses_at = datetime.fromisoformat(set_.json()["embargo"]["lapses_at"])
    remaining = DUE_AT - RELEASED_AT

    timed.clock.now = lapses_at + timedelta(minutes=5)
    for _ in range(100):  # the app's periodic task lifts it (every 0.1 s here)
        after = (await timed.call("veilig_thuis", "GET", f"{DUTIES}/{duty['id']}")).json()
        if after["status"] == "open":
            break
        await asyncio.sleep(0.1)
    assert after["status"] == "open"
    assert datetime.fromisoformat(after["due_at"]) == timed.clock.now + remaining
    (lifted,) = await entries(timed, "information_duty_embargo_lifted")
    assert lifted["cause"] == "max_duration"
    async with timed.harness.broker.services.db.session() as session:
        row = await session.get(DutyEmbargo, set_.json()["embargo"]["id"])
        assert row is not None and row.lift_cause == "max_duration"


async def test_a_duty_that_cannot_be_recorded_stops_the_release(timed: Timed) -> None:
    """The duties are committed with the exchange: if they cannot be stored,
    nothing is audited as released and nothing leaves."""
    engine = create_engine(timed.harness.broker.settings.sync_database_url)

    def rename(old: str, new: str) -> None:
        with engine.begin() as conn:
            conn.execute(text(f"ALTER TABLE {old} RENAME TO {new}"))

    # In a thread: the broker serves from this test's event loop and must go on
    # finishing its transactions while the DDL waits for its lock.
    try:
        await asyncio.to_thread(rename, "information_duties", "information_duties_away")
        failed = await timed.exchange_response("veilig_thuis", CARE_REPORT)
        assert failed.status_code == 503, failed.text
        assert failed.json()["code"] == "audit_unavailable"
        assert "payload" not in failed.json()
    finally:
        await asyncio.to_thread(rename, "information_duties_away", "information_duties")
        engine.dispose()
    async with timed.harness.broker.services.db.session() as session:
        assert (await session.scalars(select(Exchange))).all() == []
        assert (
            await session.scalars(select(AuditEntry).where(AuditEntry.kind == "release"))
        ).all() == []
    # With the table back, the same request is released with its duties.
    _, duties = await release(timed)
    assert set(duties) == {"subject", "authority_holders"}


async def test_the_review_page_lists_overdue_duties_in_the_officers_scope(timed: Timed) -> None:
    _, duties = await release(timed)
    review = Review(timed)
    vt_officer = await review.account("po-vt", "veilig_thuis")
    school_officer = await review.account("po-school", "school")
    timed.clock.now = DUE_AT + timedelta(hours=1)
    async with review.session(vt_officer) as http:
        page = await http.get("/review/information-duties")
        assert page.status_code == 200, page.text
        for duty in duties.values():
            assert f'id="duty-{duty["id"]}"' in page.text
        assert "OVERDUE" in page.text
        assert not any(bsn in page.text for bsn in BSNS)
        fulfilled = await http.get("/review/information-duties?status=fulfilled")
        assert 'id="empty"' in fulfilled.text
    async with review.session(school_officer) as http:
        page = await http.get("/review/information-duties")
        assert page.status_code == 200
        assert 'id="empty"' in page.text
    async with review.browser() as anonymous:
        redirected = await anonymous.get("/review/information-duties")
        assert (redirected.status_code, redirected.headers["location"]) == (303, "/review/login")


async def test_one_embargo_postpones_every_duty_of_an_exchange(timed: Timed) -> None:
    """Informing Noor's parents and informing Ruben are postponed together, in one
    commit; a second request, an unknown exchange, a blank reason and an agency not
    involved are refused; ending the investigation lifts both."""
    exchange_id, duties = await release(timed)
    url = f"{DUTIES}/embargo"
    good = {"exchange_id": exchange_id, "reason": REASON, "investigation_reference": CASE}
    blank = await timed.call("veilig_thuis", "POST", url, dict(good, reason=" "))
    assert (blank.status_code, blank.json()["field"]) == (422, "reason")
    missing = await timed.call("veilig_thuis", "POST", url, {"reason": REASON})
    assert missing.status_code == 422
    unknown = await timed.call("veilig_thuis", "POST", url, dict(good, exchange_id="nope"))
    assert (unknown.status_code, unknown.json()["field"]) == (404, "exchange_id")
    assert (await timed.call("school", "POST", url, good)).status_code == 404

    timed.clock.now = RELEASED_AT + timedelta(days=2)
    set_ = await timed.call("veilig_thuis", "POST", url, good)
    assert set_.status_code == 200, set_.text
    listed = set_.json()
    assert sorted(d["id"] for d in listed) == sorted(d["id"] for d in duties.values())
    assert {d["status"] for d in listed} == {"embargoed"}
    assert len({d["embargo"]["id"] for d in listed}) == len(listed)
    assert {d["embargo"]["investigation_reference"] for d in listed} == {CASE}
    indices = [d["audit_index"] for d in listed]
    assert len(set(indices)) == len(indices) and max(indices) - min(indices) == len(indices) - 1
    recorded = await entries(timed, "information_duty_embargoed")
    assert sorted(e["information_duty_id"] for e in recorded) == sorted(d["id"] for d in listed)
    assert len(await entries(timed, "safety_investigation_opened")) == 1

    twice = await timed.call("veilig_thuis", "POST", url, good)
    assert (twice.status_code, twice.json()["code"]) == (409, "duty_embargoed")
    single = {"reason": REASON, "investigation_reference": CASE}
    one = await timed.call("veilig_thuis", "POST", f"{DUTIES}/{listed[0]['id']}/embargo", single)
    assert (one.status_code, one.json()["code"]) == (409, "duty_embargoed")

    ended = await timed.call("veilig_thuis", "POST", f"/v1/safety-investigations/{CASE}/end")
    assert ended.status_code == 200, ended.text
    assert ended.json()["embargoes_lifted"] == len(listed)
    for duty in listed:
        after = (await timed.call("veilig_thuis", "GET", f"{DUTIES}/{duty['id']}")).json()
        assert (after["status"], after["embargo"]) == ("open", None)
