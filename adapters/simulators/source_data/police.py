"""The police system's records: persons, incidents, zorgmeldingen and house bans."""

from __future__ import annotations

from datetime import date, timedelta

from adapters.simulators.registry import Household, Person, Registry, VtRecord, split_name
from adapters.simulators.source_data._common import Answer, Rec, adults, members, offset, pick
from adapters.simulators.values import World


def _incidents_of_household(reg: Registry, hh: Household, record: VtRecord) -> list[Rec]:
    """The incident that led to a police-originated Veilig Thuis case (plus P01's history)."""
    grown = adults(reg, hh)
    mothers = [p for p in grown if p.gender == "V"]
    victim = mothers[0] if mothers else (grown[0] if grown else None)
    # The suspect: a father in the house, else a parent of the children living elsewhere.
    suspect = next((p for p in grown if p is not victim and p.gender == "M"), None)
    if suspect is None:
        outside = {
            ref
            for c in members(reg, hh)
            if c.authority
            for ref in (*c.authority.holders, *c.authority.parents_without_authority)
            if ref not in hh.members
        }
        suspect = next((reg.persons[r] for r in sorted(outside) if r in reg.persons), None)
    children = [p for p in members(reg, hh) if p.is_minor]
    day = record.case_opened
    involved = [
        {"person_ref": p.ref, "bsn": p.bsn, "role": role}
        for p, role in ((suspect, "SUSPECT"), (victim, "VICTIM"))
        if p is not None
    ] + [{"person_ref": c.ref, "bsn": c.bsn, "role": "WITNESS"} for c in children]
    incidents = [
        {
            "incident_id": f"PL-LB-{day:%Y-%m%d}-{pick(hh.id, 9000) + 42:04d}"
            if hh.id != "HH-HOEKSTRA"
            else "PL-LB-2026-0314-0042",
            "occurred_at": f"{day.isoformat()}T01:40:00{offset(day)}",
            "classification": {"code": "MISH" if mothers else "BEDR", "label": "(fictional)"},
            "domestic_violence": True,
            "children_present": bool(children),
            "involved": involved,
            "address_ref": hh.id,
        }
    ]
    if suspect is not None and suspect.ref == "P01":  # scenario S01: earlier registrations
        for when, code in (
            ("2025-11-02T22:15:00+01:00", "BEDR"),
            ("2023-08-19T23:05:00+02:00", "MISH"),
        ):
            incidents.append(
                {
                    "incident_id": f"PL-LB-{when[:4]}-{when[5:7]}{when[8:10]}-0007",
                    "occurred_at": when,
                    "classification": {"code": code, "label": "(fictional)"},
                    "domestic_violence": True,
                    "children_present": False,
                    "involved": [
                        {"person_ref": "P01", "bsn": suspect.bsn, "role": "SUSPECT"},
                        {"person_ref": "P02", "bsn": "999990019", "role": "VICTIM"},
                    ],
                    "address_ref": hh.id,
                }
            )
    return incidents


# Registry identity -> (registry, cases): the cases are built once per world (the registry
# does not change while a simulator serves it).
_CASES: dict[int, tuple[Registry, dict[str, list[Rec]], dict[str, list[Rec]]]] = {}


def _police_index(reg: Registry) -> tuple[dict[str, list[Rec]], dict[str, list[Rec]]]:
    """(household id -> incidents, bsn -> incidents) of every police-originated case."""
    cached = _CASES.get(id(reg))
    if cached is not None and cached[0] is reg:
        return cached[1], cached[2]
    cases: dict[str, list[Rec]] = {}
    by_bsn: dict[str, list[Rec]] = {}
    for hid, record in reg.veilig_thuis.items():
        hh = reg.households.get(hid)
        if hh is not None and record.origin == "politie":
            cases[hid] = _incidents_of_household(reg, hh, record)
            for incident in cases[hid]:
                for bsn in {str(v["bsn"]) for v in incident["involved"]}:
                    by_bsn.setdefault(bsn, []).append(incident)
    _CASES[id(reg)] = (reg, cases, by_bsn)
    return cases, by_bsn


def _police_cases(reg: Registry) -> dict[str, list[Rec]]:
    """Every police-originated case: household id -> incidents."""
    return _police_index(reg)[0]


def police_person(world: World, person: Person) -> Answer:
    reg = world.registry
    given, prefix, surname = split_name(person.name)
    hh = reg.household_of(person)
    return {
        "bsn": person.bsn,
        "name": {"first_names": given, "prefix": prefix, "last_name": surname},
        "date_of_birth": person.birth_date.isoformat(),
        "address": None
        if hh is None
        else {
            "street": hh.address.street,
            "house_number": hh.address.number,
            "postal_code": hh.address.postcode,
            "city": hh.address.city,
        },
        "residents": [
            {"person_ref": m.ref, "relationship": reg.relation(m).upper()} for m in members(reg, hh)
        ],
    }


def police_incidents(world: World, person: Person) -> Answer:
    out = _police_index(world.registry)[1].get(person.bsn, [])
    return sorted(out, key=lambda i: str(i["occurred_at"]), reverse=True)


def police_zorgmeldingen(world: World, person: Person) -> Answer:
    reg = world.registry
    hh = reg.household_of(person)
    if hh is None or hh.id not in _police_cases(reg):
        return []
    first = _police_cases(reg)[hh.id][0]
    children = sum(1 for m in members(reg, hh) if m.is_minor)
    summary = (
        "Neighbours reported shouting; mother had a red mark on cheek; three children at home."
        if hh.id == "HH-HOEKSTRA"
        else f"(fictional) Police called to the address; {children} child(ren) at home."
    )
    return [
        {
            "zorgmelding_id": f"ZM-{first['incident_id'][3:]}",
            "registered_at": str(first["occurred_at"]).replace("T01:40", "T01:55"),
            "category": "ZM_HG" if first["children_present"] else "ZM_VOLW",
            "children_present": first["children_present"],
            "summary": summary,
            "incident_id": first["incident_id"],
        }
    ]


def police_house_bans(world: World, person: Person) -> Answer:
    out: list[Rec] = []
    for first in police_incidents(world, person) or []:
        assert isinstance(first, dict)
        if (
            first["incident_id"]
            != _police_cases(world.registry)[first["address_ref"]][0]["incident_id"]
        ):
            continue  # a ban follows the incident that opened the case
        suspect = next((v for v in first["involved"] if v["role"] == "SUSPECT"), None)
        lives_there = person.ref in world.registry.households[first["address_ref"]].members
        if suspect is not None and suspect["bsn"] == person.bsn and lives_there:
            day = date.fromisoformat(str(first["occurred_at"])[:10])
            ends = day + timedelta(days=10)
            out.append(
                {
                    "ban_id": f"THV-{first['incident_id'][6:]}",
                    "imposed_at": f"{day.isoformat()}T03:10:00{offset(day)}",
                    "ends_at": f"{ends.isoformat()}T03:10:00{offset(ends)}",
                    "extended": False,
                    "person_ref": person.ref,
                    "status": "ENDED",
                }
            )
    return out
