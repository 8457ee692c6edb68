"""FhirAdapter against the FHIR R4 simulators (subprocess, real HTTP on loopback): mapping per
element, not_found, source-side filtering, faults -> per-item status, invalid resources, the
mapping's start-up validation, a Hypothesis property, and one exchange through the broker API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.healthcare import FhirAdapter, load_mapping
from adapters.healthcare.adapter import DEFAULT_MAPPING_PATH
from adapters.simulators import port_for, start_simulators
from broker.core.protocols import FetchedItem, FetchItem, FetchRequest, PartnerAdapter
from broker.core.types import ItemStatus, ResponseForm, SubjectKind

if TYPE_CHECKING:
    from tests.conftest import Harness

P01, P03, P04, P10, P13 = "999990007", "999990020", "999990032", "999990111", "999990147"
UNKNOWN = "123456782"
GGZ = "health.ggz_treatment_involvement"
CONTACT = "health.treating_professional_contact"
GP = "health.gp_registration"
DIAGNOSIS = "health.diagnosis"
MEDICATION = "health.medication"
MAPPED = [GGZ, CONTACT, GP, DIAGNOSIS, MEDICATION]


def request(items: list[tuple[str, str]], form: ResponseForm = ResponseForm.FULL) -> FetchRequest:
    return FetchRequest(
        exchange_id="exch-1",
        request_id="req-1",
        agreement_id="agr-zvh-mdaplusplus",
        purpose_id="zorginformatie_casusoverleg",
        recipient_party="veilig_thuis",
        response_form=form,
        items=tuple(FetchItem(e, b, SubjectKind.PERSON) for e, b in items),
    )


def by_key(items: list[FetchedItem]) -> dict[tuple[str, str], FetchedItem]:
    return {(i.element, i.bsn): i for i in items}


class Fhir:
    """The FHIR simulators' admin endpoints."""

    def __init__(self, urls: dict[str, str], client: httpx.AsyncClient) -> None:
        self.urls = urls
        self.client = client

    async def faults(self, party: str, **faults: Any) -> None:
        (await self.client.post(f"{self.urls[party]}/_sim/faults", json=faults)).raise_for_status()

    async def requested(self, party: str) -> list[str]:
        resp = await self.client.get(f"{self.urls[party]}/_sim/fhir-requests")
        resp.raise_for_status()
        return list(resp.json()["requested"])

    async def reset(self) -> None:
        for url in self.urls.values():
            for path in ("/_sim/faults", "/_sim/stats", "/_sim/fhir-requests"):
                (await self.client.delete(url + path)).raise_for_status()


@pytest.fixture(scope="session")
async def fhir_sim(sim_urls: dict[str, Any]) -> AsyncIterator[Fhir]:
    async with httpx.AsyncClient(timeout=5.0) as client:
        yield Fhir(dict(sim_urls["fhir"]), client)


@pytest.fixture(autouse=True)
async def _reset_fhir(fhir_sim: Fhir) -> AsyncIterator[None]:
    await fhir_sim.reset()
    yield
    await fhir_sim.reset()


@pytest.fixture
async def adapter() -> AsyncIterator[FhirAdapter]:
    a = FhirAdapter(timeout=1.0, retries=2, backoff_base=0.01, breaker_threshold=50)
    yield a
    await a.aclose()


async def test_implements_protocol(adapter: FhirAdapter, sim_urls: dict[str, Any]) -> None:
    assert isinstance(adapter, PartnerAdapter)
    assert adapter.kind == "fhir"
    assert set(sim_urls["fhir"]) == {"ggz", "huisarts"}


def test_fixed_fhir_ports(sim_urls: dict[str, Any]) -> None:
    base = int(sim_urls["brp"].rsplit(":", 1)[1])
    assert sim_urls["fhir"] == {
        "ggz": f"http://127.0.0.1:{base + 12}",
        "huisarts": f"http://127.0.0.1:{base + 13}",
    }
    assert port_for("fhir:huisarts", 9100) == 9113


async def test_fhir_key_only_with_ggz_or_huisarts() -> None:
    running = await start_simulators("127.0.0.1", 0, ["huisarts"])
    try:
        assert set(running.urls["fhir"]) == {"huisarts"}
    finally:
        await running.stop()
    running = await start_simulators("127.0.0.1", 0, ["politie"])
    try:
        assert "fhir" not in running.urls
    finally:
        await running.stop()


