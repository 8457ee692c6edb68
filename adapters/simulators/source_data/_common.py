"""Helpers shared by the simulated source systems' records."""

from __future__ import annotations

import hashlib
from datetime import date, timedelta
from typing import Any

from adapters.simulators.registry import Household, Person, Registry, VtRecord

__all__ = ["Answer", "Rec", "adults", "iso", "members", "offset", "pick", "vt_household"]

Rec = dict[str, Any]
Answer = list[Rec] | Rec | None


def offset(day: date) -> str:
    """The Europe/Amsterdam UTC offset on ``day`` (summer time from the last Sunday of March
    to the last Sunday of October)."""

    def last_sunday(month: int) -> date:
        d = date(day.year, month, 31)
        return d - timedelta(days=(d.weekday() + 1) % 7)

    return "+02:00" if last_sunday(3) <= day < last_sunday(10) else "+01:00"


def pick(key: str, n: int) -> int:
    return int(hashlib.sha256(key.encode()).hexdigest(), 16) % n


def iso(d: date | None) -> str | None:
    return d.isoformat() if d else None


def members(reg: Registry, hh: Household | None) -> list[Person]:
    return [reg.persons[m] for m in hh.members if m in reg.persons] if hh else []


def adults(reg: Registry, hh: Household | None) -> list[Person]:
    return [p for p in members(reg, hh) if not p.is_minor]


def vt_household(reg: Registry, person: Person) -> tuple[Household | None, VtRecord | None]:
    record = reg.vt_record(person)
    if record is None:
        return None, None
    return reg.households.get(record.household), record
