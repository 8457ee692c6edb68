"""A consent record stating that the minor subject is wilsonbekwaam
(consent_rules.md section 2 rule 5), over loopback HTTP on SQLite and
PostgreSQL: the holders of authority consent for him at 13 and at 16, the
statement is validated, stored, answered and audited (who established it, not
the evidence), and every decision that relies on it says so in the audit."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import select

from audit.models import AuditEntry
from broker.consent.models import ConsentRecord
from tests.conftest import AGENCIES
from tests.integration.conftest import Timed
from tests.unit.test_cli import Broker, broker  # noqa: F401 - the fixture

P01, P02, P03 = "999990007", "999990019", "999990020"  # father, mother, Noor (13)
P06, P07 = "999990056", "999990068"  # Yara (sole authority), Sami (16)
P09 = "999990093"  # Karim, father of Sami without authority
AGREEMENT = "agr-zvh-mdaplusplus"
PURPOSE = "zorginformatie_casusoverleg"
STATEMENT = {
    "established_by": "ggz:behandelaar:4711",
    "established_at": "2026-06-18T11:00:00+02:00",
    "evidence_ref": "ggz-dms:WOB-2026-007",
}


def consent(subject: str, givers: list[tuple[str, str]], **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "subject": subject,
        "givers": [{"bsn": b, "capacity": c} for b, c in givers],
        "agreement_id": AGREEMENT,
        "purpose_id": PURPOSE,
        "given_at": "2026-06-19T15:00:00+02:00",
        "evidence_ref": "ggz-dms:TOE-2026-0999",
        "wilsonbekwaam": STATEMENT,
    }
    body.update(overrides)
    return body


def request(subject: str, provider: str, element: str, mda_case: str) -> dict[str, Any]:
    return {
        "agreement_id": AGREEMENT,
        "purpose_id": PURPOSE,
        "provider": {"party": provider},
        "subjects": [subject],
        "elements": [element],
        "context": {"mda_case_id": mda_case, "mda_case_status": "actief"},
    }


NOOR = request(P03, "ggz", "health.ggz_treatment_involvement", "MDA-LB-2026-015")
SAMI = request(P07, "school", "school.attendance_absence", "MDA-LB-2026-011")
PARENTS = [(P01, "authority_holder"), (P02, "authority_holder")]


async def entries(timed: Timed, seqs: list[int]) -> list[dict[str, Any]]:
    async with timed.harness.broker.services.db.session() as session:
        rows = (await session.scalars(select(AuditEntry).where(AuditEntry.seq.in_(seqs)))).all()
    return [json.loads(r.entry) for r in sorted(rows, key=lambda r: r.seq)]


async def test_holders_consent_for_a_wilsonbekwaam_13_year_old(timed: Timed) -> None:
    # Without the statement the parents alone do not suffice at 13 (MDA++ rule).
    plain = consent(P03, PARENTS, id="CNS-W0")
    del plain["wilsonbekwaam"]
    assert (await timed.call("ggz", "POST", "/v1/consents", plain)).status_code == 201
    timed.clock.advance(minutes=1)
    body = await timed.exchange("gemeente_wijkteam", NOOR)
    assert [(i["reason"], i["consent_id"]) for i in body["items"]] == [
        ("deny_consent_incomplete", "CNS-W0")
    ]

    created = await timed.call(
        "ggz",
        "POST",
        "/v1/consents",
        consent(P03, PARENTS, id="CNS-W1", given_at="2026-06-20T09:00:00+02:00"),
    )
    assert created.status_code == 201, created.text
    record = created.json()
    statement = record["wilsonbekwaam"]
    assert (statement["established_by"], statement["evidence_ref"]) == (
        "ggz:behandelaar:4711",
        "ggz-dms:WOB-2026-007",
    )
    assert datetime.fromisoformat(statement["established_at"]) == datetime.fromisoformat(
        STATEMENT["established_at"]
    )
    # The statement is not a giver.
    assert [(g["bsn"], g["capacity"]) for g in record["givers"]] == [
        (P01, "authority_holder"),
        (P02, "authority_holder"),
    ]
    [recorded] = await entries(timed, [record["audit_index"]])
    assert recorded["kind"] == "consent_recorded"
    assert recorded["wilsonbekwaam"]["established_by"] == "ggz:behandelaar:4711"
    assert "WOB-2026-007" not in json.dumps(recorded)
    assert len(recorded["givers"]) == 2
    async with timed.harness.broker.services.db.session() as session:
        stored = await session.get(ConsentRecord, "CNS-W1")
        unflagged = await session.get(ConsentRecord, "CNS-W0")
    assert stored is not None and P03 not in json.dumps(stored.givers)
    # The statement has its own column; the givers are the holders only.
    assert stored.wilsonbekwaam is not None
    assert stored.wilsonbekwaam["evidence_ref"] == "ggz-dms:WOB-2026-007"
    assert [g["capacity"] for g in stored.givers] == ["authority_holder"] * 2
    assert unflagged is not None and unflagged.wilsonbekwaam is None

    timed.clock.advance(minutes=1)
    body = await timed.exchange("gemeente_wijkteam", NOOR)
    assert [(i["reason"], i["consent_id"]) for i in body["items"]] == [("allow_consent", "CNS-W1")]
    assert "wilsonbekwaam" in body["items"][0]["explanation"]
    decisions = [e for e in await entries(timed, body["audit_indices"]) if e["kind"] == "decision"]
    assert [d["consent_state"]["wilsonbekwaam"] for d in decisions] == [True]

    # The search answers the statement to the recording agency.
    found = await timed.call("ggz", "POST", "/v1/consents/search", {"subject": P03})
    by_id = {r["id"]: r for r in found.json()}
    assert by_id["CNS-W1"]["wilsonbekwaam"]["evidence_ref"] == "ggz-dms:WOB-2026-007"
    assert by_id["CNS-W0"]["wilsonbekwaam"] is None

    # Either parent withdrawing ends it; the older live record (parents only, not
    # stated wilsonbekwaam) is then the one considered, and it is incomplete.
    timed.clock.advance(minutes=1)
    withdrawn = await timed.call(
        "ggz", "POST", "/v1/consents/CNS-W1/withdraw", {"subject": P03, "withdrawn_by": P01}
    )
    assert withdrawn.status_code == 200, withdrawn.text
    timed.clock.advance(minutes=1)
    body = await timed.exchange("gemeente_wijkteam", NOOR)
    assert [(i["reason"], i["consent_id"]) for i in body["items"]] == [
        ("deny_consent_incomplete", "CNS-W0")
    ]


async def test_holder_consents_for_a_wilsonbekwaam_16_year_old(timed: Timed) -> None:
    # Sami (16): normally he decides alone; stated wilsonbekwaam, his mother
    # (sole authority) consents for him. A parent without authority cannot.
    only_father = consent(P07, [(P09, "authority_holder")], id="CNS-W2")
    assert (await timed.call("school", "POST", "/v1/consents", only_father)).status_code == 201
    timed.clock.advance(minutes=1)
    body = await timed.exchange("gemeente_wijkteam", SAMI)
    assert [i["reason"] for i in body["items"]] == ["deny_consent_incomplete"]

    mother = consent(P07, [(P06, "authority_holder")], id="CNS-W3")
    mother["given_at"] = "2026-06-20T09:00:00+02:00"
    assert (await timed.call("school", "POST", "/v1/consents", mother)).status_code == 201
    timed.clock.advance(minutes=1)
    body = await timed.exchange("gemeente_wijkteam", SAMI)
    assert [(i["reason"], i["consent_id"]) for i in body["items"]] == [("allow_consent", "CNS-W3")]


async def test_statement_validation(timed: Timed) -> None:
    cases: list[tuple[dict[str, Any], str, str]] = [
        # The represented subject is not a giver.
        (
            consent(P03, [(P03, "child"), *PARENTS]),
            "invalid_giver",
            "givers[0].capacity",
        ),
        (consent(P07, [(P07, "child")]), "invalid_giver", "givers[0].capacity"),
        (
            consent(
                P03,
                PARENTS,
                wilsonbekwaam={**STATEMENT, "established_at": "2026-06-21T10:00:00+02:00"},
            ),
            "invalid_time",
            "wilsonbekwaam.established_at",
        ),
        (
            consent(P03, PARENTS, wilsonbekwaam={**STATEMENT, "established_by": "dr. Jansen"}),
            "validation_failed",
            "wilsonbekwaam.established_by",
        ),
        (
            consent(P03, PARENTS, wilsonbekwaam={"established_by": "ggz:4711"}),
            "validation_failed",
            "wilsonbekwaam.established_at",
        ),
    ]
    for body, code, field in cases:
        response = await timed.call("ggz", "POST", "/v1/consents", body)
        assert response.status_code == 422, (body, response.text)
        problem = response.json()
        assert (problem["code"], problem.get("field")) == (code, field), problem


def test_cli_records_the_statement(broker: Broker) -> None:  # noqa: F811
    ggz = AGENCIES["ggz"]
    broker.add(oin=ggz, party="ggz")
    args = [
        "consent",
        "record",
        "--oin",
        ggz,
        "--subject",
        P03,
        "--giver",
        f"{P01}:authority_holder",
        "--giver",
        f"{P02}:authority_holder",
        "--agreement",
        AGREEMENT,
        "--purpose",
        PURPOSE,
        "--given-at",
        "2026-01-10T10:00:00+01:00",
        "--evidence-ref",
        "ggz-dms:TOE-1",
        "--wilsonbekwaam-by",
        "ggz:behandelaar:4711",
        "--wilsonbekwaam-at",
        "2026-01-09T10:00:00+01:00",
        "--wilsonbekwaam-evidence",
        "ggz-dms:WOB-1",
    ]
    recorded = json.loads(broker(*args).output)
    assert recorded["wilsonbekwaam"]["established_by"] == "ggz:behandelaar:4711"
    assert [g["capacity"] for g in recorded["givers"]] == ["authority_holder"] * 2
    # Part of a statement is refused, naming the field.
    partial = broker(*args[:-2], code=1)
    assert "wilsonbekwaam.evidence_ref" in partial.output