@pytest.mark.parametrize(
    ("party", "element", "bsn", "value"),
    [
        ("ggz", GGZ, P01, {"in_treatment": True, "setting": "fact", "since": "2024-02-01"}),
        ("ggz", GGZ, P03, {"in_treatment": True, "setting": "jeugd_ggz", "since": "2026-01-01"}),
        ("ggz", GGZ, P10, {"in_treatment": True, "setting": "ambulant", "since": "2025-03-01"}),
        ("ggz", GGZ, P13, {"in_treatment": True, "setting": "ambulant", "since": "2025-09-15"}),
        ("huisarts", GGZ, P01, {"in_treatment": False, "setting": "geen", "since": None}),
        (
            "ggz",
            CONTACT,
            P01,
            {"team": "FACT-team Lindeburg Noord (fictional)", "phone_24_7": "+31 00 0000001"},
        ),
        (
            "huisarts",
            GP,
            P04,
            {"practice": "Huisartsenpraktijk De Linde (fictional)", "phone": "+31 00 0000010"},
        ),
        (
            "ggz",
            DIAGNOSIS,
            P01,
            {
                "code_system": "DSM-5",
                "code": "F-SIM-01",
                "display": "Psychotic disorder (fictional)",
                "status": "actief",
            },
        ),
        (
            "huisarts",
            DIAGNOSIS,
            P01,
            {"code_system": "ICPC", "code": "P72", "display": "Schizofrenie", "status": "actief"},
        ),
        ("ggz", MEDICATION, P01, [{"name": "(fictional) antipsychotic", "since": "2025-05-01"}]),
    ],
)
async def test_maps_each_element(
    adapter: FhirAdapter,
    fhir_sim: Fhir,
    party: str,
    element: str,
    bsn: str,
    value: Any,
) -> None:
    [got] = await adapter.fetch(fhir_sim.urls[party], request([(element, bsn)]))
    assert (got.element, got.bsn, got.status, got.value) == (
        element,
        bsn,
        ItemStatus.RELEASED,
        value,
    )


async def test_not_found(adapter: FhirAdapter, fhir_sim: Fhir) -> None:
    items = [(e, UNKNOWN) for e in MAPPED] + [(MEDICATION, P10), (GP, P10)]
    got = by_key(await adapter.fetch(fhir_sim.urls["ggz"], request(items)))
    assert {k: v.status for k, v in got.items()} == dict.fromkeys(items, ItemStatus.NOT_FOUND)
    assert all(v.value is None for v in got.values())
    # An unknown BSN is one Patient search and nothing else.
    assert (await fhir_sim.requested("ggz")).count("Patient") == 2


async def test_boolean_only_answers_only_booleans(adapter: FhirAdapter, fhir_sim: Fhir) -> None:
    items = [(e, b) for e in MAPPED for b in (P01, P10, UNKNOWN)]
    got = by_key(
        await adapter.fetch(fhir_sim.urls["ggz"], request(items, ResponseForm.BOOLEAN_ONLY))
    )
    assert all(i.status is ItemStatus.RELEASED and isinstance(i.value, bool) for i in got.values())
    assert got[(GGZ, P01)].value is True
    assert got[(GGZ, UNKNOWN)].value is False
    assert got[(MEDICATION, P10)].value is False
    huisarts = await adapter.fetch(
        fhir_sim.urls["huisarts"], request([(GGZ, P01)], ResponseForm.BOOLEAN_ONLY)
    )
    assert huisarts[0].value is False  # registered with the GP, not in GGZ treatment


@pytest.mark.parametrize(
    ("elements", "expected"),
    [
        ([GGZ], ["Patient", "EpisodeOfCare"]),
        ([CONTACT], ["Patient", "CareTeam"]),
        ([GP], ["Patient"]),
        ([GGZ, DIAGNOSIS], ["Patient", "Condition", "EpisodeOfCare"]),
        (["addiction.treatment_involvement"], []),
    ],
)
async def test_source_side_filtering(
    adapter: FhirAdapter, fhir_sim: Fhir, elements: list[str], expected: list[str]
) -> None:
    got = await adapter.fetch(fhir_sim.urls["ggz"], request([(e, P01) for e in elements]))
    assert [i.element for i in got] == elements
    assert sorted(await fhir_sim.requested("ggz")) == sorted(expected)
    if not expected:  # an element without a FHIR mapping: nothing is asked, nothing answered
        assert got[0].status is ItemStatus.UNAVAILABLE


