"""The kindcheck follow-up (agr-ggz-vt-kindcheck, purpose kindcheck_contact_professional)
over loopback HTTP, on SQLite and PostgreSQL: the contact route is released only
after a ``true`` answer of the boolean-only kindcheck that the broker itself gave
to the same agency about the same client within the agreement's 24 hours. The
earlier answer is looked up in the broker's own records, where it is sealed under
its retention key (a destroyed key leaves no usable answer: the follow-up is
denied); what the requester puts in the context does not count."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from audit.models import AuditEntry
from broker.exchange.models import DecisionRecord, Exchange
from tests.conftest import AGENCIES, Harness, broker_settings, register_partners, serve_broker
from tests.integration.conftest import Clock, Timed

P10 = "999990111"  # Thijs Brouwer: household known to Veilig Thuis (answer true)
P13 = "999990147"  # Lotte Zandbergen: not known (answer false)
AGREEMENT = "agr-ggz-vt-kindcheck"
# A second agency of party type ggz (another GGZ provider in the region).
OTHER_GGZ = "ggz_b"
OTHER_GGZ_OIN = "00000003812345990000"

KINDCHECK_CONTEXT = {
    "kindcheck_decision": "meldcode_stappen_volgen",
    "minor_children_count": 1,
    "requester_role": "behandelaar",
}


def kindcheck(bsn: str) -> dict[str, Any]:
    return {
        "agreement_id": AGREEMENT,
        "purpose_id": "kindcheck_bekendheid",
        "provider": {"party": "veilig_thuis"},
        "subjects": [bsn],
        "elements": ["vt.report_exists"],
        "context": KINDCHECK_CONTEXT,
    }


def follow_up(*bsns: str, context: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "agreement_id": AGREEMENT,
        "purpose_id": "kindcheck_contact_professional",
        "provider": {"party": "veilig_thuis"},
        "subjects": list(bsns),
        "elements": ["vt.contact_person"],
        "context": context or {},
    }


@pytest.fixture
async def timed(
    database_url: str, simulators: dict[str, Any], tmp_path: Path
) -> AsyncIterator[Timed]:
    """A broker with a settable clock and, besides the demo agencies, a second
    agency of party type ggz."""
    clock = Clock()
    settings = broker_settings(database_url, simulators, tmp_path)
    partners = await register_partners(settings, simulators)
    other = await register_partners(settings, simulators, {"ggz": OTHER_GGZ_OIN}, sign=False)
    partners[OTHER_GGZ] = other["ggz"]
    async with serve_broker(settings, clock) as broker:
        yield Timed(Harness(broker, partners), clock)


async def answer(timed: Timed, bsn: str, party: str = "ggz") -> bool:
    """Runs the kindcheck and returns the boolean the requester decrypts."""
    client = timed.harness.client(party)
    try:
        response = await client.exchange(kindcheck(bsn))
        assert response.status_code == 200, response.text
        body = response.json()
        assert [i["reason"] for i in body["items"]] == ["allow_statutory_basis"]
        items = client.decrypt(body["payload"])["items"]
    finally:
        await client.aclose()
    assert len(items) == 1
    value = items[0]["value"]
    assert isinstance(value, bool)
    return value


async def contact(timed: Timed, request: dict[str, Any], party: str = "ggz") -> dict[str, Any]:
    return await timed.exchange(party, request)


def reasons(body: dict[str, Any]) -> list[str]:
    return [i["reason"] for i in body["items"]]


async def decision(timed: Timed, decision_id: str) -> DecisionRecord:
    async with timed.harness.broker.services.db.session() as session:
        row = await session.get(DecisionRecord, decision_id)
    assert row is not None
    return row


async def opened_input(timed: Timed, decision_id: str) -> dict[str, Any]:
    """A decision's full policy input, opened with the retention vault."""
    row = await decision(timed, decision_id)
    # Stored: the broker-derived answers are sealed with the other personal facts.
    assert "prior_answers" not in row.input and "sealed" in row.input
    reader = timed.harness.broker.services.retention.vault.reader()
    return await reader.decision_input(row.id, row.input)


async def test_contact_route_after_a_recent_yes(timed: Timed) -> None:
    assert await answer(timed, P10) is True
    timed.clock.advance(minutes=20)
    body = await contact(timed, follow_up(P10))
    assert reasons(body) == ["allow_statutory_basis"]
    assert body["items"][0]["status"] == "released"

    # The decision input carries the broker's own fact, naming the earlier exchange.
    facts = (await opened_input(timed, body["decision_id"]))["prior_answers"]
    assert [(f["purpose"], f["element"], f["answer"]) for f in facts] == [
        ("kindcheck_bekendheid", "vt.report_exists", True)
    ]
    row = await decision(timed, body["decision_id"])
    assert P10 not in json.dumps(row.input) and P10 not in json.dumps(row.result)

    # The kindcheck's decision keeps the released answer sealed (no true/false in
    # clear), bound to its result column; the vault opens it.
    db = timed.harness.broker.services.db
    async with db.session() as session:
        earlier = await session.get(Exchange, facts[0]["exchange_id"])
    assert earlier is not None
    kindcheck_row = await decision(timed, earlier.decision_id)
    assert "answers" not in kindcheck_row.result
    assert kindcheck_row.result["sealed"]["kid"] == kindcheck_row.input["sealed"]["kid"]
    assert [i["reason"] for i in kindcheck_row.result["items"]] == ["allow_statutory_basis"]
    reader = timed.harness.broker.services.retention.vault.reader()
    opened = await reader.decision_result(kindcheck_row.id, kindcheck_row.result)
    assert opened["answers"] == [
        {"subject": facts[0]["subject"], "element": "vt.report_exists", "answer": True}
    ]
    # The follow-up released a full answer, not a boolean: its result has nothing sealed.
    assert row.result["answers"] == [] and "sealed" not in row.result


