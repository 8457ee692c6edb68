"""The mapped REST source engine (adapters/sdk/source.py) against a small in-process source
over real HTTP on loopback: per-resource partial failure, the same-endpoint paging guard, the
circuit breaker, and mapping-file validation reporting every problem with file and line."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from adapters.sdk.mapping import MappingError, load_source_mapping
from adapters.sdk.source import BUILTIN_TRANSFORMS, MappedRestAdapter
from broker.core.types import ItemStatus
from tests.adapters.sources_common import H, P, by_key, request

BSN = "999990020"
MAPPING = """\
schema_version: 1
source: {not_found_status: [404]}
resources:
  cases:
    path: /cases/{bsn}
    records: items
    next: next
    fields: [status, since]
  plans:
    path: /plans
    params: {bsn: "{bsn}"}
    records: items
    fields: [text, owner, due]
elements:
  vt.case_status:
    resource: cases
    select: latest
    order_by: since
    value: {status: status, since: since, handed_over_to: {default: null}}
  vt.safety_plan:
    resource: plans
    select: all
    value: {agreement: text, owner: owner, due: {path: due, transform: date}}
"""


@dataclass
class Source:
    url: str = ""
    fail: set[str] = field(default_factory=set)
    next_link: str | None = None
    hits: list[str] = field(default_factory=list)


@pytest.fixture
async def source() -> AsyncIterator[Source]:
    state = Source()

    async def cases(request: web.Request) -> web.Response:
        state.hits.append("cases")
        if "cases" in state.fail:
            return web.json_response({"title": "down"}, status=503)
        if request.query.get("page") == "2":
            return web.json_response({"items": [{"status": "onderzoek", "since": "2026-03-20"}]})
        return web.json_response(
            {
                "items": [{"status": "melding_ontvangen", "since": "2026-03-14"}],
                "next": state.next_link,
            }
        )

    async def plans(request: web.Request) -> web.Response:
        state.hits.append("plans")
        return web.json_response(
            {"items": [{"text": "agreement", "owner": "P01", "due": "2026-04-30"}]}
        )

    app = web.Application()
    app.router.add_get("/cases/{bsn}", cases)
    app.router.add_get("/plans", plans)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    state.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield state
    await runner.cleanup()


def engine(tmp_path: Path, **options: Any) -> MappedRestAdapter:
    path = tmp_path / "mapping.yaml"
    path.write_text(MAPPING, encoding="utf-8")
    return MappedRestAdapter(kind="test_source", mapping_path=path, **options)


ITEMS = [("vt.case_status", BSN, H), ("vt.safety_plan", BSN, H)]


async def test_paging_and_all_records(source: Source, tmp_path: Path) -> None:
    source.next_link = "/cases/" + BSN + "?page=2"
    async with engine(tmp_path) as adapter:
        got = by_key(await adapter.fetch(source.url, request(ITEMS)))
    assert got[("vt.case_status", BSN)].value == {
        "status": "onderzoek",  # the latest, found on page 2
        "since": "2026-03-20",
        "handed_over_to": None,
    }
    assert got[("vt.safety_plan", BSN)].value == [
        {"agreement": "agreement", "owner": "P01", "due": "2026-04-30"}
    ]
    assert source.hits.count("cases") == 2


async def test_one_failing_resource_fails_only_its_items(source: Source, tmp_path: Path) -> None:
    source.fail.add("cases")
    async with engine(tmp_path, retries=1, backoff_base=0.01) as adapter:
        got = by_key(await adapter.fetch(source.url, request(ITEMS)))
        health = adapter.health()[source.url]
    assert got[("vt.case_status", BSN)].status is ItemStatus.UNAVAILABLE
    assert got[("vt.safety_plan", BSN)].status is ItemStatus.RELEASED
    assert source.hits.count("cases") == 2  # one retry
    assert health["failures"] == 1  # the call counts as failed for the breaker


@pytest.mark.parametrize(
    "link", ["http://elsewhere.invalid/cases", "//elsewhere.invalid/x", "cases?page=2"]
)
async def test_next_link_must_stay_on_the_endpoint(
    source: Source, tmp_path: Path, link: str
) -> None:
    source.next_link = link
    async with engine(tmp_path) as adapter:
        got = await adapter.fetch(source.url, request(ITEMS[:1]))
    assert got[0].status is ItemStatus.UNAVAILABLE


async def test_open_circuit_asks_nothing(source: Source, tmp_path: Path) -> None:
    source.fail.add("cases")
    async with engine(tmp_path, retries=0, breaker_threshold=1, breaker_cooldown=60) as adapter:
        await adapter.fetch(source.url, request(ITEMS[:1]))
        hits = len(source.hits)
        got = await adapter.fetch(source.url, request(ITEMS))
        assert adapter.health()[source.url]["short_circuited"] == 1
    assert [i.status for i in got] == [ItemStatus.UNAVAILABLE] * 2
    assert len(source.hits) == hits


async def test_wrong_subject_kind_and_odd_bsn_are_not_asked(source: Source, tmp_path: Path) -> None:
    async with engine(tmp_path) as adapter:
        got = await adapter.fetch(
            source.url, request([("vt.case_status", BSN, P), ("vt.safety_plan", "12345", H)])
        )
    assert [i.status for i in got] == [ItemStatus.UNAVAILABLE] * 2
    assert source.hits == []


def test_every_problem_is_reported_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        """\
schema_version: 1
source: {not_found_status: [404]}
resources:
  cases:
    path: /cases
    records: items
    fields: [status]
elements:
  vt.case_status:
    resource: nowhere
  vt.safety_plan:
    resource: cases
    subjects: [person]
    select: newest
    value: {agreement: {path: status, transform: shout}}
  household.composition:
    resource: cases
    derive: composition
""",
        encoding="utf-8",
    )
    with pytest.raises(MappingError) as info:
        load_source_mapping(path, transforms=BUILTIN_TRANSFORMS)
    problems = info.value.problems
    expected = [
        (5, "path or params must contain {bsn}"),
        (10, "unknown resource 'nowhere'"),
        (13, "subjects must be [household]"),
        (14, "unknown select 'newest'"),
        (15, "unknown transform 'shout'"),
        (18, "unknown derivation 'composition'"),
        (18, "derive needs reads"),
    ]
    for line, message in expected:
        assert any(p.startswith(f"{path}:{line}: ") and message in p for p in problems), (
            line,
            message,
            problems,
        )


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("schema_version: 1\nelements:\n  a: [\n", encoding="utf-8")
    with pytest.raises(MappingError, match=r"broken\.yaml:\d+: not valid YAML"):
        load_source_mapping(path, transforms=BUILTIN_TRANSFORMS)


def test_next_links_stay_under_the_endpoint_path() -> None:
    from adapters._http import FatalError
    from adapters.sdk.source import _follow

    assert _follow("https://vt.example/api", "/api/x?page=2") == "https://vt.example/api/x?page=2"
    assert _follow("http://127.0.0.1:9", "/x?page=2") == "http://127.0.0.1:9/x?page=2"
    with pytest.raises(FatalError):
        _follow("https://vt.example/api", "/apix/other")
    with pytest.raises(FatalError):
        _follow("https://vt.example/api", "/admin")
