"""The consent registry over loopback HTTP, on SQLite and PostgreSQL: recording,
searching and withdrawing, validation, access, audit, and the effect of a
withdrawal or an expiry on the next exchange."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, text

from audit.models import AuditEntry
from audit.verify import verify_chain
from broker.consent.models import ConsentRecord
from broker.db.session import Database
from tests.conftest import Harness, broker_settings, clean, register_partners, serve_broker
from tests.integration.conftest import OUTSIDER, Timed

P01, P02, P03 = "999990007", "999990019", "999990020"  # father, mother, Noor (13)
P06 = "999990056"  # Yara, adult
AGREEMENT = "agr-zvh-mdaplusplus"
PURPOSE = "zorginformatie_casusoverleg"
CONTEXT = {"mda_case_id": "MDA-LB-2026-011", "mda_case_status": "actief"}


def noor_consent(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "CNS-T1",
        "subject": P03,
        "givers": [
            {"bsn": P03, "capacity": "child"},
            {"bsn": P01, "capacity": "authority_holder"},
            {"bsn": P02, "capacity": "authority_holder"},
        ],
        "agreement_id": AGREEMENT,
        "purpose_id": PURPOSE,
        "elements": ["health.ggz_treatment_involvement"],
        "given_at": "2026-06-19T15:00:00+02:00",
        "evidence_ref": "ggz-dms:TOE-2026-0412",
    }
    body.update(overrides)
    return body


def yara_consent(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "subject": P06,
        "givers": [{"bsn": P06, "capacity": "subject"}],
        "agreement_id": AGREEMENT,
        "purpose_id": PURPOSE,
        "recipients": ["gemeente_wijkteam"],
        "given_at": "2026-06-19T09:00:00+02:00",
        "evidence_ref": "shv:form-2026-77",
    }
    body.update(overrides)
    return body


DEBT_REQUEST = {
    "agreement_id": AGREEMENT,
    "purpose_id": PURPOSE,
    "provider": {"party": "schuldhulpverlening"},
    "subjects": [P06],
    "elements": ["finance.payment_arrears_signal"],
    "context": CONTEXT,
}


async def audit_entry(db: Database, seq: int) -> dict[str, Any]:
    async with db.session() as session:
        row = await session.get(AuditEntry, seq)
    assert row is not None
    for bsn in (P01, P02, P03, P06):
        assert bsn not in row.entry
    entry: dict[str, Any] = json.loads(row.entry)
    return entry


async def test_record_search_and_withdraw(timed: Timed) -> None:
    db = timed.harness.broker.services.db
    created = await timed.call("ggz", "POST", "/v1/consents", noor_consent())
    assert created.status_code == 201, created.text
    record = created.json()
    assert record["id"] == "CNS-T1"
    assert record["subject"] == P03
    assert [g["bsn"] for g in record["givers"]] == [P03, P01, P02]
    assert record["status"] == "active"
    assert record["recorded_by_oin"] == timed.harness.partners["ggz"]["oin"]
    entry = await audit_entry(db, record["audit_index"])
    assert entry["kind"] == "consent_recorded"
    assert entry["consent_id"] == "CNS-T1"
    assert (entry["agreement"], entry["purpose"]) == (AGREEMENT, PURPOSE)
    assert "evidence_ref" not in entry and "ggz-dms" not in json.dumps(entry)

    # Only pseudonyms are stored.
    async with db.session() as session:
        stored = await session.get(ConsentRecord, "CNS-T1")
    assert stored is not None
    assert entry["subject"] == stored.subject_key
    for bsn in (P01, P02, P03):
        assert bsn not in json.dumps([stored.subject_key, stored.givers])

    # The recording agency finds it; it names the givers it knows by BSN.
    found = await timed.call(
        "ggz", "POST", "/v1/consents/search", {"subject": P03, "known_persons": [P01]}
    )
    assert found.status_code == 200, found.text
    assert [r["id"] for r in found.json()] == ["CNS-T1"]
    assert [g["bsn"] for g in found.json()[0]["givers"]] == [P03, P01, None]
    # Other agencies do not see it.
    other = await timed.call("school", "POST", "/v1/consents/search", {"subject": P03})
    assert other.json() == []
    scoped = await timed.call(
        "ggz", "POST", "/v1/consents/search", {"subject": P03, "purpose_id": "veiligheidsoverleg"}
    )
    assert scoped.json() == []

    # Mother withdraws; one of the givers suffices.
    timed.clock.advance(hours=1)
    withdrawn = await timed.call(
        "ggz", "POST", "/v1/consents/CNS-T1/withdraw", {"subject": P03, "withdrawn_by": P02}
    )
    assert withdrawn.status_code == 200, withdrawn.text
    assert withdrawn.json()["status"] == "withdrawn"
    assert withdrawn.json()["withdrawn_by"] == P02
    entry = await audit_entry(db, withdrawn.json()["audit_index"])
    assert entry["kind"] == "consent_withdrawn"
    assert entry["withdrawn_by_capacity"] == "authority_holder"
    again = await timed.call(
        "ggz", "POST", "/v1/consents/CNS-T1/withdraw", {"subject": P03, "withdrawn_by": P01}
    )
    assert again.status_code == 409
    assert again.json()["code"] == "already_withdrawn"
    assert (await verify_chain(db)).size > withdrawn.json()["audit_index"]


async def test_validation_errors(timed: Timed) -> None:
    cases: list[tuple[dict[str, Any], int, str, str | None]] = [
        (noor_consent(subject="123456789"), 422, "invalid_bsn", "subject"),
        (
            noor_consent(givers=[{"bsn": "999990008", "capacity": "child"}]),
            422,
            "invalid_bsn",
            "givers[0].bsn",
        ),
        (noor_consent(agreement_id="agr-nope"), 422, "unknown_agreement", "agreement_id"),
        (noor_consent(purpose_id="nope"), 422, "unknown_purpose", "purpose_id"),
        (
            noor_consent(purpose_id="schuldsignaal_naar_veilig_thuis"),
            422,
            "consent_not_applicable",
            "purpose_id",
        ),
        (noor_consent(elements=["health.nope"]), 422, "unknown_element", "elements[0]"),
        (noor_consent(recipients=["nobody"]), 422, "unknown_party", "recipients[0]"),
        (
            noor_consent(given_at="2026-06-21T10:00:00+02:00"),
            422,
            "invalid_time",
            "given_at",
        ),
        (
            noor_consent(valid_until="2026-06-01T10:00:00+02:00"),
            422,
            "invalid_time",
            "valid_until",
        ),
        (noor_consent(given_at="2026-06-19T15:00:00"), 422, "validation_failed", "given_at"),
        (
            noor_consent(givers=[{"bsn": P01, "capacity": "child"}]),
            422,
            "invalid_giver",
            "givers[0].capacity",
        ),
        (
            noor_consent(givers=[{"bsn": P01, "capacity": "authority_holder"}] * 2),
            422,
            "invalid_giver",
            "givers[1].bsn",
        ),
        (noor_consent(evidence_ref="signed by Ruben"), 422, "validation_failed", "evidence_ref"),
    ]
    for body, status, code, field in cases:
        response = await timed.call("ggz", "POST", "/v1/consents", body)
        assert response.status_code == status, (body, response.text)
        problem = response.json()
        assert response.headers["content-type"].startswith("application/problem+json")
        assert (problem["code"], problem.get("field")) == (code, field), problem
    ok = await timed.call("ggz", "POST", "/v1/consents", noor_consent())
    assert ok.status_code == 201
    duplicate = await timed.call("ggz", "POST", "/v1/consents", noor_consent())
    assert duplicate.status_code == 409
    generated = await timed.call("ggz", "POST", "/v1/consents", noor_consent(id=None))
    assert generated.status_code == 201 and generated.json()["id"].startswith("CNS-")
    async with timed.harness.broker.services.db.session() as session:
        count = await session.scalar(select(func.count()).select_from(ConsentRecord))
    assert count == 2


async def test_withdrawal_rules(timed: Timed) -> None:
    created = await timed.call("ggz", "POST", "/v1/consents", noor_consent())
    assert created.status_code == 201
    path = "/v1/consents/CNS-T1/withdraw"
    # The subject must match the record.
    wrong = await timed.call("ggz", "POST", path, {"subject": P01, "withdrawn_by": P01})
    assert wrong.status_code == 404
    # Only the subject or a giver withdraws.
    stranger = await timed.call("ggz", "POST", path, {"subject": P03, "withdrawn_by": P06})
    assert (stranger.status_code, stranger.json()["code"]) == (422, "invalid_giver")
    # Not before it was given, not in the future.
    early = await timed.call(
        "ggz",
        "POST",
        path,
        {"subject": P03, "withdrawn_by": P01, "withdrawn_at": "2026-06-19T14:00:00+02:00"},
    )
    assert (early.status_code, early.json()["field"]) == (422, "withdrawn_at")
    # An agency of a party outside the agreement cannot see or withdraw it.
    outsider = await timed.call(OUTSIDER[0], "POST", path, {"subject": P03, "withdrawn_by": P03})
    assert outsider.status_code == 404
    # Any agency of a party to the agreement can record the withdrawal.
    by_vt = await timed.call("veilig_thuis", "POST", path, {"subject": P03, "withdrawn_by": P03})
    assert by_vt.status_code == 200, by_vt.text
    assert by_vt.json()["withdrawn_by"] == P03
    unknown = await timed.call(
        "ggz", "POST", "/v1/consents/CNS-NONE/withdraw", {"subject": P03, "withdrawn_by": P03}
    )
    assert unknown.status_code == 404


async def test_withdrawal_takes_effect_on_the_next_exchange(timed: Timed) -> None:
    missing = await timed.exchange("gemeente_wijkteam", DEBT_REQUEST)
    assert missing["items"][0]["reason"] == "deny_consent_missing"

    created = await timed.call("schuldhulpverlening", "POST", "/v1/consents", yara_consent())
    assert created.status_code == 201, created.text
    consent_id = created.json()["id"]
    allowed = await timed.exchange("gemeente_wijkteam", DEBT_REQUEST)
    assert allowed["items"][0]["reason"] == "allow_consent"
    assert allowed["items"][0]["consent_id"] == consent_id

    # Narrowed to the case director: Veilig Thuis gets nothing on it.
    vt = await timed.exchange(
        "veilig_thuis", dict(DEBT_REQUEST, elements=["finance.debt_assistance_status"])
    )
    assert vt["items"][0]["reason"] == "deny_consent_missing"

    timed.clock.advance(minutes=5)
    withdrawn = await timed.call(
        "schuldhulpverlening",
        "POST",
        f"/v1/consents/{consent_id}/withdraw",
        {"subject": P06, "withdrawn_by": P06},
    )
    assert withdrawn.status_code == 200, withdrawn.text
    timed.clock.advance(seconds=1)
    denied = await timed.exchange("gemeente_wijkteam", DEBT_REQUEST)
    assert denied["items"][0]["reason"] == "deny_consent_withdrawn"
    assert denied["items"][0]["consent_id"] == consent_id
    # The decision entry names the consent record.
    async with timed.harness.broker.services.db.session() as session:
        entries = (
            await session.scalars(
                select(AuditEntry).where(AuditEntry.exchange_id == denied["exchange_id"])
            )
        ).all()
    decision = json.loads(next(e.entry for e in entries if e.kind == "decision"))
    assert (decision["reason"], decision["consent_id"]) == ("deny_consent_withdrawn", consent_id)


async def test_an_expired_consent_counts_as_withdrawn(timed: Timed) -> None:
    until = (timed.clock.now + timedelta(hours=1)).isoformat()
    created = await timed.call(
        "schuldhulpverlening", "POST", "/v1/consents", yara_consent(valid_until=until)
    )
    assert created.status_code == 201, created.text
    before = await timed.exchange("gemeente_wijkteam", DEBT_REQUEST)
    assert before["items"][0]["reason"] == "allow_consent"
    timed.clock.advance(hours=1)
    after = await timed.exchange("gemeente_wijkteam", DEBT_REQUEST)
    assert after["items"][0]["reason"] == "deny_consent_withdrawn"
    found = await timed.call("schuldhulpverlening", "POST", "/v1/consents/search", {"subject": P06})
    assert found.json()[0]["status"] == "expired"
    # A newer consent is evaluated instead.
    renewed = await timed.call(
        "schuldhulpverlening",
        "POST",
        "/v1/consents",
        yara_consent(given_at=timed.clock.now.isoformat()),
    )
    assert renewed.status_code == 201
    again = await timed.exchange("gemeente_wijkteam", DEBT_REQUEST)
    assert again["items"][0]["reason"] == "allow_consent"
    assert again["items"][0]["consent_id"] == renewed.json()["id"]


async def test_database_unavailable_records_nothing(
    pg_url: str, simulators: dict[str, Any], tmp_path: Path
) -> None:
    from tests.integration.test_fail_closed import _set_connections

    clean(pg_url)
    settings = broker_settings(pg_url, simulators, tmp_path)
    partners = await register_partners(settings, simulators, {"ggz": "00000003812345670000"})
    dbname = pg_url.rsplit("/", 1)[1]
    async with serve_broker(settings) as broker:
        client = Harness(broker, partners).client("ggz")
        try:
            token = await client.token()
            headers = {"Authorization": f"Bearer {token}"}
            body = noor_consent(given_at="2026-01-10T10:00:00+01:00")
            _set_connections(dbname, False)
            try:
                down = await client.http.post(
                    broker.base_url + "/v1/consents", json=body, headers=headers
                )
            finally:
                _set_connections(dbname, True)
            assert down.status_code == 503, down.text
            assert down.json()["code"] in {"audit_unavailable", "storage_unavailable"}
            async with broker.services.db.session() as session:
                rows = await session.scalar(text("SELECT count(*) FROM consent_records"))
            assert rows == 0
            again = await client.http.post(
                broker.base_url + "/v1/consents", json=body, headers=headers
            )
            assert again.status_code == 201, again.text
        finally:
            await client.aclose()


async def test_the_registry_needs_a_token(harness: Harness) -> None:
    client = harness.client("ggz")
    try:
        for path in ("/v1/consents", "/v1/consents/search", "/v1/consents/CNS-1/withdraw"):
            response = await client.http.post(harness.broker.base_url + path, json={})
            assert response.status_code == 401, path
    finally:
        await client.aclose()
