"""Secondary provision: a party that lawfully received an element passes it on and the
broker records both the provider and the original source of each released value, end
to end over loopback HTTP on SQLite and PostgreSQL, through the real Veilig Thuis adapter
against its simulated source system (which holds police-originated incidents): the
decrypted payload, the response items and the audit ``release`` entry name the source;
a source the broker does not know is recorded as ``unknown``, never as the partner's text."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select

from audit.models import AuditEntry
from broker.core.protocols import FetchedItem
from broker.core.types import ItemStatus
from broker.exchange.service import UNKNOWN_SOURCE, original_source
from tests.conftest import AGENCIES, Harness

FATHER = "999990007"  # P01 of the Lindeburg registry: known to Veilig Thuis and the police
SAFETY_TABLE: dict[str, Any] = {
    "agreement_id": "agr-zvh-mdaplusplus",
    "purpose_id": "veiligheidsoverleg",
    "case_reference": "ZVH-LB-2026-0007",
    "subjects": [FATHER],
    "context": {"mda_case_id": "MDA-LB-2026-0007", "mda_case_status": "actief"},
}
PARTIES = ("politie", "veilig_thuis", "ggz", "raad_kinderbescherming")


async def _release_entries(harness: Harness, exchange_ids: list[str]) -> list[dict[str, Any]]:
    async with harness.broker.services.db.session() as session:
        entries = (
            await session.scalars(
                select(AuditEntry)
                .where(AuditEntry.exchange_id.in_(exchange_ids), AuditEntry.kind == "release")
                .order_by(AuditEntry.seq)
            )
        ).all()
    for entry in entries:
        assert FATHER not in entry.entry  # pseudonymised keys only
        assert '"value"' not in entry.entry  # element names, never values
    return [orjson.loads(e.entry) for e in entries]


async def test_veilig_thuis_passes_on_a_police_element_naming_the_source(
    harness: Harness,
) -> None:
    """Veilig Thuis provides police.dv_incident (received from the police) next to its own
    safety assessment; the agreement purpose lists veilig_thuis as a provider of both."""
    client = harness.client("raad_kinderbescherming")
    try:
        response = await client.exchange(
            {
                **SAFETY_TABLE,
                "provider": {"party": "veilig_thuis"},
                "elements": ["police.dv_incident", "vt.safety_assessment", "om.prosecution_status"],
            }
        )
        assert response.status_code == 200, response.text
        body = response.json()
        released = client.decrypt(body["payload"])
    finally:
        await client.aclose()

    items = {i["element"]: i for i in body["items"]}
    assert items["police.dv_incident"]["status"] == "released"
    assert items["vt.safety_assessment"]["status"] == "released"
    assert items["police.dv_incident"]["provider"] == {
        "party": "veilig_thuis",
        "oin": AGENCIES["veilig_thuis"],
    }
    # The response names the original source; the provider's own element names itself.
    assert items["police.dv_incident"]["source"] == "politie"
    assert items["vt.safety_assessment"]["source"] == "veilig_thuis"
    # Not for the Raad under this purpose: denied, nothing released, no source.
    assert items["om.prosecution_status"]["status"] == "denied"
    assert items["om.prosecution_status"]["source"] is None

    # The decrypted payload: each value with its source.
    assert released["exchange_id"] == body["exchange_id"]
    payload = {i["element"]: i for i in released["items"]}
    assert set(payload) == {"police.dv_incident", "vt.safety_assessment"}
    assert payload["police.dv_incident"]["source"] == "politie"
    assert payload["police.dv_incident"]["subject"] == FATHER
    assert payload["police.dv_incident"]["value"]["incident_id"]
    assert payload["vt.safety_assessment"]["source"] == "veilig_thuis"

    # The audit release entry: provider and original source per released item.
    (entry,) = await _release_entries(harness, [body["exchange_id"]])
    assert (entry["provider"], entry["provider_party"]) == (
        AGENCIES["veilig_thuis"],
        "veilig_thuis",
    )
    audited = {i["element"]: i for i in entry["items"]}
    assert audited["police.dv_incident"]["source"] == "politie"
    assert audited["police.dv_incident"]["status"] == "released"
    assert audited["vt.safety_assessment"]["source"] == "veilig_thuis"
    assert "om.prosecution_status" not in audited
    assert audited["police.dv_incident"]["subject"] != FATHER


async def test_fan_out_names_first_hand_and_secondary_sources(harness: Harness) -> None:
    """The same element from the police itself (first-hand) and from Veilig Thuis
    (secondary): both name the police as source, each item its own provider."""
    client = harness.client("raad_kinderbescherming")
    try:
        response = await client.exchange(
            {
                **SAFETY_TABLE,
                "providers": [{"party": "politie"}, {"party": "veilig_thuis"}],
                "elements": ["police.dv_incident"],
            }
        )
        assert response.status_code == 200, response.text
        body = response.json()
        released = client.decrypt(body["payload"])
    finally:
        await client.aclose()

    # Both released; both values originate at the police, each item names its provider.
    got = {i["provider"]["party"]: (i["status"], i["source"]) for i in body["items"]}
    assert got == {"politie": ("released", "politie"), "veilig_thuis": ("released", "politie")}
    assert [(i["provider"]["party"], i["source"]) for i in released["items"]] == [
        ("politie", "politie"),
        ("veilig_thuis", "politie"),
    ]
    entries = await _release_entries(harness, [leg["exchange_id"] for leg in body["providers"]])
    assert [
        (e["provider_party"], [(i["element"], i["source"]) for i in e["items"]]) for e in entries
    ] == [
        ("politie", [("police.dv_incident", "politie")]),
        ("veilig_thuis", [("police.dv_incident", "politie")]),
    ]


def _item(source: str | None) -> FetchedItem:
    return FetchedItem("police.dv_incident", FATHER, ItemStatus.RELEASED, {}, source)


@given(provider=st.sampled_from(PARTIES), named=st.none() | st.text(max_size=40))
def test_the_recorded_source_is_a_known_party_or_unknown(provider: str, named: str | None) -> None:
    source = original_source(_item(named), provider, PARTIES)
    if named is None or named == provider:
        assert source == provider
    elif named in PARTIES:
        assert source == named
    else:
        assert source == UNKNOWN_SOURCE  # partner text never passes on


def test_known_unknown_and_absent_sources() -> None:
    assert original_source(_item("politie"), "veilig_thuis", PARTIES) == "politie"
    assert original_source(_item(None), "veilig_thuis", PARTIES) == "veilig_thuis"
    assert original_source(_item("Politie Oost-Brabant, J. Jansen"), "veilig_thuis", PARTIES) == (
        UNKNOWN_SOURCE
    )
    assert original_source(_item(""), "veilig_thuis", PARTIES) == UNKNOWN_SOURCE
