"""VeiligThuisAdapter against the Veilig Thuis source simulator (subprocess, real HTTP on
loopback): reports, safety assessments, case status and contact person mapped per mapping.yaml,
the kindcheck yes/no, secondary provision with the original source, the reporter's identity
never requested nor returned, not_found, per-item statuses under faults, mapping validation."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from adapters.veilig_thuis import MAPPING_PATH, VeiligThuisAdapter
from broker.core.types import ItemStatus, ResponseForm
from tests.adapters.sources_common import (
    FAULT_IDS,
    FAULTS,
    H,
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
async def vt(sim_urls: dict[str, Any]) -> AsyncIterator[SourceSim]:
    async with source_sim(sim_urls, "veilig_thuis") as sim:
        yield sim


@pytest.fixture
async def adapter() -> AsyncIterator[VeiligThuisAdapter]:
    async with VeiligThuisAdapter(timeout=3.0, breaker_threshold=1000) as a:
        yield a


async def test_request_for_investigation_elements(
    adapter: VeiligThuisAdapter, vt: SourceSim, bsn: dict[str, str]
) -> None:
    """What Veilig Thuis gives the Raad in S03 (agr-vt-raad-vto verzoek_tot_onderzoek)."""
    child = bsn["P03"]
    items = [
        ("vt.report", child, H),
        ("vt.case_status", child, H),
        ("vt.safety_assessment", child, H),
        ("vt.investigation_conclusion", child, H),
        ("vt.safety_plan", child, H),
        ("vt.contact_person", child, P),
        ("child.authority", child, P),
        ("address.current", child, P),
        ("police.dv_incident", bsn["P01"], P),
        ("health.ggz_treatment_involvement", bsn["P01"], P),
    ]
    got = by_key(await adapter.fetch(vt.url, request(items)))
    assert all(i.status is ItemStatus.RELEASED for i in got.values()), got
    assert got[("vt.report", child)].value == {
        "received": "2026-03-14",
        "reporter_type": "politie",
        "violence_types": ["getuige_partnergeweld"],
        "summary": "Children present during escalated conflict between parents.",
    }
    assert got[("vt.case_status", child)].value == {
        "status": "onderzoek",
        "since": "2026-03-14",
        "handed_over_to": None,
    }
    assert got[("vt.safety_assessment", child)].value == {
        "date": "2026-03-18",
        "acute_onveilig": False,
        "structureel_onveilig": True,
        "follow_up": "vervolg_onderzoek",
    }
    assert got[("vt.investigation_conclusion", child)].value["conclusion"] == "bevestigd"
    assert got[("vt.safety_plan", child)].value == [
        {
            "agreement": "Father stays with his brother during weekends",
            "owner": "P01",
            "due": "2026-04-30",
        }
    ]
    assert got[("vt.contact_person", child)].value == {
        "team": "Team Onderzoek Oost",
        "name": "(fictional) R. Kandemir",
        "phone": "+31 88 0000000",
    }
    assert got[("child.authority", child)].value == {
        "type": "gezamenlijk_gezag_ouders",
        "holders": ["P01", "P02"],
        "parents_without_authority": [],
    }
    assert got[("address.current", child)].value["street"] == "Esdoornlaan"
    # Secondary provision: the original source is named.
    incident = got[("police.dv_incident", bsn["P01"])]
    assert incident.source == "politie"
    assert incident.value["incident_id"] == "PL-LB-2026-0314-0042"
    ggz = got[("health.ggz_treatment_involvement", bsn["P01"])]
    assert ggz.source == "ggz"
    assert ggz.value == {"in_treatment": True, "setting": "fact", "since": "2024-02-01"}
    assert got[("vt.case_status", child)].source is None  # Veilig Thuis's own data


async def test_kindcheck_is_yes_or_no_in_the_same_shape(
    adapter: VeiligThuisAdapter, vt: SourceSim, bsn: dict[str, str]
) -> None:
    items = [("vt.report_exists", bsn["P10"], H), ("vt.report_exists", bsn["P13"], H)]
    got = await adapter.fetch(vt.url, request(items, ResponseForm.BOOLEAN_ONLY))
    assert [(i.status, i.value) for i in got] == [
        (ItemStatus.RELEASED, True),  # linked to the Jonkman file
        (ItemStatus.RELEASED, False),
    ]
    # Only whether a file exists is asked: no content, no dates, no reporter.
    assert await vt.asked() == [
        {"resource": "vt_dossiers", "fields": ["dossiernummer"]},
        {"resource": "vt_dossiers", "fields": ["dossiernummer"]},
    ]


async def test_reporter_identity_is_never_requested_nor_returned(
    adapter: VeiligThuisAdapter, vt: SourceSim, bsn: dict[str, str]
) -> None:
    items = [("vt.report", bsn["P03"], H), ("vt.reporter_identity", bsn["P03"], P)]
    got = by_key(await adapter.fetch(vt.url, request(items)))
    assert got[("vt.reporter_identity", bsn["P03"])].status is ItemStatus.UNAVAILABLE
    [asked] = await vt.asked()
    assert asked["resource"] == "vt_reports"
    assert not [f for f in asked["fields"] if f.startswith("melder.") and f != "melder.soort"]
    # Even when the source ignores the field selection, the name does not get through.
    await vt.faults(extra_item=True)
    again = await adapter.fetch(vt.url, request(items[:1]))
    assert "J. de Vries" not in repr(again)
    assert again[0].value == got[("vt.report", bsn["P03"])].value


async def test_not_found(
    adapter: VeiligThuisAdapter, vt: SourceSim, bsn: dict[str, str], unknown_bsn: str
) -> None:
    items = [
        ("person.name", bsn["P13"], P),  # no file on this person: 404
        ("vt.case_status", bsn["P13"], H),  # no file on the household
        ("vt.contact_person", unknown_bsn, P),
    ]
    got = await adapter.fetch(vt.url, request(items))
    assert [(i.status, i.value) for i in got] == [(ItemStatus.NOT_FOUND, None)] * 3


@pytest.mark.parametrize(("faults", "expected", "per_resource"), FAULTS, ids=FAULT_IDS)
async def test_faults_give_per_item_status(
    vt: SourceSim,
    bsn: dict[str, str],
    faults: dict[str, Any],
    expected: ItemStatus,
    per_resource: int,
) -> None:
    items = [("vt.case_status", bsn["P03"], H), ("vt.safety_assessment", bsn["P03"], H)]
    await check_fault(VeiligThuisAdapter, vt, items, faults, expected, per_resource)


async def test_slow_source_times_out(vt: SourceSim, bsn: dict[str, str]) -> None:
    await check_slow(VeiligThuisAdapter, vt, [("vt.case_status", bsn["P03"], H)])


def test_mapping_errors_name_file_and_line(tmp_path: Path) -> None:
    check_mapping_errors(VeiligThuisAdapter, MAPPING_PATH, tmp_path)
