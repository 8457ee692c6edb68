"""Police adapter: incident registrations, care reports (zorgmeldingen) and house bans over the
police's JSON REST API, mapped by ``mapping.yaml`` through the generic engine
(:class:`adapters.sdk.source.MappedRestAdapter`). Only the source-specific derivation lives
here: the summary of a suspect's earlier domestic-violence registrations."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from pathlib import Path
from typing import Any

from adapters.sdk.source import MappedRestAdapter, read_path

__all__ = ["MAPPING_PATH", "PoliceAdapter", "suspect_history"]

MAPPING_PATH = Path(__file__).with_name("mapping.yaml")


def suspect_history(
    records: list[dict[str, Any]], params: Mapping[str, Any], bsn: str, as_of: date
) -> dict[str, Any] | None:
    """``police.suspect_history_dv``: count, last date and types of the incidents in which
    ``bsn`` is registered as suspect within the look-back period before ``as_of``, the
    request's date (None: none)."""
    years = int(params.get("lookback_years", 5))
    types: Mapping[str, str] = params.get("types") or {}
    since = date(as_of.year - years, as_of.month, min(as_of.day, 28))
    dates: list[str] = []
    found: list[str] = []
    for incident in records:
        involved = read_path(incident, "involved") or []
        if not any(
            isinstance(v, dict) and v.get("bsn") == bsn and v.get("role") == "SUSPECT"
            for v in involved
        ):
            continue
        when = datetime.fromisoformat(str(read_path(incident, "occurred_at"))).date()
        if when < since:
            continue
        dates.append(when.isoformat())
        code = str(read_path(incident, "classification.code"))
        kind = types[code]  # an unknown code fails this item (unavailable), never guessed
        if kind not in found:
            found.append(kind)
    if not dates:
        return None
    return {"lookback_years": years, "count": len(dates), "last_date": max(dates), "types": found}


class PoliceAdapter(MappedRestAdapter):
    """Adapter kind ``police``: see adapters/police/README.md."""

    def __init__(self, *, mapping_path: Path = MAPPING_PATH, **options: Any) -> None:
        super().__init__(
            kind="police",
            mapping_path=mapping_path,
            derivations={"suspect_history": suspect_history},
            **options,
        )