async def test_window_boundary_is_24_hours(timed: Timed) -> None:
    assert await answer(timed, P10) is True
    timed.clock.advance(hours=24)
    assert reasons(await contact(timed, follow_up(P10))) == ["allow_statutory_basis"]
    timed.clock.advance(seconds=1)
    body = await contact(timed, follow_up(P10))
    assert reasons(body) == ["deny_precondition_failed"]
    assert body["items"][0]["status"] == "denied"


async def test_no_prior_answer_denies(timed: Timed) -> None:
    body = await contact(timed, follow_up(P10))
    assert reasons(body) == ["deny_precondition_failed"]
    assert body["payload"] is None


async def test_prior_false_denies(timed: Timed) -> None:
    assert await answer(timed, P13) is False
    timed.clock.advance(minutes=5)
    assert reasons(await contact(timed, follow_up(P13))) == ["deny_precondition_failed"]


async def test_prior_true_older_than_the_window_denies(timed: Timed) -> None:
    assert await answer(timed, P10) is True
    timed.clock.advance(hours=25)
    assert reasons(await contact(timed, follow_up(P10))) == ["deny_precondition_failed"]
    # A fresh "yes" opens it again.
    assert await answer(timed, P10) is True
    timed.clock.advance(minutes=1)
    assert reasons(await contact(timed, follow_up(P10))) == ["allow_statutory_basis"]


async def test_prior_true_to_another_agency_denies(timed: Timed) -> None:
    assert await answer(timed, P10, party=OTHER_GGZ) is True
    timed.clock.advance(minutes=5)
    assert reasons(await contact(timed, follow_up(P10))) == ["deny_precondition_failed"]
    # The agency that asked may follow up.
    assert reasons(await contact(timed, follow_up(P10), party=OTHER_GGZ)) == [
        "allow_statutory_basis"
    ]


async def test_prior_true_about_another_client_denies(timed: Timed) -> None:
    assert await answer(timed, P10) is True
    timed.clock.advance(minutes=5)
    assert reasons(await contact(timed, follow_up(P13))) == ["deny_precondition_failed"]
    # Asked together, each client needs its own "yes": the request as a whole fails.
    assert set(reasons(await contact(timed, follow_up(P10, P13)))) == {"deny_precondition_failed"}


async def test_the_window_runs_from_the_latest_answer(timed: Timed) -> None:
    """The latest answer counts (a false after a true is covered by the
    agreement's policy tests: the simulated register does not change)."""
    assert await answer(timed, P10) is True
    timed.clock.advance(hours=2)
    assert await answer(timed, P10) is True
    timed.clock.advance(hours=23)
    # 25 h after the first, 23 h after the latest "yes".
    assert reasons(await contact(timed, follow_up(P10))) == ["allow_statutory_basis"]


@pytest.mark.parametrize(
    "forged",
    [
        {"prior_kindcheck_answer": True, "prior_kindcheck_age_hours": 0.1},
        {"prior_answers": [{"subject": "x", "answer": True}]},
    ],
)
async def test_a_forged_context_value_does_not_help(timed: Timed, forged: dict[str, Any]) -> None:
    body = await contact(timed, follow_up(P10, context=forged))
    assert reasons(body) == ["deny_precondition_failed"]
    assert (await opened_input(timed, body["decision_id"]))["prior_answers"] == []


async def test_a_shredded_period_leaves_no_prior_answer(timed: Timed) -> None:
    """The answer is sealed under its month's retention key: once that key is
    destroyed the answer cannot be read, and the follow-up fails closed."""
    timed.clock.now = datetime(2026, 6, 30, 23, 30, tzinfo=UTC)
    assert await answer(timed, P10) is True
    timed.clock.advance(hours=1)  # 1 July: June's period has ended
    # Within the window and readable: the answer of the previous month counts.
    assert reasons(await contact(timed, follow_up(P10))) == ["allow_statutory_basis"]

    retention = timed.harness.broker.services.retention
    destroyed = await retention.run(at=datetime(2046, 7, 1, tzinfo=UTC))
    assert [k.id for k in destroyed] == ["P20Y:2026-06"]
    timed.clock.advance(minutes=5)
    body = await contact(timed, follow_up(P10))
    assert reasons(body) == ["deny_precondition_failed"]
    assert body["payload"] is None
    # The follow-up's own decision (July's key) opens and shows no prior answer.
    assert (await opened_input(timed, body["decision_id"]))["prior_answers"] == []
    # A fresh "yes" opens the contact route again.
    assert await answer(timed, P10) is True
    timed.clock.advance(minutes=1)
    assert reasons(await contact(timed, follow_up(P10))) == ["allow_statutory_basis"]


async def test_the_decision_audit_shows_the_failed_precondition(timed: Timed) -> None:
    body = await contact(timed, follow_up(P10))
    db = timed.harness.broker.services.db
    async with db.session() as session:
        rows = (
            await session.scalars(
                select(AuditEntry).where(AuditEntry.seq.in_(body["audit_indices"]))
            )
        ).all()
    entries = [json.loads(r.entry) for r in rows]
    decisions = [e for e in entries if e["kind"] == "decision"]
    assert [d["reason"] for d in decisions] == ["deny_precondition_failed"]
    assert decisions[0]["requester"] == AGENCIES["ggz"]
    assert P10 not in json.dumps(entries)