@pytest.mark.parametrize(
    ("faults", "status", "requests"),
    [
        ({"status": 500}, ItemStatus.UNAVAILABLE, 3),  # retried twice
        ({"status": 429}, ItemStatus.UNAVAILABLE, 3),
        ({"status": 404}, ItemStatus.UNAVAILABLE, 1),  # not retried
        # aiohttp itself repeats an idempotent GET once on a dropped keep-alive connection
        ({"drop_connection": True}, ItemStatus.UNAVAILABLE, 3),
        ({"malformed": True}, ItemStatus.UNAVAILABLE, 1),
        ({"latency_ms": 3000}, ItemStatus.TIMEOUT, 1),
        ({"invalid_resource": "Patient"}, ItemStatus.UNAVAILABLE, 1),
    ],
)
async def test_faults_give_per_item_status(
    adapter: FhirAdapter,
    fhir_sim: Fhir,
    faults: dict[str, Any],
    status: ItemStatus,
    requests: int,
) -> None:
    await fhir_sim.faults("ggz", **faults)
    got = await adapter.fetch(fhir_sim.urls["ggz"], request([(GGZ, P01), (CONTACT, P01)]))
    assert [i.status for i in got] == [status, status]
    requested = await fhir_sim.requested("ggz")
    assert set(requested) == {"Patient"}
    if faults.get("drop_connection"):
        assert requests <= len(requested) <= 2 * requests
    else:
        assert len(requested) == requests


async def test_transient_failure_is_retried(adapter: FhirAdapter, fhir_sim: Fhir) -> None:
    await fhir_sim.faults("ggz", status=503, fail_rate=0.5)
    got = await adapter.fetch(fhir_sim.urls["ggz"], request([(GGZ, b) for b in (P01, P03, P10)]))
    # With two retries per search most calls get through; none is ever wrong.
    assert all(i.status in (ItemStatus.RELEASED, ItemStatus.UNAVAILABLE) for i in got)
    assert adapter.health()[fhir_sim.urls["ggz"]]["attempts"] >= 6


async def test_invalid_resource_makes_only_its_items_unavailable(
    adapter: FhirAdapter, fhir_sim: Fhir
) -> None:
    await fhir_sim.faults("ggz", invalid_resource="Condition")
    got = by_key(await adapter.fetch(fhir_sim.urls["ggz"], request([(GGZ, P01), (DIAGNOSIS, P01)])))
    assert got[(DIAGNOSIS, P01)].status is ItemStatus.UNAVAILABLE
    assert got[(DIAGNOSIS, P01)].value is None
    assert got[(GGZ, P01)].status is ItemStatus.RELEASED
    await fhir_sim.faults("ggz", invalid_resource="*")
    got = by_key(await adapter.fetch(fhir_sim.urls["ggz"], request([(GGZ, P01)])))
    assert got[(GGZ, P01)].status is ItemStatus.UNAVAILABLE


async def test_circuit_breaker_opens(fhir_sim: Fhir) -> None:
    url = fhir_sim.urls["huisarts"]
    async with FhirAdapter(timeout=1.0, retries=0, breaker_threshold=2) as adapter:
        await fhir_sim.faults("huisarts", status=500)
        for _ in range(2):
            assert (await adapter.fetch(url, request([(GP, P01)])))[0].status is (
                ItemStatus.UNAVAILABLE
            )
        await fhir_sim.faults("huisarts")
        short = await adapter.fetch(url, request([(GP, P01)]))
        assert short[0].status is ItemStatus.UNAVAILABLE
        assert adapter.health()[url]["state"] == "open"
        assert adapter.health()[url]["short_circuited"] == 1
        assert await fhir_sim.requested("huisarts") == ["Patient", "Patient"]


async def test_closed_port_and_bad_endpoint(adapter: FhirAdapter, closed_port_url: str) -> None:
    got = await adapter.fetch(closed_port_url, request([(GGZ, P01)]))
    assert got[0].status is ItemStatus.UNAVAILABLE
    got = await adapter.fetch("ftp://example.invalid", request([(GGZ, P01)]))
    assert got[0].status is ItemStatus.UNAVAILABLE


def test_mapping_is_validated_against_the_catalogue(tmp_path: Path) -> None:
    mapping = load_mapping()
    assert set(mapping.elements) == set(MAPPED)
    text = DEFAULT_MAPPING_PATH.read_text(encoding="utf-8")
    cases = {
        "element": text.replace("health.medication:", "health.no_such_element:"),
        "resource": text.replace("resource: MedicationStatement", "resource: NoSuchResource"),
        "derivation": text.replace("derive: medication_list", "derive: guess"),
        "version": text.replace("fhir_version: R4 ", "fhir_version: R5 "),
    }
    for name, bad in cases.items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(bad, encoding="utf-8")
        with pytest.raises(ValueError, match=r"mapping\.yaml"):
            FhirAdapter(mapping_path=path)


