"""Raad voor de Kinderbescherming adapter: investigations, child-protection measures (OTS,
voogdij, gezagsbeëindiging) and authority over the Raad's JSON REST API, mapped by
``mapping.yaml`` through the generic engine (:class:`adapters.sdk.source.MappedRestAdapter`).
Everything is declarative; this module only names the mapping file and the adapter kind."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from adapters.sdk.source import MappedRestAdapter

__all__ = ["MAPPING_PATH", "RaadAdapter"]

MAPPING_PATH = Path(__file__).with_name("mapping.yaml")


class RaadAdapter(MappedRestAdapter):
    """Adapter kind ``raad``: see adapters/raad/README.md."""

    def __init__(self, *, mapping_path: Path = MAPPING_PATH, **options: Any) -> None:
        super().__init__(kind="raad", mapping_path=mapping_path, **options)
