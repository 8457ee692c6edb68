"""Shared checks of the mapped REST source adapters (police, Raad, Veilig Thuis, municipality)
against their simulators over real HTTP: fault handling per item, source-side filtering and
mapping-file validation with file and line."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from adapters.sdk.mapping import MappingError
from adapters.sdk.source import MappedRestAdapter
from broker.core.protocols import FetchedItem, FetchItem, FetchRequest
from broker.core.types import ItemStatus, ResponseForm, SubjectKind

P, H = SubjectKind.PERSON, SubjectKind.HOUSEHOLD

# (faults, expected status, expected requests per resource with retries=2)
FAULTS: list[tuple[dict[str, Any], ItemStatus, int]] = [
    ({"status": 500}, ItemStatus.UNAVAILABLE, 3),  # retried twice, then unavailable
    ({"status": 429}, ItemStatus.UNAVAILABLE, 3),
    ({"status": 403}, ItemStatus.UNAVAILABLE, 1),  # other 4xx: not retried
    ({"drop_connection": True}, ItemStatus.UNAVAILABLE, 3),  # connection reset
    ({"malformed": True}, ItemStatus.UNAVAILABLE, 1),  # a truncated body is not retried
]
FAULT_IDS = ["500", "429", "403", "connection_reset", "malformed"]


def request(
    items: list[tuple[str, str, SubjectKind]], form: ResponseForm = ResponseForm.FULL
) -> FetchRequest:
    return FetchRequest(
        exchange_id="ex-1",
        request_id="req-1",
        agreement_id="agr",
        purpose_id="purpose",
        recipient_party="veilig_thuis",
        response_form=form,
        items=tuple(FetchItem(element=e, bsn=b, subject_kind=k) for e, b, k in items),
    )


def by_key(items: list[FetchedItem]) -> dict[tuple[str, str], FetchedItem]:
    return {(i.element, i.bsn): i for i in items}


class SourceSim:
    """The loopback-only admin endpoints of one source simulator."""

    def __init__(self, url: str, http: httpx.AsyncClient) -> None:
        self.url = url
        self.http = http

    async def faults(self, **faults: Any) -> None:
        (await self.http.post(f"{self.url}/_sim/faults", json=faults)).raise_for_status()

    async def requests(self) -> int:
        response = await self.http.get(f"{self.url}/_sim/stats")
        response.raise_for_status()
        return int(response.json()["requests"])

    async def asked(self) -> list[dict[str, Any]]:
        """The resources and fields requested since the last reset (never BSNs)."""
        response = await self.http.get(f"{self.url}/_sim/source-requests")
        response.raise_for_status()
        log: list[dict[str, Any]] = response.json()
        return log

    async def reset(self) -> None:
        (await self.http.delete(f"{self.url}/_sim/faults")).raise_for_status()
        (await self.http.delete(f"{self.url}/_sim/stats")).raise_for_status()
        (await self.http.delete(f"{self.url}/_sim/source-requests")).raise_for_status()


@asynccontextmanager
async def source_sim(sim_urls: dict[str, Any], party: str) -> AsyncIterator[SourceSim]:
    """The source simulator of ``party``, reset before and after use."""
    async with httpx.AsyncClient(timeout=5.0) as http:
        sim = SourceSim(sim_urls["sources"][party], http)
        await sim.reset()
        try:
            yield sim
        finally:
            await sim.reset()


def assert_no_personal_data(logs: list[dict[str, Any]], bsns: list[str]) -> None:
    text = repr(logs)
    for bsn in bsns:
        assert bsn not in text


async def check_fault(
    adapter_factory: Callable[..., MappedRestAdapter],
    sim: SourceSim,
    items: list[tuple[str, str, SubjectKind]],
    faults: dict[str, Any],
    expected: ItemStatus,
    requests_per_resource: int,
) -> None:
    """Every item gets ``expected``; the source saw the expected number of attempts per
    resource; the fault was logged without personal data."""
    await sim.faults(**faults)
    async with adapter_factory(timeout=5.0, retries=2, backoff_base=0.01) as adapter:
        with capture_logs() as logs:
            got = await adapter.fetch(sim.url, request(items))
        resources = {adapter.mapping.elements[e].resource for e, _, _ in items}
        health = adapter.health()[sim.url]
    assert [(i.status, i.value) for i in got] == [(expected, None)] * len(items)
    wanted = requests_per_resource * len(resources)
    if faults.get("drop_connection"):
        # aiohttp itself repeats an idempotent GET once on a dropped keep-alive connection.
        assert wanted <= await sim.requests() <= 2 * wanted
    else:
        assert await sim.requests() == wanted
    assert health["failures"] == 1 and health["calls"] == 1
    assert logs, "a provider fault is logged"
    assert_no_personal_data(logs, [b for _, b, _ in items])


async def check_slow(
    adapter_factory: Callable[..., MappedRestAdapter],
    sim: SourceSim,
    items: list[tuple[str, str, SubjectKind]],
) -> None:
    """A source slower than the budget: every item ``timeout``, well within the budget."""
    await sim.faults(latency_ms=1500)
    async with adapter_factory(timeout=0.4, retries=2) as adapter:
        got = await adapter.fetch(sim.url, request(items))
        health = adapter.health()[sim.url]
    assert {i.status for i in got} == {ItemStatus.TIMEOUT}
    assert health["timeouts"] == 1


def check_mapping_errors(
    adapter_factory: Callable[..., MappedRestAdapter], mapping: Path, tmp_path: Path
) -> None:
    """An unknown element id, an unknown catalogue field and an unknown source field are each
    reported with the mapping file and the line they are on."""
    text = mapping.read_text(encoding="utf-8")
    lines = text.splitlines()
    # An unknown catalogue element id: rename the first element.
    first = next(i for i, line in enumerate(lines) if re.match(r"^  [a-z]+\.[a-z_]+:$", line))
    bad = list(lines)
    bad[first] = "  no.such_element:"
    _expect(
        adapter_factory, tmp_path, bad, first + 1, "unknown catalogue element 'no.such_element'"
    )
    # An unknown catalogue field: add a field to a value with named fields.
    field = next(
        i
        for i, line in enumerate(lines)
        if i > first and re.match(r"^      [a-z_]+: [a-z_.]+$", line)
    )
    bad = list(lines)
    bad.insert(field, "      no_such_field: " + lines[field].split(": ", 1)[1])
    _expect(adapter_factory, tmp_path, bad, field + 1, "unknown field 'no_such_field'")
    # An unknown source field: point an existing field at a path the resource does not have.
    bad = list(lines)
    name = lines[field].split(": ", 1)[0]
    bad[field] = f"{name}: not_in_the_source"
    _expect(adapter_factory, tmp_path, bad, field + 1, "unknown field 'not_in_the_source'")


def _expect(
    adapter_factory: Callable[..., MappedRestAdapter],
    tmp_path: Path,
    lines: list[str],
    line: int,
    message: str,
) -> None:
    path = tmp_path / "mapping.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(MappingError) as info:
        adapter_factory(mapping_path=path)
    assert f"{path}:{line}: " in str(info.value), str(info.value)
    assert any(p.startswith(f"{path}:{line}: ") and message in p for p in info.value.problems), (
        info.value.problems
    )
