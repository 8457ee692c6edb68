"""PoliceAdapter against the police source simulator (subprocess, real HTTP on loopback):
values mapped per mapping.yaml, not_found, paging, source-side filtering, per-item statuses
under faults and mapping validation with file and line."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from adapters.police import MAPPING_PATH, PoliceAdapter
from adapters.police.adapter import suspect_history
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
async def police(sim_urls: dict[str, Any]) -> AsyncIterator[SourceSim]:
    async with source_sim(sim_urls, "politie") as sim:
        yield sim


@pytest.fixture
async def adapter() -> AsyncIterator[PoliceAdapter]:
    async with PoliceAdapter(timeout=3.0, breaker_threshold=1000) as a:
        yield a


async def test_incident_and_history_of_the_suspect(
    adapter: PoliceAdapter, police: SourceSim, bsn: dict[str, str]
) -> None:
    items = [
        ("police.dv_incident", bsn["P01"], P),
        ("police.suspect_history_dv", bsn["P01"], P),
        ("police.tijdelijk_huisverbod", bsn["P01"], P),
        ("police.zorgmelding", bsn["P03"], H),
    ]
    got = by_key(await adapter.fetch(police.url, request(items)))
    incident = got[("police.dv_incident", bsn["P01"])]
    assert incident.status is ItemStatus.RELEASED
    assert incident.value == {
        "incident_id": "PL-LB-2026-0314-0042",
        "date": "2026-03-14T01:40:00+01:00",
        "type": "mishandeling",
        "roles": [
            {"person_ref": "P01", "role": "verdachte"},
            {"person_ref": "P02", "role": "slachtoffer"},
            {"person_ref": "P03", "role": "getuige"},
            {"person_ref": "P04", "role": "getuige"},
            {"person_ref": "P05", "role": "getuige"},
        ],
        "children_present": True,
    }
    # Three registrations over two pages (the police page size is 2): all counted.
    assert got[("police.suspect_history_dv", bsn["P01"])].value == {
        "lookback_years": 5,
        "count": 3,
        "last_date": "2026-03-14",
        "types": ["mishandeling", "bedreiging"],
    }
    assert got[("police.tijdelijk_huisverbod", bsn["P01"])].value == {
        "imposed": "2026-03-14T03:10:00+01:00",
        "ends": "2026-03-24T03:10:00+01:00",
        "extended": False,
        "person_ref": "P01",
    }
    zorgmelding = got[("police.zorgmelding", bsn["P03"])].value
    assert zorgmelding["category"] == "zorgmelding_huiselijk_geweld"
    assert zorgmelding["registered"] == "2026-03-14T01:55:00+01:00"
    assert zorgmelding["children_present"] is True


async def test_identity_elements(
    adapter: PoliceAdapter, police: SourceSim, bsn: dict[str, str]
) -> None:
    items = [
        ("person.bsn", bsn["P03"], P),
        ("person.name", bsn["P03"], P),
        ("person.birth_date", bsn["P03"], P),
        ("address.current", bsn["P03"], P),
        ("household.composition", bsn["P03"], H),
    ]
    got = by_key(await adapter.fetch(police.url, request(items)))
    assert got[("person.bsn", bsn["P03"])].value == bsn["P03"]
    assert got[("person.name", bsn["P03"])].value == {
        "given_names": "Noor",
        "prefix": None,
        "surname": "Hoekstra",
    }
    assert got[("person.birth_date", bsn["P03"])].value == "2012-09-03"
    assert got[("address.current", bsn["P03"])].value == {
        "street": "Esdoornlaan",
        "number": "12",
        "postcode": "9999 XA",
        "city": "Lindeburg",
    }
    composition = got[("household.composition", bsn["P03"])].value
    assert {"person_ref": "P02", "relation": "moeder"} in composition
    assert len(composition) == 5


async def test_not_found(
    adapter: PoliceAdapter, police: SourceSim, bsn: dict[str, str], unknown_bsn: str
) -> None:
    items = [
        ("police.dv_incident", unknown_bsn, P),  # 404: the police do not know the person
        ("person.name", unknown_bsn, P),
        ("police.dv_incident", bsn["P13"], P),  # known, no incident
        ("police.suspect_history_dv", bsn["P02"], P),  # a victim, never a suspect
    ]
    got = await adapter.fetch(police.url, request(items))
    assert [(i.status, i.value) for i in got] == [(ItemStatus.NOT_FOUND, None)] * 4
    boolean = await adapter.fetch(police.url, request(items[:1], ResponseForm.BOOLEAN_ONLY))
    assert [(i.status, i.value) for i in boolean] == [(ItemStatus.RELEASED, False)]


async def test_only_allowed_resources_and_fields_are_requested(
    adapter: PoliceAdapter, police: SourceSim, bsn: dict[str, str]
) -> None:
    await adapter.fetch(police.url, request([("police.tijdelijk_huisverbod", bsn["P01"], P)]))
    asked = await police.asked()
    assert asked == [
        {
            "resource": "police_house_bans",
            "fields": ["ends_at", "extended", "imposed_at", "person_ref"],
        }
    ]


async def test_unmapped_element_and_wrong_subject_kind_are_unavailable(
    adapter: PoliceAdapter, police: SourceSim, bsn: dict[str, str]
) -> None:
    items = [
        ("health.diagnosis", bsn["P01"], P),  # not the police's element
        ("police.zorgmelding", bsn["P01"], P),  # a household element asked per person
    ]
    got = await adapter.fetch(police.url, request(items))
    assert [i.status for i in got] == [ItemStatus.UNAVAILABLE] * 2
    assert await police.asked() == []  # nothing was requested


@pytest.mark.parametrize(("faults", "expected", "per_resource"), FAULTS, ids=FAULT_IDS)
async def test_faults_give_per_item_status(
    police: SourceSim,
    bsn: dict[str, str],
    faults: dict[str, Any],
    expected: ItemStatus,
    per_resource: int,
) -> None:
    items = [("police.dv_incident", bsn["P01"], P), ("police.zorgmelding", bsn["P03"], H)]
    await check_fault(PoliceAdapter, police, items, faults, expected, per_resource)


async def test_slow_source_times_out(police: SourceSim, bsn: dict[str, str]) -> None:
    await check_slow(PoliceAdapter, police, [("police.dv_incident", bsn["P01"], P)])


async def test_history_looks_back_from_the_request_date(
    adapter: PoliceAdapter, police: SourceSim, bsn: dict[str, str]
) -> None:
    """The five years count back from the date the exchange was decided on (the
    request's date), not from the day the adapter happens to run."""
    from dataclasses import replace
    from datetime import date

    items = [("police.suspect_history_dv", bsn["P01"], P)]
    key = ("police.suspect_history_dv", bsn["P01"])
    on = {
        day: by_key(await adapter.fetch(police.url, replace(request(items), request_date=day)))[
            key
        ].value
        for day in (date(2026, 5, 28), date(2028, 9, 1), date(2031, 3, 15))
    }
    assert on[date(2026, 5, 28)]["count"] == 3
    # 2023-08-19 lies more than five years before 1 September 2028.
    assert on[date(2028, 9, 1)] == {
        "lookback_years": 5,
        "count": 2,
        "last_date": "2026-03-14",
        "types": ["mishandeling", "bedreiging"],
    }
    assert on[date(2031, 3, 15)] is None  # all three lie more than five years back


def test_suspect_history_looks_back_five_years() -> None:
    from datetime import date

    incident = {
        "occurred_at": "2021-06-01T10:00:00+02:00",
        "classification": {"code": "BEDR"},
        "involved": [{"bsn": "999990007", "role": "SUSPECT"}],
    }
    params = {"lookback_years": 5, "types": {"BEDR": "bedreiging"}}
    assert suspect_history([incident], params, "999990007", date(2026, 5, 31)) is not None
    assert suspect_history([incident], params, "999990007", date(2026, 6, 2)) is None
    assert suspect_history([incident], params, "999990019", date(2026, 5, 31)) is None


def test_mapping_errors_name_file_and_line(tmp_path: Path) -> None:
    check_mapping_errors(PoliceAdapter, MAPPING_PATH, tmp_path)
