"""PartnerApiAdapter against the partner simulators (subprocess, real HTTP on loopback)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from structlog.testing import capture_logs

from adapters.partner_api import PartnerApiAdapter
from broker.core.protocols import FetchedItem, FetchItem, FetchRequest, PartnerAdapter
from broker.core.types import ItemStatus, ResponseForm, SubjectKind

if TYPE_CHECKING:
    from conftest import SimAdmin

P, H = SubjectKind.PERSON, SubjectKind.HOUSEHOLD


def request(
    items: list[tuple[str, str, SubjectKind]],
    form: ResponseForm = ResponseForm.FULL,
    request_id: str = "req-1",
) -> FetchRequest:
    return FetchRequest(
        exchange_id="exch-1",
        request_id=request_id,
        agreement_id="agr-test",
        purpose_id="purpose-test",
        recipient_party="raad_kinderbescherming",
        response_form=form,
        items=tuple(FetchItem(element=e, bsn=b, subject_kind=k) for e, b, k in items),
    )


def by_key(items: list[FetchedItem]) -> dict[tuple[str, str], FetchedItem]:
    return {(i.element, i.bsn): i for i in items}


@pytest.fixture
async def adapter() -> AsyncIterator[PartnerApiAdapter]:
    a = PartnerApiAdapter(timeout=1.0, retries=2, backoff_base=0.01, breaker_threshold=50)
    yield a
    await a.aclose()


@pytest.fixture
def vt_url(sim_urls: dict[str, Any]) -> str:
    return str(sim_urls["parties"]["veilig_thuis"])


async def test_implements_protocol(adapter: PartnerApiAdapter) -> None:
    assert isinstance(adapter, PartnerAdapter)
    assert adapter.kind == "partner_api"


async def test_fetch_registry_values(
    adapter: PartnerApiAdapter, vt_url: str, bsn: dict[str, str]
) -> None:
    items = [
        ("person.name", bsn["P03"], P),
        ("person.birth_date", bsn["P03"], P),
        ("person.bsn", bsn["P03"], P),
        ("address.current", bsn["P03"], H),
        ("household.composition", bsn["P06"], H),
        ("child.authority", bsn["P07"], P),
        ("vt.case_status", bsn["P07"], H),
        ("vt.report_exists", bsn["P10"], H),
        ("vt.report_exists", bsn["P13"], H),
        ("police.dv_incident", bsn["P01"], P),
    ]
    got = by_key(await adapter.fetch(vt_url, request(items)))
    assert len(got) == len(items)
    assert all(i.status is ItemStatus.RELEASED for i in got.values())

    def value(element: str, person: str) -> Any:
        return got[(element, bsn[person])].value

    assert value("person.name", "P03") == {
        "given_names": "Noor",
        "prefix": None,
        "surname": "Hoekstra",
    }
    assert value("person.birth_date", "P03") == "2012-09-03"
    assert value("person.bsn", "P03") == bsn["P03"]
    assert value("address.current", "P03") == {
        "street": "Esdoornlaan",
        "number": "12",
        "postcode": "9999 XA",
        "city": "Lindeburg",
    }
    assert value("household.composition", "P06") == [
        {"person_ref": "P06", "relation": "moeder"},
        {"person_ref": "P07", "relation": "kind"},
        {"person_ref": "P08", "relation": "kind"},
    ]
    assert value("child.authority", "P07") == {
        "type": "eenhoofdig_gezag_moeder",
        "holders": ["P06"],
        "parents_without_authority": ["P09"],
    }
    assert value("vt.case_status", "P07") == {
        "status": "afgesloten",
        "since": "2026-11-25",
        "handed_over_to": None,
    }
    assert value("vt.report_exists", "P10") is True
    assert value("vt.report_exists", "P13") is False
    assert set(value("police.dv_incident", "P01")) >= {"incident_id", "type", "roles"}
    assert got[("vt.case_status", bsn["P07"])].source == "veilig_thuis"


async def test_not_found(
    adapter: PartnerApiAdapter, vt_url: str, bsn: dict[str, str], unknown_bsn: str
) -> None:
    got = by_key(
        await adapter.fetch(
            vt_url,
            request(
                [
                    ("person.name", unknown_bsn, P),
                    ("child.authority", bsn["P01"], P),  # an adult has no authority record
                    ("vt.case_status", bsn["P13"], H),  # not in the Veilig Thuis register
                ]
            ),
        )
    )
    assert {k: v.status for k, v in got.items()} == {
        ("person.name", unknown_bsn): ItemStatus.NOT_FOUND,
        ("child.authority", bsn["P01"]): ItemStatus.NOT_FOUND,
        ("vt.case_status", bsn["P13"]): ItemStatus.NOT_FOUND,
    }
    assert all(v.value is None for v in got.values())


async def test_boolean_only(
    adapter: PartnerApiAdapter, vt_url: str, bsn: dict[str, str], unknown_bsn: str
) -> None:
    items = [
        ("vt.report_exists", bsn["P10"], H),
        ("vt.report_exists", bsn["P13"], H),
        ("vt.report_exists", unknown_bsn, H),
    ]
    got = by_key(await adapter.fetch(vt_url, request(items, ResponseForm.BOOLEAN_ONLY)))
    assert got[("vt.report_exists", bsn["P10"])].value is True
    assert got[("vt.report_exists", bsn["P13"])].value is False
    assert got[("vt.report_exists", unknown_bsn)].value is False
    assert all(i.status is ItemStatus.RELEASED for i in got.values())


async def test_boolean_only_yes_and_no_have_the_same_wire_shape(
    vt_url: str, bsn: dict[str, str]
) -> None:
    def body(person: str) -> dict[str, Any]:
        return {
            "exchange_id": "e",
            "request_id": "r",
            "agreement_id": "a",
            "purpose_id": "p",
            "recipient_party": "ggz",
            "response_form": "boolean_only",
            "items": [
                {
                    "element": "vt.report_exists",
                    "subject": {"bsn": bsn[person], "kind": "household"},
                }
            ],
        }

    async with httpx.AsyncClient() as client:
        yes = (await client.post(f"{vt_url}/broker/v1/fetch", json=body("P10"))).json()
        no = (await client.post(f"{vt_url}/broker/v1/fetch", json=body("P13"))).json()
    assert yes["items"][0]["value"] is True and no["items"][0]["value"] is False
    assert yes.keys() == no.keys()
    assert yes["items"][0].keys() == no["items"][0].keys() == {"element", "bsn", "status", "value"}
    assert yes["items"][0]["status"] == no["items"][0]["status"] == "ok"


async def test_only_requested_items_are_sent_and_answered(
    adapter: PartnerApiAdapter, vt_url: str, bsn: dict[str, str]
) -> None:
    items = [("person.name", bsn["P03"], P), ("person.name", bsn["P03"], P)]  # duplicate
    got = await adapter.fetch(vt_url, request(items))
    assert [(i.element, i.bsn) for i in got] == [("person.name", bsn["P03"])]
    assert await adapter.fetch(vt_url, request([])) == []


async def test_unrequested_item_is_dropped(
    adapter: PartnerApiAdapter, vt_url: str, sim_admin: SimAdmin, bsn: dict[str, str]
) -> None:
    await sim_admin.set_faults(vt_url, extra_item=True)
    with capture_logs() as logs:
        got = await adapter.fetch(vt_url, request([("person.name", bsn["P03"], P)]))
    assert [(i.element, i.bsn, i.status) for i in got] == [
        ("person.name", bsn["P03"], ItemStatus.RELEASED)
    ]
    assert adapter.health()[vt_url]["dropped_unrequested"] == 1
    dropped = [e for e in logs if e["event"] == "partner_unrequested_items_dropped"]
    assert len(dropped) == 1
    assert_no_personal_data(logs, bsn)


async def test_missing_answer_becomes_unavailable(
    adapter: PartnerApiAdapter, vt_url: str, sim_admin: SimAdmin, bsn: dict[str, str]
) -> None:
    await sim_admin.set_faults(vt_url, omit_item=True)
    got = by_key(
        await adapter.fetch(
            vt_url, request([("person.name", bsn["P03"], P), ("person.name", bsn["P04"], P)])
        )
    )
    assert got[("person.name", bsn["P03"])].status is ItemStatus.RELEASED
    assert got[("person.name", bsn["P04"])].status is ItemStatus.UNAVAILABLE


async def test_non_boolean_answer_to_boolean_only_is_unavailable(
    adapter: PartnerApiAdapter, vt_url: str, sim_admin: SimAdmin, bsn: dict[str, str]
) -> None:
    await sim_admin.set_faults(vt_url, non_boolean=True)
    got = await adapter.fetch(
        vt_url, request([("vt.report_exists", bsn["P10"], H)], ResponseForm.BOOLEAN_ONLY)
    )
    assert [(i.status, i.value) for i in got] == [(ItemStatus.UNAVAILABLE, None)]


def assert_no_personal_data(logs: Sequence[Mapping[str, Any]], bsn: dict[str, str]) -> None:
    text = json.dumps(logs, default=str)
    for number in bsn.values():
        assert number not in text
    for personal in ("Hoekstra", "Esdoornlaan", "2012-09-03", "value"):
        assert personal not in text


ITEMS = [("person.name", "P03", P), ("vt.report_exists", "P10", H)]


@pytest.mark.parametrize(
    ("faults", "expected_status", "expected_requests"),
    [
        ({"latency_ms": 1500}, ItemStatus.TIMEOUT, 1),
        ({"status": 500}, ItemStatus.UNAVAILABLE, 3),  # 1 + 2 bounded retries
        ({"status": 502}, ItemStatus.UNAVAILABLE, 3),
        ({"status": 404}, ItemStatus.UNAVAILABLE, 1),  # 4xx is not retried
        ({"drop_connection": True}, ItemStatus.UNAVAILABLE, 3),
        ({"malformed": True}, ItemStatus.UNAVAILABLE, 1),
    ],
)
async def test_provider_faults(
    adapter: PartnerApiAdapter,
    vt_url: str,
    sim_admin: SimAdmin,
    bsn: dict[str, str],
    faults: dict[str, Any],
    expected_status: ItemStatus,
    expected_requests: int,
) -> None:
    await sim_admin.set_faults(vt_url, **faults)
    with capture_logs() as logs:
        got = await adapter.fetch(vt_url, request([(e, bsn[p], k) for e, p, k in ITEMS]))
    assert [(i.status, i.value) for i in got] == [(expected_status, None)] * len(ITEMS)
    assert await sim_admin.requests(vt_url) == expected_requests
    assert logs, "a provider fault is logged"
    assert_no_personal_data(logs, bsn)


async def test_timeout_covers_retries(
    vt_url: str, sim_admin: SimAdmin, bsn: dict[str, str]
) -> None:
    # 500 after 300 ms: the second attempt no longer fits in the 0.5 s budget.
    await sim_admin.set_faults(vt_url, latency_ms=300, status=500)
    async with PartnerApiAdapter(timeout=0.5, retries=5, backoff_base=0.01) as a:
        loop = asyncio.get_running_loop()
        started = loop.time()
        got = await a.fetch(vt_url, request([("person.name", bsn["P03"], P)]))
        elapsed = loop.time() - started
    assert got[0].status in {ItemStatus.TIMEOUT, ItemStatus.UNAVAILABLE}
    assert elapsed < 0.9


async def test_unreachable_endpoint(
    adapter: PartnerApiAdapter, closed_port_url: str, bsn: dict[str, str]
) -> None:
    got = await adapter.fetch(closed_port_url, request([("person.name", bsn["P03"], P)]))
    assert got[0].status is ItemStatus.UNAVAILABLE
    assert adapter.health()[closed_port_url]["attempts"] == 3


async def test_invalid_endpoint_never_raises(
    adapter: PartnerApiAdapter, bsn: dict[str, str]
) -> None:
    got = await adapter.fetch("not a url", request([("person.name", bsn["P03"], P)]))
    assert got[0].status is ItemStatus.UNAVAILABLE


async def test_circuit_breaker_opens_short_circuits_and_recovers(
    vt_url: str, sim_admin: SimAdmin, bsn: dict[str, str]
) -> None:
    await sim_admin.set_faults(vt_url, status=500)
    req = request([("person.name", bsn["P03"], P)])
    async with PartnerApiAdapter(
        timeout=1.0, retries=0, breaker_threshold=3, breaker_cooldown=0.3
    ) as a:
        for _ in range(3):
            assert (await a.fetch(vt_url, req))[0].status is ItemStatus.UNAVAILABLE
        health = a.health()[vt_url]
        assert health["state"] == "open"
        assert health["failures"] == 3
        assert await sim_admin.requests(vt_url) == 3

        # Open: answered at once, the provider is not called.
        assert (await a.fetch(vt_url, req))[0].status is ItemStatus.UNAVAILABLE
        assert await sim_admin.requests(vt_url) == 3
        assert a.health()[vt_url]["short_circuited"] == 1

        # Half-open after the cool-down: a failing probe opens it again.
        await asyncio.sleep(0.35)
        assert (await a.fetch(vt_url, req))[0].status is ItemStatus.UNAVAILABLE
        assert await sim_admin.requests(vt_url) == 4
        assert a.health()[vt_url]["state"] == "open"

        # Provider healthy again: the next probe closes the circuit.
        await sim_admin.set_faults(vt_url)
        await asyncio.sleep(0.35)
        assert (await a.fetch(vt_url, req))[0].status is ItemStatus.RELEASED
        assert a.health()[vt_url]["state"] == "closed"
        assert a.health()[vt_url]["consecutive_failures"] == 0


async def test_breaker_is_per_endpoint(
    sim_urls: dict[str, Any], sim_admin: SimAdmin, bsn: dict[str, str]
) -> None:
    vt, politie = sim_urls["parties"]["veilig_thuis"], sim_urls["parties"]["politie"]
    await sim_admin.set_faults(vt, status=500)
    req = request([("person.name", bsn["P03"], P)])
    async with PartnerApiAdapter(retries=0, breaker_threshold=1, breaker_cooldown=60) as a:
        await a.fetch(vt, req)
        assert (await a.fetch(politie, req))[0].status is ItemStatus.RELEASED
        health = a.health()
        assert health[vt]["state"] == "open"
        assert health[politie]["state"] == "closed"


async def test_one_shared_session(
    adapter: PartnerApiAdapter, sim_urls: dict[str, Any], bsn: dict[str, str]
) -> None:
    req = request([("person.name", bsn["P03"], P)])
    results = await asyncio.gather(
        *(adapter.fetch(url, req) for url in sim_urls["parties"].values() for _ in range(3))
    )
    assert all(r[0].status is ItemStatus.RELEASED for r in results)
    session = adapter._session
    assert session is not None
    await adapter.fetch(sim_urls["parties"]["politie"], req)
    assert adapter._session is session
    await adapter.aclose()
    assert session.closed
    # Usable again after aclose: a new session is created lazily.
    assert (await adapter.fetch(sim_urls["parties"]["politie"], req))[0].status is (
        ItemStatus.RELEASED
    )


async def test_cancellation_propagates_and_is_not_a_provider_failure(
    vt_url: str, sim_admin: SimAdmin, bsn: dict[str, str]
) -> None:
    await sim_admin.set_faults(vt_url, latency_ms=2000)
    async with PartnerApiAdapter(timeout=5.0, breaker_threshold=1) as a:
        task = asyncio.create_task(a.fetch(vt_url, request([("person.name", bsn["P03"], P)])))
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        health = a.health()[vt_url]
    assert health["state"] == "closed"
    assert health["failures"] == health["timeouts"] == 0
