"""Withdrawing consent while exchanges are being decided, over loopback HTTP on
SQLite and PostgreSQL.

Exchange requests that rely on one consent record race its withdrawal. Every
request is decided on one consent snapshot: all items of a request get the same
answer, naming the same record, and the audit entry of each decision records the
state of that record it relied on (withdrawn or not). Every request sent after
the withdrawal's commit was answered denies with deny_consent_withdrawn.

The broker's clock moves with real time (from a date inside the agreements'
validity), so the request time of a decision and the withdrawal time of the
record are real, ordered instants."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from audit.models import AuditEntry
from broker.core.clock import to_ns
from tests.conftest import Harness, broker_settings, register_partners, serve_broker

P06 = "999990056"  # Yara Mansour, adult
AGREEMENT = "agr-zvh-mdaplusplus"
PURPOSE = "zorginformatie_casusoverleg"
ELEMENTS = [
    "finance.payment_arrears_signal",
    "finance.debt_assistance_status",
    "finance.total_debt_amount",
]
START = datetime.fromisoformat("2026-06-20T10:00:00+02:00")
REQUESTS_BEFORE = 3  # answered before the withdrawal starts
RACING = 12  # sent while the withdrawal is under way
REQUESTS_AFTER = 4  # sent after the withdrawal's answer


class MovingClock:
    """START plus the real time elapsed since the broker started."""

    def __init__(self) -> None:
        self._t0 = time.monotonic()

    def __call__(self) -> datetime:
        return START + timedelta(seconds=time.monotonic() - self._t0)


@dataclass
class Outcome:
    sent: float  # monotonic time the request was sent
    body: dict[str, Any]


@pytest.fixture
async def harness(
    database_url: str, simulators: dict[str, Any], tmp_path: Path
) -> AsyncIterator[Harness]:
    settings = broker_settings(database_url, simulators, tmp_path)
    partners = await register_partners(settings, simulators)
    async with serve_broker(settings, MovingClock()) as broker:
        yield Harness(broker, partners)


async def call(harness: Harness, party: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    client = harness.client(party)
    try:
        token = await client.token()
        response = await client.http.post(
            harness.broker.base_url + path, json=body, headers={"Authorization": f"Bearer {token}"}
        )
    finally:
        await client.aclose()
    assert response.is_success, response.text
    result: dict[str, Any] = response.json()
    return result


async def exchange(harness: Harness) -> Outcome:
    client = harness.client("gemeente_wijkteam")
    try:
        sent = time.monotonic()
        response = await client.exchange(
            {
                "agreement_id": AGREEMENT,
                "purpose_id": PURPOSE,
                "provider": {"party": "schuldhulpverlening"},
                "subjects": [P06],
                "elements": ELEMENTS,
                "context": {"mda_case_id": "MDA-LB-2026-011", "mda_case_status": "actief"},
            }
        )
    finally:
        await client.aclose()
    assert response.status_code == 200, response.text
    return Outcome(sent, response.json())


async def decision_entries(harness: Harness, exchange_id: str) -> list[dict[str, Any]]:
    async with harness.broker.services.db.session() as session:
        rows = (
            await session.scalars(
                select(AuditEntry)
                .where(AuditEntry.exchange_id == exchange_id, AuditEntry.kind == "decision")
                .order_by(AuditEntry.seq)
            )
        ).all()
    entries = [json.loads(r.entry) for r in rows]
    assert P06 not in json.dumps(entries)
    return entries


async def test_withdrawal_racing_exchanges(harness: Harness) -> None:
    recorded = await call(
        harness,
        "schuldhulpverlening",
        "/v1/consents",
        {
            "id": "CNS-RACE",
            "subject": P06,
            "givers": [{"bsn": P06, "capacity": "subject"}],
            "agreement_id": AGREEMENT,
            "purpose_id": PURPOSE,
            "recipients": ["gemeente_wijkteam"],
            "given_at": (START - timedelta(hours=1)).isoformat(),
            "evidence_ref": "shv:form-2026-race",
        },
    )
    assert recorded["status"] == "active"

    before = [await exchange(harness) for _ in range(REQUESTS_BEFORE)]

    async def withdraw() -> tuple[dict[str, Any], float]:
        await asyncio.sleep(0.05)  # let the racing requests get under way
        result = await call(
            harness,
            "schuldhulpverlening",
            "/v1/consents/CNS-RACE/withdraw",
            {"subject": P06, "withdrawn_by": P06},
        )
        return result, time.monotonic()

    async def staggered(n: int) -> Outcome:
        await asyncio.sleep(0.01 * n)
        return await exchange(harness)

    withdrawal_task = asyncio.create_task(withdraw())
    racing = await asyncio.gather(*(staggered(n) for n in range(RACING)))
    withdrawn, committed = await withdrawal_task
    assert withdrawn["status"] == "withdrawn"
    withdrawn_at_ns = to_ns(datetime.fromisoformat(withdrawn["withdrawn_at"]))

    after = [await exchange(harness) for _ in range(REQUESTS_AFTER)]

    for outcome in [*before, *racing, *after]:
        items = outcome.body["items"]
        assert len(items) == len(ELEMENTS)
        # One consistent consent state per request: never mixed across items.
        reasons = {i["reason"] for i in items}
        assert reasons in ({"allow_consent"}, {"deny_consent_withdrawn"}), reasons
        assert {i["consent_id"] for i in items} == {"CNS-RACE"}

        # The audit names the record and the state each decision relied on.
        entries = await decision_entries(harness, outcome.body["exchange_id"])
        assert [e["reason"] for e in entries] == [i["reason"] for i in items]
        states = {json.dumps(e["consent_state"], sort_keys=True) for e in entries}
        assert len(states) == 1
        state = entries[0]["consent_state"]
        assert {e["consent_id"] for e in entries} == {"CNS-RACE"}
        if reasons == {"allow_consent"}:
            assert state["withdrawn_at_ns"] is None
        else:
            assert state["withdrawn_at_ns"] == withdrawn_at_ns

    assert all({i["reason"] for i in o.body["items"]} == {"allow_consent"} for o in before)
    # Every request sent after the withdrawal's commit was answered denies.
    for outcome in after + [o for o in racing if o.sent > committed]:
        assert {i["reason"] for i in outcome.body["items"]} == {"deny_consent_withdrawn"}
    # Allowed decisions were all made on the state before the withdrawal.
    allowed = [o for o in racing if o.body["items"][0]["reason"] == "allow_consent"]
    denied = [o for o in racing if o.body["items"][0]["reason"] == "deny_consent_withdrawn"]
    assert len(allowed) + len(denied) == RACING
