"""Which adapter kind and simulator URL an agency of a party gets, from the ready document of
:func:`adapters.simulators.runner.start_simulators` (``{"parties", "fhir", "sources"}``).

ggz and huisarts answer over HL7 FHIR R4 (``fhir``); the police, the Raad, Veilig Thuis, the
wijkteam and schuldhulpverlening over their own source APIs (``police``, ``raad``,
``veilig_thuis``, ``municipality``); every other party over the broker's generic partner API
(``partner_api``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["SOURCE_ADAPTER_KINDS", "agency_endpoint"]

# Party -> the adapter kind of its own source system (registered in broker/app.py).
SOURCE_ADAPTER_KINDS: Mapping[str, str] = {
    "politie": "police",
    "raad_kinderbescherming": "raad",
    "veilig_thuis": "veilig_thuis",
    "gemeente_wijkteam": "municipality",
    "schuldhulpverlening": "municipality",
}


def agency_endpoint(party: str, urls: Mapping[str, Any]) -> tuple[str, str | None]:
    """``(adapter_kind, endpoint_url)`` for an agency of ``party``."""
    fhir = urls.get("fhir") or {}
    if party in fhir:
        return "fhir", str(fhir[party])
    sources = urls.get("sources") or {}
    if party in sources and party in SOURCE_ADAPTER_KINDS:
        return SOURCE_ADAPTER_KINDS[party], str(sources[party])
    url = (urls.get("parties") or {}).get(party)
    return "partner_api", str(url) if url else None
