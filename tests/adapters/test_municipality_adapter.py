"""MunicipalityAdapter against the municipal social-domain simulators of the wijkteam and of
schuldhulpverlening (subprocess, real HTTP on loopback): MDA++ involvement, debt signals and
housing mapped per mapping.yaml, not_found, per-item statuses under faults, mapping
validation."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from adapters.municipality import MAPPING_PATH, MunicipalityAdapter
from adapters.municipality.adapter import debt_band
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


@pytest.fixture(params=["gemeente_wijkteam", "schuldhulpverlening"])
async def gemeente(
    request: pytest.FixtureRequest, sim_urls: dict[str, Any]
) -> AsyncIterator[SourceSim]:
    async with source_sim(sim_urls, request.param) as sim:
        yield sim


@pytest.fixture
async def adapter() -> AsyncIterator[MunicipalityAdapter]:
    async with MunicipalityAdapter(timeout=3.0, breaker_threshold=1000) as a:
        yield a


async def test_debt_signals_to_veilig_thuis(
    adapter: MunicipalityAdapter, gemeente: SourceSim, bsn: dict[str, str]
) -> None:
    """What schuldsignaal_naar_veilig_thuis (agr-zvh-mdaplusplus) lets Veilig Thuis have."""
    father = bsn["P01"]
    items = [
        ("finance.payment_arrears_signal", father, P),
        ("finance.debt_assistance_status", father, P),
        ("finance.total_debt_amount", father, P),
        ("housing.eviction_risk", father, H),
    ]
    got = by_key(await adapter.fetch(gemeente.url, request(items)))
    assert got[("finance.payment_arrears_signal", father)].value == [
        {
            "creditor_type": "energie",
            "amount_eur": 310.5,
            "arrears_since": "2026-02-01",
            "signal_date": "2026-04-20",
            "crisis": False,
        },
        {
            "creditor_type": "zorgverzekering",
            "amount_eur": 1450,
            "arrears_since": "2026-01-15",
            "signal_date": "2026-04-12",
            "crisis": True,
        },
    ]
    assert got[("finance.debt_assistance_status", father)].value == {
        "status": "plan_van_aanpak",
        "since": "2026-05-01",
    }
    # The total is shared as a band, never as the amount.
    assert got[("finance.total_debt_amount", father)].value == {
        "band": "5000-20000",
        "creditors": 7,
    }
    assert got[("housing.eviction_risk", father)].value == {
        "stage": "aanmaning",
        "date": "2026-04-20",
    }
    asked = {a["resource"]: a["fields"] for a in await gemeente.asked()}
    assert asked["gm_debt_trajectory"] == [
        "fase",
        "schuldenlast.aantal_schuldeisers",
        "schuldenlast.totaal_eur",
        "sinds",
    ]
    assert set(asked) == {"gm_arrears", "gm_debt_trajectory", "gm_housing"}


async def test_involvement_and_housing(
    adapter: MunicipalityAdapter, gemeente: SourceSim, bsn: dict[str, str]
) -> None:
    items = [
        ("mda.progress_phase", bsn["P03"], H),
        ("mda.integral_plan", bsn["P03"], H),
        ("social.isolation_indicator", bsn["P03"], H),
        ("mda.progress_phase", bsn["P07"], H),
        ("school.verzuim_melding", bsn["P07"], P),
        ("housing.situation", bsn["P07"], H),
        ("finance.income_source", bsn["P06"], P),
        ("health.gp_registration", bsn["P06"], P),
    ]
    got = by_key(await adapter.fetch(gemeente.url, request(items)))
    assert got[("mda.progress_phase", bsn["P03"])].value == {
        "phase": "stabilisatie",
        "last_review": "2026-05-20",
        "case_director_party": "gemeente_wijkteam",
    }
    assert got[("mda.integral_plan", bsn["P03"])].value == "MDA-LB-2026-015-plan-v1.pdf"
    assert got[("social.isolation_indicator", bsn["P03"])].value["isolated"] is True
    assert got[("mda.progress_phase", bsn["P07"])].value["phase"] == "afgesloten"
    assert got[("school.verzuim_melding", bsn["P07"])].value == {
        "reported": "2026-04-29",
        "via": "duo",
        "code": "ongeoorloofd_verzuim",
    }
    assert got[("housing.situation", bsn["P07"])].value == "zelfstandig_huur"
    assert got[("finance.income_source", bsn["P06"])].value == "bijstand_participatiewet"
    assert (
        got[("health.gp_registration", bsn["P06"])]
        .value["practice"]
        .startswith("Huisartsenpraktijk")
    )


async def test_not_found_and_boolean(
    adapter: MunicipalityAdapter, gemeente: SourceSim, bsn: dict[str, str], unknown_bsn: str
) -> None:
    items = [
        ("finance.debt_assistance_status", bsn["P13"], P),  # no trajectory: 404
        ("finance.payment_arrears_signal", bsn["P13"], P),  # no signals
        ("mda.progress_phase", bsn["P13"], H),  # no MDA++ case
        ("housing.situation", unknown_bsn, H),
    ]
    got = await adapter.fetch(gemeente.url, request(items))
    assert [(i.status, i.value) for i in got] == [(ItemStatus.NOT_FOUND, None)] * 4
    boolean = await adapter.fetch(
        gemeente.url,
        request(
            [
                ("social.isolation_indicator", bsn["P03"], H),
                ("social.isolation_indicator", bsn["P13"], H),
            ],
            ResponseForm.BOOLEAN_ONLY,
        ),
    )
    assert [(i.status, i.value) for i in boolean] == [
        (ItemStatus.RELEASED, True),
        (ItemStatus.RELEASED, False),
    ]


def test_debt_band() -> None:
    assert [debt_band(x) for x in (0, 999.99, 1000, 5000, 5000.01, 20000, 20001)] == [
        "<1000",
        "<1000",
        "1000-5000",
        "1000-5000",
        "5000-20000",
        "5000-20000",
        ">20000",
    ]
    with pytest.raises(ValueError, match="amount"):
        debt_band(-1)


@pytest.mark.parametrize(("faults", "expected", "per_resource"), FAULTS, ids=FAULT_IDS)
async def test_faults_give_per_item_status(
    sim_urls: dict[str, Any],
    bsn: dict[str, str],
    faults: dict[str, Any],
    expected: ItemStatus,
    per_resource: int,
) -> None:
    async with source_sim(sim_urls, "schuldhulpverlening") as sim:
        items = [
            ("finance.debt_assistance_status", bsn["P01"], P),
            ("housing.eviction_risk", bsn["P01"], H),
        ]
        await check_fault(MunicipalityAdapter, sim, items, faults, expected, per_resource)


async def test_slow_source_times_out(sim_urls: dict[str, Any], bsn: dict[str, str]) -> None:
    async with source_sim(sim_urls, "gemeente_wijkteam") as sim:
        await check_slow(MunicipalityAdapter, sim, [("mda.progress_phase", bsn["P03"], H)])


def test_mapping_errors_name_file_and_line(tmp_path: Path) -> None:
    check_mapping_errors(MunicipalityAdapter, MAPPING_PATH, tmp_path)
