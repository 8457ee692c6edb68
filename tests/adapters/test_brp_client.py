"""BrpRegister against the BRP simulator (subprocess, real HTTP on loopback)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import date
from itertools import islice
from typing import TYPE_CHECKING, Any

import pytest

from adapters.brp import MAX_BATCH, BrpRegister
from adapters.simulators.generate import synthetic_bsns
from broker.core.errors import RegisterUnavailable
from broker.core.protocols import SubjectRegister

if TYPE_CHECKING:
    from conftest import SimAdmin


@pytest.fixture
async def brp(sim_urls: dict[str, Any]) -> AsyncIterator[BrpRegister]:
    register = BrpRegister(sim_urls["brp"], timeout=1.0, retries=1, backoff_base=0.01)
    yield register
    await register.aclose()


async def test_implements_protocol(brp: BrpRegister) -> None:
    assert isinstance(brp, SubjectRegister)


async def test_birth_dates_households_and_authority(
    brp: BrpRegister, bsn: dict[str, str], unknown_bsn: str
) -> None:
    wanted = [bsn[p] for p in ("P01", "P03", "P07", "P08", "P09", "P11")] + [unknown_bsn]
    found = await brp.lookup(wanted)

    assert set(found) == set(wanted) - {unknown_bsn}
    assert found[bsn["P03"]].birth_date == date(2012, 9, 3)
    assert found[bsn["P09"]].birth_date == date(1987, 8, 9)
    # Joint authority: both parents hold it.
    assert set(found[bsn["P03"]].authority_holder_bsns) == {bsn["P01"], bsn["P02"]}
    # Sole authority of the mother; the father without authority is not a holder.
    assert found[bsn["P07"]].authority_holder_bsns == (bsn["P06"],)
    assert bsn["P09"] not in found[bsn["P08"]].authority_holder_bsns
    # Femke lives with her mother but both parents hold authority.
    assert set(found[bsn["P11"]].authority_holder_bsns) == {bsn["P10"], bsn["P12"]}
    # Adults: the authority a parent holds over its children is not authority over the parent.
    assert found[bsn["P01"]].authority_holder_bsns == ()
    assert found[bsn["P09"]].authority_holder_bsns == ()
    # Household = adresseerbaarObjectIdentificatie; P09 lives elsewhere (no address known).
    assert found[bsn["P01"]].household_id == found[bsn["P03"]].household_id
    assert found[bsn["P01"]].household_id is not None
    assert found[bsn["P07"]].household_id != found[bsn["P03"]].household_id
    assert found[bsn["P09"]].household_id is None


async def test_one_batched_call_per_twenty_bsns(
    brp: BrpRegister, sim_admin: SimAdmin, bsn: dict[str, str]
) -> None:
    wanted = list(bsn.values()) + list(islice(synthetic_bsns(set(bsn.values())), 31))
    assert len(wanted) == 45
    found = await brp.lookup([*wanted, *wanted[:5]])  # duplicates are sent once
    assert await sim_admin.requests(sim_admin.urls["brp"]) == -(-45 // MAX_BATCH)
    assert set(bsn.values()) <= set(found)
    assert set(found) <= set(wanted)


async def test_invalid_and_empty_input_makes_no_call(brp: BrpRegister, sim_admin: SimAdmin) -> None:
    assert await brp.lookup([]) == {}
    assert await brp.lookup(["123456789", "abc", "999990020\n", "\uff19" * 9]) == {}
    assert await sim_admin.requests(sim_admin.urls["brp"]) == 0


async def test_session_is_shared(brp: BrpRegister, bsn: dict[str, str]) -> None:
    await brp.lookup([bsn["P01"]])
    first = brp._session
    await brp.lookup([bsn["P02"]])
    assert first is not None and brp._session is first
    await brp.aclose()
    assert first.closed


async def test_unrequested_person_is_dropped(
    brp: BrpRegister, sim_admin: SimAdmin, bsn: dict[str, str]
) -> None:
    await sim_admin.set_faults(sim_admin.urls["brp"], extra_item=True)
    found = await brp.lookup([bsn["P03"]])
    assert set(found) == {bsn["P03"]}


@pytest.mark.parametrize(
    ("faults", "expected_requests"),
    [
        ({"status": 500}, 2),  # retried once, then unavailable
        ({"status": 503, "fail_rate": 1.0}, 2),
        ({"status": 400}, 1),  # not retried
        ({"drop_connection": True}, 2),
        ({"malformed": True}, 1),
        ({"latency_ms": 1500}, 1),  # beyond the 1 s budget
    ],
)
async def test_faults_raise_register_unavailable(
    brp: BrpRegister,
    sim_admin: SimAdmin,
    bsn: dict[str, str],
    faults: dict[str, Any],
    expected_requests: int,
) -> None:
    await sim_admin.set_faults(sim_admin.urls["brp"], **faults)
    with pytest.raises(RegisterUnavailable):
        await brp.lookup([bsn["P03"]])
    assert await sim_admin.requests(sim_admin.urls["brp"]) == expected_requests


async def test_unreachable_register(bsn: dict[str, str], closed_port_url: str) -> None:
    async with BrpRegister(closed_port_url, timeout=1.0) as register:
        with pytest.raises(RegisterUnavailable):
            await register.lookup([bsn["P03"]])
