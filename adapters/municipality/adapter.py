"""Municipality adapter (wijkteam and schuldhulpverlening): involvement and MDA++ case
direction, debt signals and housing over the municipal social-domain JSON REST API, mapped by
``mapping.yaml`` through the generic engine (:class:`adapters.sdk.source.MappedRestAdapter`).
The source-specific part is the banding of the total debt (the catalogue shares a band, never
the amount)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from adapters.sdk.source import MappedRestAdapter

__all__ = ["MAPPING_PATH", "MunicipalityAdapter", "debt_band"]

MAPPING_PATH = Path(__file__).with_name("mapping.yaml")


def debt_band(amount: Any) -> str:
    """A total debt in euros -> the catalogue band (finance.total_debt_amount)."""
    if isinstance(amount, bool) or not isinstance(amount, int | float) or amount < 0:
        raise ValueError("a non-negative amount is required")
    if amount < 1000:
        return "<1000"
    if amount <= 5000:
        return "1000-5000"
    if amount <= 20000:
        return "5000-20000"
    return ">20000"


class MunicipalityAdapter(MappedRestAdapter):
    """Adapter kind ``municipality``: see adapters/municipality/README.md."""

    def __init__(self, *, mapping_path: Path = MAPPING_PATH, **options: Any) -> None:
        super().__init__(
            kind="municipality",
            mapping_path=mapping_path,
            transforms={"debt_band": debt_band},
            **options,
        )
