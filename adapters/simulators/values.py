"""Deterministic element values of a simulated partner system.

Identity, address, household and authority elements come from the registry; Veilig Thuis and
MDA++ elements exist only where the registry has a record; every other element returns a
value shaped like (a copy of) the catalogue example. ``None`` means "not found".
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from adapters.simulators.catalogue import Catalogue, CatalogueElement
from adapters.simulators.registry import Person, Registry, split_name

__all__ = ["REFERENCE_DATE", "Found", "World", "element_value"]

# Ages (household.minor_children_in_care) are computed on this fixed date, so answers never
# depend on the day the simulator runs.
REFERENCE_DATE = date(2026, 6, 1)


@dataclass(frozen=True, slots=True)
class World:
    registry: Registry
    catalogue: Catalogue


@dataclass(frozen=True, slots=True)
class Found:
    value: Any
    source: str


def _age(born: date, on: date) -> int:
    return on.year - born.year - ((on.month, on.day) < (born.month, born.day))


def _subject_fits(meta: CatalogueElement, person: Person) -> bool:
    if meta.subject == "child":
        return person.is_minor
    if meta.subject == "adult":
        return not person.is_minor
    return True


def element_value(world: World, party: str, element: str, person: Person) -> Found | None:
    """The value ``party`` holds for ``element`` about ``person`` (or its household)."""
    meta = world.catalogue.get(element)
    if meta is None or not _subject_fits(meta, person):
        return None
    value = _value(world, meta, person)
    if value is _MISSING:
        return None
    source = (
        party
        if party in meta.typical_sources or not meta.typical_sources
        else (meta.typical_sources[0])
    )
    return Found(value=value, source=source)


_MISSING: Any = object()


def _value(world: World, meta: CatalogueElement, person: Person) -> Any:  # noqa: PLR0911, PLR0912
    reg = world.registry
    element = meta.id
    household = reg.household_of(person)
    if element == "person.bsn":
        return person.bsn
    if element == "person.name":
        given, prefix, surname = split_name(person.name)
        return {"given_names": given, "prefix": prefix, "surname": surname}
    if element == "person.birth_date":
        return person.birth_date.isoformat()
    if element == "person.gender":
        return person.gender
    if element == "address.current":
        return household.address.to_value() if household else _MISSING
    if element == "household.composition":
        if household is None:
            return _MISSING
        return [
            {"person_ref": ref, "relation": reg.relation(reg.persons[ref])}
            for ref in household.members
            if ref in reg.persons
        ]
    if element == "child.authority":
        auth = person.authority
        if auth is None:
            return _MISSING
        return {
            "type": auth.type,
            "holders": list(auth.holders),
            "parents_without_authority": list(auth.parents_without_authority),
        }
    if element == "household.minor_children_in_care":
        return _children_in_care(reg, person)
    if element.startswith("vt."):
        record = reg.vt_record(person)
        if element == "vt.report_exists":
            return record is not None
        if record is None:
            return _MISSING
        if element == "vt.case_status":
            closed = record.case_closed
            return {
                "status": "afgesloten" if closed else "onderzoek",
                "since": (closed or record.case_opened).isoformat(),
                "handed_over_to": None,
            }
        return meta.example_value()
    if element.startswith("mda."):
        case = reg.mda_case(person)
        if case is None:
            return _MISSING
        if element == "mda.progress_phase":
            return {
                "phase": "afgesloten" if case.closed else "stabilisatie",
                "last_review": (case.closed or case.registered).isoformat(),
                "case_director_party": "gemeente_wijkteam",
            }
        if element == "mda.integral_plan":
            return f"{case.case_id}-plan-v1.pdf"
        return meta.example_value()
    if meta.subject == "household" and household is None:
        return _MISSING
    return meta.example_value()


def _children_in_care(reg: Registry, person: Person) -> dict[str, Any]:
    children = [c for c in reg.children_of(person) if c.is_minor]
    own = reg.household_of(person)
    lives_with = any(reg.household_of(c) == own for c in children) if own else False
    co_holders = {
        h for c in children if c.authority for h in c.authority.holders if h != person.ref
    }
    shared: str | None = None
    if co_holders:
        same_house = own is not None and all(h in own.members for h in co_holders)
        shared = "partner" if same_house else "ex-partner"
    return {
        "count": len(children),
        "ages": sorted(_age(c.birth_date, REFERENCE_DATE) for c in children),
        "care_shared_with": shared,
        "lives_with_client": lives_with,
    }
