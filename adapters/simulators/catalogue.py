"""The data-element catalogue as the simulators need it: subject kind, sources and example value.

Read from the project's own copy, ``policies/catalogue/catalogue.yaml``."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

__all__ = ["DEFAULT_CATALOGUE_PATH", "Catalogue", "CatalogueElement"]

DEFAULT_CATALOGUE_PATH = (
    Path(__file__).resolve().parents[2] / "policies" / "catalogue" / "catalogue.yaml"
)


@dataclass(frozen=True, slots=True)
class CatalogueElement:
    id: str
    subject: str  # child | adult | any_person | household | professional
    value_type: str
    typical_sources: tuple[str, ...]
    example: Any

    def example_value(self) -> Any:
        """A fresh copy of the catalogue example (callers may not share mutable values)."""
        return copy.deepcopy(self.example)


@dataclass(frozen=True, slots=True)
class Catalogue:
    elements: dict[str, CatalogueElement]

    @classmethod
    def load(cls, path: Path | None = None) -> Catalogue:
        doc = yaml.safe_load((path or DEFAULT_CATALOGUE_PATH).read_text(encoding="utf-8"))
        elements: dict[str, CatalogueElement] = {}
        for e in doc.get("elements") or ():
            value = e.get("value") or {}
            elements[str(e["id"])] = CatalogueElement(
                id=str(e["id"]),
                subject=str(e.get("subject", "any_person")),
                value_type=str(value.get("type", "object")),
                typical_sources=tuple(str(s) for s in e.get("typical_sources") or ()),
                example=_jsonable(value.get("example")),
            )
        return cls(elements)

    def get(self, element: str) -> CatalogueElement | None:
        return self.elements.get(element)


def _jsonable(value: Any) -> Any:
    """YAML turns unquoted dates into date objects; JSON needs ISO strings."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value
