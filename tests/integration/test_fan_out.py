"""One exchange asking several providers at once (``providers``), end to end over loopback
HTTP on SQLite and PostgreSQL, through the real adapters against the simulated partner
systems: every provider decided by the policy engine as part of the input, fetched in
parallel, one answer whose items, payload, audit entries and signed receipt name their
provider; a slow provider times out alone; a provider the purpose does not list is denied
while the other answers."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from audit import verifier
from audit.models import AuditEntry
from audit.verify import verify_chain
from broker.exchange.models import DecisionRecord, Exchange
from tests.conftest import (
    AGENCIES,
    Harness,
    broker_settings,
    register_partners,
    serve_broker,
)

FATHER = "999990007"  # P01 of the Lindeburg registry
SAFETY_TABLE: dict[str, Any] = {
    "agreement_id": "agr-zvh-mdaplusplus",
    "purpose_id": "veiligheidsoverleg",
    "providers": [
        {"party": "politie", "elements": ["police.dv_incident"]},
        {"party": "veilig_thuis", "elements": ["vt.safety_assessment"]},
    ],
    "case_reference": "ZVH-LB-2026-0007",
    "subjects": [FATHER],
    "elements": ["police.dv_incident", "vt.safety_assessment"],
    "context": {"mda_case_id": "MDA-LB-2026-0007", "mda_case_status": "actief"},
}


async def exchange(harness: Harness, party: str, request: dict[str, Any]) -> httpx.Response:
    client = harness.client(party)
    try:
        return await client.exchange(request)
    finally:
        await client.aclose()


def by_provider(body: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for item in body["items"]:
        out.setdefault(item["provider"]["party"], []).append(item)
    return out


async def test_two_providers_both_answer(harness: Harness) -> None:
    client = harness.client("raad_kinderbescherming")
    try:
        response = await client.exchange(SAFETY_TABLE)
        assert response.status_code == 200, response.text
        body = response.json()
        released = client.decrypt(body["payload"])
    finally:
        await client.aclose()

    assert body["decision_id"] is None  # one decision per provider instead
    legs = body["providers"]
    assert [(leg["party"], leg["oin"]) for leg in legs] == [
        ("politie", AGENCIES["politie"]),
        ("veilig_thuis", AGENCIES["veilig_thuis"]),
    ]
    assert len({leg["exchange_id"] for leg in legs} | {body["exchange_id"]}) == 3
    assert len({leg["decision_id"] for leg in legs}) == 2

    items = by_provider(body)
    assert {p: [(i["element"], i["subject"]) for i in got] for p, got in items.items()} == {
        "politie": [("police.dv_incident", FATHER)],
        "veilig_thuis": [("vt.safety_assessment", FATHER)],
    }
    for party, got in items.items():
        assert all(i["provider"]["oin"] == AGENCIES[party] for i in got)
        assert all(i["reason"] == "allow_statutory_basis" for i in got)
        assert all(i["status"] == "released" for i in got)

    # The payload names the provider of each value.
    assert released["exchange_id"] == body["exchange_id"]
    assert sorted((i["provider"]["party"], i["element"]) for i in released["items"]) == [
        ("politie", "police.dv_incident"),
        ("veilig_thuis", "vt.safety_assessment"),
    ]

    # Receipt version 2: per-item provider, each part's record and decision.
    services = harness.broker.services
    async with httpx.AsyncClient(base_url=harness.broker.base_url) as http:
        jwks = (await http.get("/oauth/jwks")).json()
    receipt = verifier.verify_receipt(body["receipt"], jwks)
    assert receipt["v"] == 2
    assert "provider" not in receipt and "decision_id" not in receipt
    assert receipt["exchange_id"] == body["exchange_id"]
    assert receipt["providers"] == [
        {
            "oin": leg["oin"],
            "party": leg["party"],
            "exchange_id": leg["exchange_id"],
            "decision_id": leg["decision_id"],
        }
        for leg in legs
    ]
    assert [
        (i["provider"]["party"], i["element"], i["status"], i["source"]) for i in receipt["items"]
    ] == [(i["provider"]["party"], i["element"], i["status"], i["source"]) for i in body["items"]]
    assert {i["source"] for i in receipt["items"] if i["status"] == "released"} <= {
        i["provider"]["party"] for i in receipt["items"]
    } | {"unknown"}
    assert receipt["audit"]["leaf_indices"] == body["audit_indices"]
    assert FATHER not in body["receipt"]

    # Each provider's part is an exchange record of its own, audited under its own id
    # with the fan-out id; together exactly the cited entries.
    async with services.db.session() as session:
        rows = {
            r.id: r
            for r in await session.scalars(
                select(Exchange).where(Exchange.id.in_([leg["exchange_id"] for leg in legs]))
            )
        }
        decisions = (
            await session.scalars(
                select(DecisionRecord).where(
                    DecisionRecord.id.in_([leg["decision_id"] for leg in legs])
                )
            )
        ).all()
        entries = (
            await session.scalars(
                select(AuditEntry)
                .where(AuditEntry.seq.in_(body["audit_indices"]))
                .order_by(AuditEntry.seq)
            )
        ).all()
    for leg in legs:
        row = rows[leg["exchange_id"]]
        assert (row.provider_party, row.provider_oin) == (leg["party"], leg["oin"])
        assert (row.item_count, row.released_count) == (1, 1)
    assert {d.input["provider"] for d in decisions} == {"politie", "veilig_thuis"}
    assert [e.seq for e in entries] == body["audit_indices"]
    decided = [e for e in entries if e.kind == "decision"]
    assert len(decided) == 2
    assert [e.kind for e in entries].count("release") == 2
    for entry in entries:
        assert FATHER not in entry.entry
    leg_of = {leg["exchange_id"]: leg for leg in legs}
    for entry in decided:
        leg = leg_of[entry.exchange_id]
        assert f'"provider":"{leg["oin"]}"' in entry.entry
        assert f'"fan_out_id":"{body["exchange_id"]}"' in entry.entry
    summary = await verify_chain(services.db)
    assert summary.size > max(body["audit_indices"])


async def test_provider_outside_the_purpose_is_denied_the_other_answers(
    harness: Harness,
) -> None:
    # GGZ is no provider of the safety table (veiligheidsoverleg): the policy denies every
    # item of it (both elements: no "elements" limit), nothing is fetched from it; the police
    # answer as usual.
    request = dict(
        SAFETY_TABLE,
        providers=[{"party": "ggz"}, {"party": "politie", "elements": ["police.dv_incident"]}],
    )
    response = await exchange(harness, "raad_kinderbescherming", request)
    assert response.status_code == 200, response.text
    body = response.json()
    items = by_provider(body)
    assert {i["reason"] for i in items["ggz"]} == {"deny_purpose_mismatch"}
    assert {i["status"] for i in items["ggz"]} == {"denied"}
    assert {i["status"] for i in items["politie"]} == {"released"}
    assert body["payload"] is not None
    receipt_items = verifier.verify_receipt(
        body["receipt"], harness.broker.services.keyring.public_jwks()
    )["items"]
    assert [(i["provider"]["party"], i["outcome"]) for i in receipt_items] == [
        ("ggz", "deny"),
        ("ggz", "deny"),
        ("politie", "allow"),
    ]


@pytest.fixture
async def quick_timeout_harness(
    database_url: str, simulators: dict[str, Any], tmp_path: Path
) -> AsyncIterator[Harness]:
    """A broker whose adapters give a provider 0.6 s (retries included)."""
    settings = broker_settings(
        database_url, simulators, tmp_path, adapter_timeout_seconds=0.6, adapter_retries=0
    )
    partners = await register_partners(settings, simulators)
    async with serve_broker(settings) as broker:
        yield Harness(broker, partners)


async def test_slow_provider_times_out_alone(
    quick_timeout_harness: Harness, simulators: dict[str, Any]
) -> None:
    police = simulators["sources"]["politie"]
    async with httpx.AsyncClient(timeout=5.0) as admin:
        (await admin.post(police + "/_sim/faults", json={"latency_ms": 3000})).raise_for_status()
        try:
            client = quick_timeout_harness.client("raad_kinderbescherming")
            try:
                await client.token()
                started = time.monotonic()
                response = await client.exchange(SAFETY_TABLE)
                elapsed = time.monotonic() - started
                assert response.status_code == 200, response.text
                body = response.json()
                released = client.decrypt(body["payload"])
            finally:
                await client.aclose()
        finally:
            (await admin.delete(police + "/_sim/faults")).raise_for_status()
    # Partial: the police items time out, Veilig Thuis answered; no waiting for the 3 s.
    assert elapsed < 2.5
    items = by_provider(body)
    assert {i["status"] for i in items["politie"]} == {"timeout"}
    assert {i["status"] for i in items["veilig_thuis"]} == {"released"}
    assert {i["provider"]["party"] for i in released["items"]} == {"veilig_thuis"}
    receipt = verifier.verify_receipt(
        body["receipt"], quick_timeout_harness.broker.services.keyring.public_jwks()
    )
    assert {(i["provider"]["party"], i["status"]) for i in receipt["items"]} == {
        ("politie", "timeout"),
        ("veilig_thuis", "released"),
    }


async def test_single_provider_form_is_unchanged(harness: Harness) -> None:
    request = {k: v for k, v in SAFETY_TABLE.items() if k != "providers"}
    request["provider"] = {"party": "politie"}
    response = await exchange(harness, "raad_kinderbescherming", request)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["decision_id"] is not None
    assert body["providers"] == [
        {
            "party": "politie",
            "oin": AGENCIES["politie"],
            "exchange_id": body["exchange_id"],
            "decision_id": body["decision_id"],
        }
    ]
    receipt = verifier.verify_receipt(
        body["receipt"], harness.broker.services.keyring.public_jwks()
    )
    assert receipt["v"] == 1
    assert receipt["provider"] == {"oin": AGENCIES["politie"], "party": "politie"}


PROVIDER_CHOICE_FAULTS: list[tuple[dict[str, Any], str]] = [
    ({"provider": {"party": "politie"}}, "providers"),  # both forms
    ({"providers": None}, "provider"),  # neither
    ({"providers": [{"party": "politie"}, {"party": "politie"}]}, "providers"),
    ({"providers": [{"party": "politie"}, {"oin": AGENCIES["politie"]}]}, "providers[1]"),
    ({"providers": [{"party": "politie"}, {"party": "nobody"}]}, "providers[1].party"),
    ({"providers": [{"oin": f"{i:020d}"} for i in range(11)]}, "providers"),
    ({"providers": []}, "providers"),
    (
        {"providers": [{"party": "politie", "elements": ["police.zorgmelding"]}]},
        "providers[0].elements[0]",
    ),
    ({"providers": [{"party": "politie", "elements": ["police.dv_incident"]}]}, "elements[1]"),
]


async def test_provider_choice_is_validated(harness: Harness) -> None:
    client = harness.client("raad_kinderbescherming")
    try:
        for change, field in PROVIDER_CHOICE_FAULTS:
            request = {k: v for k, v in {**SAFETY_TABLE, **change}.items() if v is not None}
            response = await client.exchange(request)
            assert response.status_code == 422, response.text
            assert response.headers["content-type"].startswith("application/problem+json")
            assert response.json()["field"] == field, (change, response.json())
    finally:
        await client.aclose()
