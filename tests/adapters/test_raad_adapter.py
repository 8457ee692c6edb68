"""RaadAdapter against the Raad voor de Kinderbescherming source simulator (subprocess, real
HTTP on loopback): investigations, measures (OTS, voogdij, gezagsbeëindiging) and authority
mapped per mapping.yaml, not_found, per-item statuses under faults and mapping validation."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from adapters.raad import MAPPING_PATH, RaadAdapter
from adapters.simulators.runner import build_world
from adapters.simulators.source_data import raad_measures
from broker.core.types import ItemStatus, ResponseForm
from tests.adapters.conftest import SimProcess
from tests.adapters.sources_common import (
    FAULT_IDS,
    FAULTS,
    P,
    SourceSim,
    by_key,
    check_fault,
    check_mapping_errors,
    check_slow,
    request,
    source_sim,
)


@pytest.fixture
async def raad(sim_urls: dict[str, Any]) -> AsyncIterator[SourceSim]:
    async with source_sim(sim_urls, "raad_kinderbescherming") as sim:
        yield sim


@pytest.fixture
async def adapter() -> AsyncIterator[RaadAdapter]:
    async with RaadAdapter(timeout=3.0, breaker_threshold=1000) as a:
        yield a


async def test_investigation_and_ots(
    adapter: RaadAdapter, raad: SourceSim, bsn: dict[str, str]
) -> None:
    items = [
        ("cp.raad_investigation_status", bsn["P03"], P),
        ("cp.measure_active", bsn["P03"], P),
        ("cp.raad_investigation_status", bsn["P07"], P),
        ("cp.measure_active", bsn["P07"], P),
        ("cp.ots_decision", bsn["P07"], P),
        ("child.authority", bsn["P07"], P),
        ("cp.raad_investigation_status", bsn["P11"], P),
    ]
    got = by_key(await adapter.fetch(raad.url, request(items)))
    # Hoekstra: the investigation Veilig Thuis asked for (S03) is running; no measure yet.
    assert got[("cp.raad_investigation_status", bsn["P03"])].value == {
        "status": "lopend",
        "outcome": "n.v.t.",
        "date": "2026-06-02",
    }
    assert got[("cp.measure_active", bsn["P03"])].value == {
        "active": False,
        "type": "geen",
        "gi": None,
    }
    # Mansour: investigation finished with a request; the court ordered an OTS.
    assert got[("cp.raad_investigation_status", bsn["P07"])].value == {
        "status": "afgerond",
        "outcome": "verzoek_ots",
        "date": "2026-10-21",
    }
    assert got[("cp.measure_active", bsn["P07"])].value == {
        "active": True,
        "type": "ots",
        "gi": "Jeugdbescherming Lindeburg",
    }
    assert got[("cp.ots_decision", bsn["P07"])].value == {
        "court": "Rechtbank Lindeburg",
        "decision_date": "2026-11-18",
        "start": "2026-11-18",
        "end": "2027-11-18",
        "provisional": False,
        "gi": "Jeugdbescherming Lindeburg",
    }
    assert got[("child.authority", bsn["P07"])].value == {
        "type": "eenhoofdig_gezag_moeder",
        "holders": ["P06"],
        "parents_without_authority": ["P09"],
    }
    assert got[("cp.raad_investigation_status", bsn["P11"])].value["outcome"] == "geen_verzoek"


async def test_not_found_and_boolean(
    adapter: RaadAdapter, raad: SourceSim, bsn: dict[str, str], unknown_bsn: str
) -> None:
    items = [
        ("cp.measure_active", unknown_bsn, P),  # 404: unknown to the Raad
        ("child.authority", bsn["P01"], P),  # an adult: no authority record (404)
        ("cp.ots_decision", bsn["P03"], P),  # a child without an OTS
        ("cp.voogdij", bsn["P07"], P),  # OTS, no guardianship
    ]
    got = await adapter.fetch(raad.url, request(items))
    assert [(i.status, i.value) for i in got] == [(ItemStatus.NOT_FOUND, None)] * 4
    boolean = await adapter.fetch(
        raad.url,
        request(
            [("cp.measure_active", bsn["P07"], P), ("cp.measure_active", bsn["P03"], P)],
            ResponseForm.BOOLEAN_ONLY,
        ),
    )
    assert [i.value for i in boolean] == [True, False]  # reads the `active` field


async def test_guardianship_after_termination_of_authority(
    start_sim: Callable[..., SimProcess], tmp_path: Path
) -> None:
    world = build_world(6)
    child = next(
        p
        for p in world.registry.iter_persons()
        if any(m["soort"] == "VOOGDIJ" for m in raad_measures(world, p) or [])
    )
    proc = start_sim(tmp_path, "--families", "6", "--parties", "raad_kinderbescherming")
    try:
        url = proc.urls["sources"]["raad_kinderbescherming"]
        items = [
            ("cp.voogdij", child.bsn, P),
            ("cp.gezagsbeeindiging", child.bsn, P),
            ("cp.measure_active", child.bsn, P),
            ("child.authority", child.bsn, P),
        ]
        async with RaadAdapter() as adapter:
            got = by_key(await adapter.fetch(url, request(items)))
    finally:
        assert proc.stop() == 0
    voogdij = got[("cp.voogdij", child.bsn)].value
    assert voogdij["guardian_type"] == "gi"
    assert voogdij["guardian"] == "Jeugdbescherming Lindeburg"
    assert voogdij["provisional"] is False
    ended = got[("cp.gezagsbeeindiging", child.bsn)].value
    assert ended["ground"] == "ernstige_bedreiging_onvermogen"
    assert ended["decision_date"] == voogdij["since"]
    assert got[("cp.measure_active", child.bsn)].value["type"] == "voogdij"
    assert got[("child.authority", child.bsn)].value["type"] == "voogdij_gi"


async def test_only_allowed_fields_are_requested(
    adapter: RaadAdapter, raad: SourceSim, bsn: dict[str, str]
) -> None:
    await adapter.fetch(raad.url, request([("cp.measure_active", bsn["P07"], P)]))
    assert await raad.asked() == [
        {
            "resource": "raad_measures",
            "fields": ["ingangsdatum", "soort", "status", "uitvoerder.naam"],
        }
    ]


@pytest.mark.parametrize(("faults", "expected", "per_resource"), FAULTS, ids=FAULT_IDS)
async def test_faults_give_per_item_status(
    raad: SourceSim,
    bsn: dict[str, str],
    faults: dict[str, Any],
    expected: ItemStatus,
    per_resource: int,
) -> None:
    items = [("cp.measure_active", bsn["P07"], P), ("child.authority", bsn["P07"], P)]
    await check_fault(RaadAdapter, raad, items, faults, expected, per_resource)


async def test_slow_source_times_out(raad: SourceSim, bsn: dict[str, str]) -> None:
    await check_slow(RaadAdapter, raad, [("cp.ots_decision", bsn["P07"], P)])


def test_mapping_errors_name_file_and_line(tmp_path: Path) -> None:
    check_mapping_errors(RaadAdapter, MAPPING_PATH, tmp_path)