CATALOGUE_SAMPLE = [*MAPPED, "addiction.substance_use_indicator", "vt.report_exists", "x.y"]
BSNS = [P01, P03, P04, P10, P13, UNKNOWN]


@pytest.fixture(scope="module")
async def shared_adapter() -> AsyncIterator[FhirAdapter]:
    a = FhirAdapter(timeout=2.0, retries=0, breaker_threshold=10_000)
    yield a
    await a.aclose()


@given(
    items=st.lists(
        st.tuples(st.sampled_from(CATALOGUE_SAMPLE), st.sampled_from(BSNS)), max_size=10
    ),
    form=st.sampled_from(ResponseForm),
    party=st.sampled_from(["ggz", "huisarts"]),
)
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
async def test_never_returns_an_element_outside_the_allowed_set(
    shared_adapter: FhirAdapter,
    fhir_sim: Fhir,
    items: list[tuple[str, str]],
    form: ResponseForm,
    party: str,
) -> None:
    got = await shared_adapter.fetch(fhir_sim.urls[party], request(items, form))
    returned = [(i.element, i.bsn) for i in got]
    assert set(returned) == set(items)
    assert len(returned) == len(set(items))
    for i in got:
        if i.status is ItemStatus.RELEASED and form is ResponseForm.BOOLEAN_ONLY:
            assert isinstance(i.value, bool)
        if i.element not in MAPPED:
            assert i.status is ItemStatus.UNAVAILABLE


# ---------------------------------------------------------------------- through the broker


async def test_ggz_element_through_the_broker_api(
    harness: Harness, simulators: dict[str, Any]
) -> None:
    """Veilig Thuis asks GGZ (a FHIR agency) under MDA++ with Ruben's recorded consent."""
    fhir_url = simulators["fhir"]["ggz"]
    consent = {
        "subject": P01,
        "givers": [{"bsn": P01, "capacity": "subject"}],
        "agreement_id": "agr-zvh-mdaplusplus",
        "purpose_id": "zorginformatie_casusoverleg",
        "given_at": "2026-06-19T15:00:00+02:00",
        "evidence_ref": "ggz-dms:TOE-2026-0999",
    }
    ggz = harness.client("ggz")
    try:
        token = await ggz.token()
        created = await ggz.http.post(
            harness.broker.base_url + "/v1/consents",
            json=consent,
            headers={"Authorization": f"Bearer {token}"},
        )
        assert created.status_code == 201, created.text
    finally:
        await ggz.aclose()

    async with httpx.AsyncClient() as admin:
        (await admin.delete(fhir_url + "/_sim/fhir-requests")).raise_for_status()
        vt = harness.client("veilig_thuis")
        try:
            response = await vt.exchange(
                {
                    "agreement_id": "agr-zvh-mdaplusplus",
                    "purpose_id": "zorginformatie_casusoverleg",
                    "provider": {"party": "ggz"},
                    "subjects": [P01],
                    "elements": [GGZ, DIAGNOSIS, MEDICATION],
                    "context": {"mda_case_id": "MDA-LB-2026-015", "mda_case_status": "actief"},
                }
            )
            assert response.status_code == 200, response.text
            body = response.json()
            released = {i["element"]: i["value"] for i in vt.decrypt(body["payload"])["items"]}
        finally:
            await vt.aclose()
        requested = (await admin.get(fhir_url + "/_sim/fhir-requests")).json()["requested"]
    reasons = {i["element"]: (i["reason"], i["status"]) for i in body["items"]}
    assert reasons[GGZ] == ("allow_consent", "released")
    assert reasons[DIAGNOSIS] == ("allow_consent", "released")
    assert reasons[MEDICATION][0] == "deny_element_not_allowed"
    assert released[GGZ] == {"in_treatment": True, "setting": "fact", "since": "2024-02-01"}
    assert released[DIAGNOSIS]["code_system"] == "DSM-5"
    assert MEDICATION not in released
    # Source-side filtering end to end: the denied element was never asked of the GGZ system.
    assert sorted(requested) == ["Condition", "EpisodeOfCare", "Patient"]
