"""Every scenario request through the real API: loopback HTTP, real register
and partner simulators, the broker's clock set to the scenario's time.

Each scenario request is sent as one exchange (all its subjects x all its
elements, so preconditions see the request as a whole); the scenario's own
items are then checked. Before a scenario's first request, its consent records
and acute-danger declarations are made THROUGH THE API, each by the agency that
obtained it (the provider that holds the data) at the scenario's own time, and
withdrawals are recorded at their time; ids are the scenario's own."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from broker.demo import DEMO_AGENCIES
from tests.conftest import (
    Harness,
    broker_settings,
    clean,
    register_partners,
    serve_broker,
)
from tests.scenarios.scenario_data import (
    ScenarioRequest,
    acute_declaration_fact,
    load_scenarios,
    to_datetime,
)

SCENARIOS = load_scenarios()
REGISTRY = SCENARIOS.registry


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now().astimezone()

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture(scope="module")
def clock() -> Clock:
    return Clock()


@pytest.fixture(scope="module")
async def api(
    sqlite_url: str,
    simulators: dict[str, Any],
    tmp_path_factory: pytest.TempPathFactory,
    clock: Clock,
) -> AsyncIterator[Harness]:
    clean(sqlite_url)
    tmp: Path = tmp_path_factory.mktemp("scenarios")
    settings = broker_settings(sqlite_url, simulators, tmp)
    partners = await register_partners(
        settings, simulators, {party: oin for party, oin, _ in DEMO_AGENCIES}
    )
    async with serve_broker(settings, clock) as broker:
        yield Harness(broker, partners)


@pytest.fixture(scope="module")
def created(api: Harness) -> set[str]:
    """Ids of the consent records and declarations made in this broker so far."""
    return set()


def _bsn(key: str) -> str:
    if key in REGISTRY.households:
        return str(REGISTRY.persons[REGISTRY.households[key]["members"][0]]["bsn"])
    return str(REGISTRY.persons[key]["bsn"])


def _recorded_by(consent: dict[str, Any]) -> str:
    """The party that obtained the consent: the provider of the first scenario
    request that relies on it (same agreement, purpose and subject)."""
    for request in SCENARIOS.requests:
        raw = request.raw
        if (raw["agreement"], raw["purpose"]) == (consent["agreement"], consent["purpose"]) and any(
            i.subject == consent["subject"] for i in request.items()
        ):
            return str(raw["provider"])
    raise AssertionError(f"no request relies on {consent['id']}")


def _capacity(consent: dict[str, Any], giver: str) -> str:
    if giver != consent["subject"]:
        return "authority_holder"
    return "child" if REGISTRY.persons[giver].get("authority") else "subject"


async def _post(api: Harness, party: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    client = api.client(party)
    try:
        token = await client.token()
        response = await client.http.post(
            api.broker.base_url + path, json=body, headers={"Authorization": f"Bearer {token}"}
        )
    finally:
        await client.aclose()
    assert response.is_success, (path, response.text)
    result: dict[str, Any] = response.json()
    return result


async def _prepare(api: Harness, clock: Clock, created: set[str], request: ScenarioRequest) -> None:
    """The scenario's consent records and acute declarations, made through the API."""
    for consent in request.consents:
        if consent["id"] in created:
            continue
        party = _recorded_by(consent)
        clock.now = to_datetime(consent["given_at"])
        body: dict[str, Any] = {
            "id": consent["id"],
            "subject": _bsn(consent["subject"]),
            "givers": [
                {"bsn": _bsn(g), "capacity": _capacity(consent, g)} for g in consent["given_by"]
            ],
            "agreement_id": consent["agreement"],
            "purpose_id": consent["purpose"],
            "elements": consent.get("elements"),
            "recipients": consent.get("recipients"),
            "given_at": clock.now.isoformat(),
            "evidence_ref": f"scenario:{request.scenario_id}:{consent['id']}",
        }
        recorded = await _post(api, party, "/v1/consents", body)
        assert recorded["id"] == consent["id"]
        if consent.get("withdrawn_at") is not None:
            clock.now = to_datetime(consent["withdrawn_at"])
            await _post(
                api,
                party,
                f"/v1/consents/{consent['id']}/withdraw",
                {"subject": body["subject"], "withdrawn_by": _bsn(consent["withdrawn_by"])},
            )
        created.add(consent["id"])
    for declaration_id, declaration in request.declarations.items():
        if declaration_id in created:
            continue
        clock.now = to_datetime(declaration["declared_at"])
        declared = await _post(
            api,
            str(declaration["declared_by"]),
            "/v1/acute-declarations",
            {
                "id": declaration_id,
                "agreement_id": declaration["agreement"],
                "purpose_id": declaration["purpose"],
                "subjects": [_bsn(s) for s in declaration["subjects"]],
                "justification": f"Scenario {request.scenario_id}",
                "evidence": acute_declaration_fact(declaration).evidence,
            },
        )
        assert declared["id"] == declaration_id
        created.add(declaration_id)


@pytest.mark.parametrize("request_", SCENARIOS.requests, ids=[r.id for r in SCENARIOS.requests])
async def test_scenario_request_through_the_api(
    api: Harness, clock: Clock, created: set[str], request_: ScenarioRequest
) -> None:
    raw = request_.raw
    items = request_.items()
    subjects = list(dict.fromkeys(_bsn(i.subject) for i in items))
    elements = list(dict.fromkeys(i.element for i in items))
    await _prepare(api, clock, created, request_)
    clock.now = to_datetime(raw["at"])
    exchange: dict[str, Any] = {
        "agreement_id": raw["agreement"],
        "purpose_id": raw["purpose"],
        "provider": {"party": raw["provider"]},
        "case_reference": request_.id,
        "subjects": subjects,
        "elements": elements,
        "context": raw.get("context") or {},
    }
    if request_.acute_declaration_id is not None:
        exchange["acute_declaration_id"] = request_.acute_declaration_id
    client = api.client(str(raw["recipient"]))
    try:
        response = await client.exchange(exchange)
        assert response.status_code == 200, response.text
        body = response.json()
        released = client.decrypt(body["payload"])["items"] if body["payload"] else []
    finally:
        await client.aclose()
    for item in items:
        if item.subject in REGISTRY.households:
            members = {
                str(REGISTRY.persons[m]["bsn"])
                for m in REGISTRY.households[item.subject]["members"]
            }
            # A household element is one item for the household; an element about
            # persons (e.g. address.current) asked for "the household" is one
            # item per member, each decided alike.
            got = [
                i for i in body["items"] if i["element"] == item.element and i["subject"] in members
            ]
            assert got, item.case_id
            got = got[:1] if got[0]["subject_kind"] == "household" else got
            assert {g["reason"] for g in got} == {item.expect}, item.case_id
            continue
        got = [
            i
            for i in body["items"]
            if i["element"] == item.element and i["subject"] == _bsn(item.subject)
        ]
        assert len(got) == 1, (item.case_id, body["items"])
        assert got[0]["reason"] == item.expect, item.case_id
        if item.consent_considered is not None:
            assert got[0]["consent_id"] == item.consent_considered, item.case_id
        expected_declaration = (
            request_.acute_declaration_id if item.expect == "allow_break_glass" else None
        )
        assert got[0]["acute_declaration_id"] == expected_declaration, item.case_id
        if item.response is not None:
            values = [r["value"] for r in released if r["element"] == item.element]
            assert values == [item.response], item.case_id
