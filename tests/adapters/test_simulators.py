"""The simulators themselves: CLI, port order, ready file, admin API, data and generator."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from adapters.brp import BrpRegister
from adapters.partner_api import PartnerApiAdapter
from adapters.simulators import PARTY_ORDER, port_for, start_simulators
from adapters.simulators.generate import generate_families
from adapters.simulators.registry import Registry, split_name
from broker.core.bsn import is_valid_bsn
from broker.core.protocols import FetchItem, FetchRequest
from broker.core.types import ItemStatus, ResponseForm, SubjectKind

if TYPE_CHECKING:
    from collections.abc import Callable

    from conftest import SimAdmin, SimProcess


def test_ready_file_and_fixed_port_order(sim_urls: dict[str, Any]) -> None:
    base = int(sim_urls["brp"].rsplit(":", 1)[1])
    assert list(sim_urls["parties"]) == list(PARTY_ORDER)
    for i, party in enumerate(PARTY_ORDER):
        assert sim_urls["parties"][party] == f"http://127.0.0.1:{base + 1 + i}"
        assert port_for(party, base) == base + 1 + i
    assert port_for("politie", 9100) == 9101
    assert port_for("zorg_en_veiligheidshuis", 9100) == 9111


def test_cli_subset_keeps_ports_and_stops_on_sigterm(
    tmp_path: Path, start_sim: Callable[..., SimProcess]
) -> None:
    proc = start_sim(tmp_path, "--parties", "ggz,politie")
    try:
        base = int(proc.urls["brp"].rsplit(":", 1)[1])
        assert proc.urls["parties"] == {
            "politie": f"http://127.0.0.1:{base + 1}",
            "ggz": f"http://127.0.0.1:{base + 4}",
        }
        resp = httpx.get(f"{proc.urls['parties']['ggz']}/_sim/faults")
        assert resp.status_code == 200
    finally:
        code = proc.stop()
    assert code == 0
    printed = proc.log.read_text().strip().splitlines()
    assert json.loads(printed[0]) == proc.urls
    assert not list(tmp_path.glob(".ready*"))  # atomic write left no temp file


async def test_admin_rejects_invalid_fault_config(
    sim_admin: SimAdmin, sim_urls: dict[str, Any]
) -> None:
    url = sim_urls["parties"]["politie"]
    resp = await sim_admin.client.post(f"{url}/_sim/faults", json={"fail_rate": 2})
    assert resp.status_code == 400
    resp = await sim_admin.client.post(f"{url}/_sim/faults", json={"bogus": True})
    assert resp.status_code == 400
    current = (await sim_admin.client.get(f"{url}/_sim/faults")).json()
    assert current["fail_rate"] is None and current["status"] is None


async def test_partial_fail_rate_is_deterministic_and_bounded(
    sim_admin: SimAdmin, sim_urls: dict[str, Any], bsn: dict[str, str]
) -> None:
    url = sim_urls["parties"]["school"]
    await sim_admin.set_faults(url, status=503, fail_rate=0.5)
    req = FetchRequest(
        "e",
        "r",
        "a",
        "p",
        "veilig_thuis",
        ResponseForm.FULL,
        (FetchItem("person.name", bsn["P03"], SubjectKind.PERSON),),
    )
    async with PartnerApiAdapter(retries=0, breaker_threshold=1000) as adapter:
        statuses = [(await adapter.fetch(url, req))[0].status for _ in range(40)]
    assert ItemStatus.RELEASED in statuses and ItemStatus.UNAVAILABLE in statuses
    stats = (await sim_admin.client.get(f"{url}/_sim/stats")).json()
    assert stats["requests"] == 40 and 0 < stats["faults_injected"] < 40


async def test_brp_fields_selection(sim_urls: dict[str, Any], bsn: dict[str, str]) -> None:
    async with httpx.AsyncClient() as client:
        resp = await client.post(
            f"{sim_urls['brp']}/haalcentraal/api/brp/personen",
            json={
                "type": "RaadpleegMetBurgerservicenummer",
                "burgerservicenummer": [bsn["P06"]],
                "fields": ["naam", "geboorte.datum"],
            },
        )
        too_many = await client.post(
            f"{sim_urls['brp']}/haalcentraal/api/brp/personen",
            json={
                "type": "RaadpleegMetBurgerservicenummer",
                "burgerservicenummer": [bsn["P06"]] * 21,
                "fields": ["naam"],
            },
        )
    person = resp.json()["personen"][0]
    assert set(person) == {"naam", "geboorte"}
    assert person["naam"] == {"voornamen": "Yara", "geslachtsnaam": "Mansour"}
    assert too_many.status_code == 400


async def test_generated_families_are_served(sim_urls: dict[str, Any], families: int) -> None:
    registry = Registry.load()
    exclude = {p.bsn for p in registry.iter_persons()}
    doc = generate_families(families, exclude_bsns=exclude)
    registry.add_document(doc)
    children = [p for p in registry.iter_persons() if p.ref.startswith("G") and p.is_minor]
    async with BrpRegister(sim_urls["brp"]) as brp:
        found = await brp.lookup([p.bsn for p in registry.iter_persons()])
    assert len(found) == len(registry.persons)
    for child in children:
        assert child.authority is not None
        holders = {registry.persons[h].bsn for h in child.authority.holders}
        assert set(found[child.bsn].authority_holder_bsns) == holders


def test_generator_is_deterministic_and_valid() -> None:
    a = generate_families(60, seed=7)
    b = generate_families(60, seed=7)
    c = generate_families(20, seed=7)
    assert a == b
    assert {k: a["persons"][k] for k in c["persons"]} == c["persons"]  # prefix-stable
    bsns = [p["bsn"] for p in a["persons"].values()]
    assert len(bsns) == len(set(bsns))
    assert all(is_valid_bsn(x) for x in bsns)
    registry = Registry.load()
    registry.add_document(a)  # loads without duplicates next to the scenario registry
    assert len(registry.persons) == 14 + len(a["persons"])
    assert generate_families(60, seed=8) != a


@pytest.mark.parametrize(
    ("full", "expected"),
    [
        ("Noor Hoekstra", ("Noor", None, "Hoekstra")),
        ("Anna Maria van der Meer", ("Anna Maria", "van der", "Meer")),
        ("Bram de Boer", ("Bram", "de", "Boer")),
        ("Lotte Zandbergen", ("Lotte", None, "Zandbergen")),
    ],
)
def test_split_name(full: str, expected: tuple[str, str | None, str]) -> None:
    assert split_name(full) == expected


def test_registry_facts() -> None:
    reg = Registry.load()
    p10, p13, p09 = reg.persons["P10"], reg.persons["P13"], reg.persons["P09"]
    assert reg.vt_record(p10) is not None  # linked person of HH-JONKMAN
    assert reg.vt_record(p13) is None
    assert reg.household_of(p09) is None
    assert reg.relation(reg.persons["P01"]) == "vader"
    assert reg.relation(reg.persons["P12"]) == "moeder"
    assert reg.relation(reg.persons["P05"]) == "kind"


async def test_in_process_api_with_ephemeral_ports(bsn: dict[str, str]) -> None:
    running = await start_simulators("127.0.0.1", 0, ["veilig_thuis"], families=2)
    try:
        assert set(running.urls) == {"brp", "parties", "sources"}
        assert set(running.urls["parties"]) == {"veilig_thuis"}
        assert set(running.urls["sources"]) == {"veilig_thuis"}
        async with BrpRegister(running.brp_url) as brp:
            assert bsn["P03"] in await brp.lookup([bsn["P03"]])
        req = FetchRequest(
            "e",
            "r",
            "a",
            "p",
            "ggz",
            ResponseForm.BOOLEAN_ONLY,
            (FetchItem("vt.report_exists", bsn["P10"], SubjectKind.HOUSEHOLD),),
        )
        async with PartnerApiAdapter() as adapter:
            got = await adapter.fetch(running.party_urls["veilig_thuis"], req)
        assert got[0].value is True
    finally:
        await running.stop()
