"""Veilig Thuis adapter: case files, reports, safety assessments, case status and contact
person over Veilig Thuis's JSON REST API, mapped by ``mapping.yaml`` through the generic engine
(:class:`adapters.sdk.source.MappedRestAdapter`). The source-specific part is the translation of
the registration's violence-type codes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from adapters.sdk.source import MappedRestAdapter

__all__ = ["MAPPING_PATH", "VIOLENCE_TYPES", "VeiligThuisAdapter", "violence_types"]

MAPPING_PATH = Path(__file__).with_name("mapping.yaml")

# Veilig Thuis registration codes -> the catalogue's violence types (vt.report).
VIOLENCE_TYPES = {
    "LICHAMELIJK": "lichamelijk_geweld",
    "PSYCHISCH": "psychisch_geweld",
    "SEKSUEEL": "seksueel_geweld",
    "VERWAARLOZING": "verwaarlozing",
    "GETUIGE_PARTNERGEWELD": "getuige_partnergeweld",
}


def violence_types(codes: Any) -> list[str]:
    """Registration codes to catalogue violence types; an unknown code fails the item."""
    if not isinstance(codes, list):
        raise TypeError("geweldsvormen must be a list")
    return [VIOLENCE_TYPES[str(code)] for code in codes]


class VeiligThuisAdapter(MappedRestAdapter):
    """Adapter kind ``veilig_thuis``: see adapters/veilig_thuis/README.md."""

    def __init__(self, *, mapping_path: Path = MAPPING_PATH, **options: Any) -> None:
        super().__init__(
            kind="veilig_thuis",
            mapping_path=mapping_path,
            transforms={"violence_types": violence_types},
            **options,
        )
