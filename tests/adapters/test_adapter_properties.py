"""Property: whatever a provider answers, the adapter only passes on requested items,
exactly one per requested (element, bsn); the mapped REST source adapters (police, Raad,
Veilig Thuis, municipality) also ask their source only for the requested elements' fields."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest
import yaml
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.municipality import MunicipalityAdapter
from adapters.partner_api import PartnerApiAdapter
from adapters.police import PoliceAdapter
from adapters.raad import RaadAdapter
from adapters.sdk.mapping import DEFAULT_CATALOGUE_PATH
from adapters.sdk.source import MappedRestAdapter
from adapters.veilig_thuis import VeiligThuisAdapter
from broker.core.protocols import FetchItem, FetchRequest
from broker.core.types import ItemStatus, ResponseForm, SubjectKind

if TYPE_CHECKING:
    from conftest import SimAdmin

ELEMENTS = [
    "person.name",
    "person.birth_date",
    "address.current",
    "household.composition",
    "child.authority",
    "vt.report_exists",
    "vt.case_status",
    "health.diagnosis",
    "police.dv_incident",
    "mda.progress_phase",
    "no.such_element",
]
BSNS = ["999990007", "999990020", "999990068", "999990111", "999990147", "123456782"]
SETTINGS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)

items_strategy = st.lists(
    st.tuples(st.sampled_from(ELEMENTS), st.sampled_from(BSNS), st.sampled_from(SubjectKind)),
    min_size=0,
    max_size=12,
)


def make_request(items: list[tuple[str, str, SubjectKind]], form: ResponseForm) -> FetchRequest:
    return FetchRequest(
        exchange_id="e",
        request_id="r",
        agreement_id="a",
        purpose_id="p",
        recipient_party="veilig_thuis",
        response_form=form,
        items=tuple(FetchItem(element=e, bsn=b, subject_kind=k) for e, b, k in items),
    )


def check_subset(items: list[tuple[str, str, SubjectKind]], got: list[Any]) -> None:
    requested = {(e, b) for e, b, _ in items}
    returned = [(i.element, i.bsn) for i in got]
    assert {e for e, _ in returned} <= {e for e, _ in requested}
    assert set(returned) == requested
    assert len(returned) == len(requested)


@pytest.fixture(scope="module")
async def shared_adapter() -> AsyncIterator[PartnerApiAdapter]:
    a = PartnerApiAdapter(timeout=2.0, retries=0, breaker_threshold=10_000)
    yield a
    await a.aclose()


@given(items=items_strategy, form=st.sampled_from(ResponseForm), extra=st.booleans())
@SETTINGS
async def test_simulator_answers_are_a_subset_of_the_request(
    shared_adapter: PartnerApiAdapter,
    sim_urls: dict[str, Any],
    sim_admin: SimAdmin,
    items: list[tuple[str, str, SubjectKind]],
    form: ResponseForm,
    extra: bool,
) -> None:
    url = sim_urls["parties"]["gemeente_wijkteam"]
    await sim_admin.set_faults(url, extra_item=extra)
    got = await shared_adapter.fetch(url, make_request(items, form))
    check_subset(items, got)
    assert all(i.status is not ItemStatus.UNAVAILABLE for i in got)


@dataclass
class Hostile:
    """An in-process provider that answers whatever the current example says."""

    body: bytes = b'{"items": []}'
    received: list[dict[str, Any]] = field(default_factory=list)


@pytest.fixture(scope="module")
async def hostile() -> AsyncIterator[tuple[str, Hostile]]:
    state = Hostile()

    async def handler(request: web.Request) -> web.Response:
        state.received.append(await request.json())
        return web.Response(body=state.body, content_type="application/json")

    app = web.Application()
    app.router.add_post("/broker/v1/fetch", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}", state
    await runner.cleanup()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=3), children, max_size=3)
    ),
    max_leaves=6,
)
answer_items = st.lists(
    st.fixed_dictionaries(
        {
            "element": st.sampled_from(ELEMENTS) | st.text(max_size=8),
            "bsn": st.sampled_from(BSNS) | st.text(max_size=9),
            "status": st.sampled_from(["ok", "not_found"]),
            "value": json_values,
        }
    ),
    max_size=15,
)


@given(items=items_strategy, form=st.sampled_from(ResponseForm), answers=answer_items)
@SETTINGS
async def test_arbitrary_provider_answers_are_filtered(
    shared_adapter: PartnerApiAdapter,
    hostile: tuple[str, Hostile],
    items: list[tuple[str, str, SubjectKind]],
    form: ResponseForm,
    answers: list[dict[str, Any]],
) -> None:
    url, state = hostile
    state.body = json.dumps({"items": answers}).encode()
    state.received.clear()
    got = await shared_adapter.fetch(url, make_request(items, form))
    check_subset(items, got)
    # The adapter sent exactly the (deduplicated) requested items.
    if items:
        sent = {(i["element"], i["subject"]["bsn"]) for i in state.received[0]["items"]}
        assert sent == {(e, b) for e, b, _ in items}
    for item in got:
        if item.status is ItemStatus.RELEASED and form is ResponseForm.BOOLEAN_ONLY:
            assert isinstance(item.value, bool)


# ---------------------------------------------------------------------- mapped REST sources

SOURCE_ADAPTERS: dict[str, type[MappedRestAdapter]] = {
    "politie": PoliceAdapter,
    "raad_kinderbescherming": RaadAdapter,
    "veilig_thuis": VeiligThuisAdapter,
    "gemeente_wijkteam": MunicipalityAdapter,
    "schuldhulpverlening": MunicipalityAdapter,
}
SOURCE_ELEMENTS = sorted(
    set(ELEMENTS)
    | {"vt.reporter_identity", "finance.total_debt_amount", "cp.ots_decision"}
    | {e for cls in set(SOURCE_ADAPTERS.values()) for e in cls().mapping.elements}
)
source_items = st.lists(
    st.tuples(
        st.sampled_from(SOURCE_ELEMENTS), st.sampled_from(BSNS), st.sampled_from(SubjectKind)
    ),
    min_size=0,
    max_size=10,
)


@pytest.fixture(scope="module")
async def source_adapters() -> AsyncIterator[dict[str, MappedRestAdapter]]:
    adapters = {
        party: cls(timeout=3.0, retries=0, breaker_threshold=10_000)
        for party, cls in SOURCE_ADAPTERS.items()
    }
    yield adapters
    for a in adapters.values():
        await a.aclose()


@given(
    party=st.sampled_from(sorted(SOURCE_ADAPTERS)),
    items=source_items,
    form=st.sampled_from(ResponseForm),
    ignore_fields=st.booleans(),
)
@SETTINGS
async def test_source_adapters_ask_and_return_only_allowed_elements(
    source_adapters: dict[str, MappedRestAdapter],
    sim_urls: dict[str, Any],
    sim_admin: SimAdmin,
    party: str,
    items: list[tuple[str, str, SubjectKind]],
    form: ResponseForm,
    ignore_fields: bool,
) -> None:
    """Whatever is asked, and even when the source ignores the field selection: one answer per
    requested item, nothing else; only the resources and fields of the requested (mapped)
    elements are asked for; a released value has only the catalogue's fields."""
    adapter = source_adapters[party]
    url = sim_urls["sources"][party]
    await sim_admin.set_faults(url, extra_item=ignore_fields)
    await sim_admin.client.delete(f"{url}/_sim/source-requests")
    got = await adapter.fetch(url, make_request(items, form))
    check_subset(items, got)
    rules = [
        adapter.mapping.elements[e]
        for e, _, k in items
        if e in adapter.mapping.elements and k in adapter.mapping.elements[e].subjects
    ]
    allowed_fields = set().union(*(r.source_fields() for r in rules))
    allowed_resources = {adapter.mapping.resources[r.resource].path for r in rules}
    asked = (await sim_admin.client.get(f"{url}/_sim/source-requests")).json()
    for entry in asked:
        assert set(entry["fields"]) <= allowed_fields
    assert bool(asked) <= bool(allowed_resources)
    fields = catalogue_fields()
    for item in got:
        if item.status is ItemStatus.RELEASED and form is ResponseForm.BOOLEAN_ONLY:
            assert isinstance(item.value, bool)
        elif item.status is ItemStatus.RELEASED:
            shape = fields.get(item.element)
            values = item.value if isinstance(item.value, list) else [item.value]
            for value in values:
                if shape is not None and isinstance(value, dict):
                    assert set(value) <= shape, (item.element, value)
        else:
            assert item.value is None
        assert item.element != "vt.reporter_identity" or item.status is ItemStatus.UNAVAILABLE


def catalogue_fields() -> dict[str, set[str]]:
    doc = yaml.safe_load(DEFAULT_CATALOGUE_PATH.read_text(encoding="utf-8"))
    out: dict[str, set[str]] = {}
    for e in doc["elements"]:
        value = e.get("value") or {}
        shape = value.get("fields") or (
            value.get("items") if isinstance(value.get("items"), dict) else None
        )
        if isinstance(shape, dict):
            out[str(e["id"])] = {str(k) for k in shape}
    return out
