"""The Raad voor de Kinderbescherming's records: persons, investigations, measures and authority."""

from __future__ import annotations

from datetime import date, timedelta

from adapters.simulators.registry import Person, Registry, split_name
from adapters.simulators.source_data._common import Answer, Rec, iso, members, pick, vt_household
from adapters.simulators.values import World


def raad_cases(  # noqa: PLR0911 - one branch per kind of case
    reg: Registry, person: Person
) -> tuple[list[Rec], list[Rec]]:
    """(investigations, measures) of a child."""
    if not person.is_minor:
        return [], []
    hh, record = vt_household(reg, person)
    if hh is None or record is None or person.ref not in hh.members:
        return [], []
    case = f"RVDK-{record.case_opened.year}-LB-{pick(hh.id, 90000) + 1000:05d}"
    if hh.id == "HH-HOEKSTRA":  # scenario S03: request for investigation on 11 May 2026
        return [_investigation(case, "LOPEND", None, date(2026, 6, 2))], []
    if record.case_closed is None:
        started = record.case_opened + timedelta(days=60)
        return [_investigation(case, "AANGEMELD", None, started)], []
    if hh.id == "HH-MANSOUR":  # OTS after the Raad's investigation (catalogue example)
        decided = date(2026, 11, 18)
        return [_investigation(case, "AFGEROND", "VERZOEK_OTS", date(2026, 10, 21))], [
            _measure(f"{case}-M1", "OTS", decided, date(2027, 11, 18))
        ]
    if hh.id == "HH-JONKMAN" or pick(hh.id, 3) == 0:
        return [_investigation(case, "AFGEROND", "GEEN_VERZOEK", record.case_closed)], []
    decided = record.case_closed - timedelta(days=7)
    investigation = _investigation(case, "AFGEROND", "VERZOEK_OTS", decided - timedelta(days=30))
    if pick(hh.id, 4) == 1:  # authority ended, guardianship with the GI
        return [investigation], [
            _measure(f"{case}-M1", "GEZAGSBEEINDIGING", decided, None, ouder=_parent(person)),
            _measure(f"{case}-M2", "VOOGDIJ", decided, None),
        ]
    return [investigation], [_measure(f"{case}-M1", "OTS", decided, decided + timedelta(days=365))]


def _parent(person: Person) -> str | None:
    return person.authority.holders[0] if person.authority and person.authority.holders else None


def _investigation(case: str, status: str, outcome: str | None, when: date) -> Rec:
    return {
        "zaaknummer": case,
        "soort": "BESCHERMINGSONDERZOEK",
        "status": status,
        "uitkomst": outcome,
        "statusdatum": when.isoformat(),
        "aanmelder": "veilig_thuis",
    }


def _measure(mid: str, kind: str, start: date, end: date | None, ouder: str | None = None) -> Rec:
    return {
        "maatregel_id": mid,
        "soort": kind,
        "status": "ACTIEF",
        "rechtbank": "Rechtbank Lindeburg",
        "beschikkingsdatum": start.isoformat(),
        "ingangsdatum": start.isoformat(),
        "einddatum": iso(end),
        "voorlopig": False,
        "uitvoerder": {"naam": "Jeugdbescherming Lindeburg", "soort": "GI"},
        "ouder_ref": ouder,
        "grond": "ERNSTIGE_BEDREIGING_ONVERMOGEN" if kind == "GEZAGSBEEINDIGING" else None,
    }


def raad_person(world: World, person: Person) -> Answer:
    reg = world.registry
    given, prefix, surname = split_name(person.name)
    return {
        "bsn": person.bsn,
        "naam": {"voornamen": given, "voorvoegsel": prefix, "geslachtsnaam": surname},
        "geboortedatum": person.birth_date.isoformat(),
        "huishouden": [
            {"persoon_ref": m.ref, "relatie": reg.relation(m)}
            for m in members(reg, reg.household_of(person))
        ],
    }


def raad_investigations(world: World, person: Person) -> Answer:
    return raad_cases(world.registry, person)[0]


def raad_measures(world: World, person: Person) -> Answer:
    return raad_cases(world.registry, person)[1]


_GEZAG = {
    "gezamenlijk_gezag_ouders": "GEZAMENLIJK_OUDERS",
    "eenhoofdig_gezag_moeder": "EENHOOFDIG_MOEDER",
    "eenhoofdig_gezag_vader": "EENHOOFDIG_VADER",
}


def raad_authority(world: World, person: Person) -> Answer:
    auth = person.authority
    if auth is None:
        return None  # not a minor: no authority record
    measures = raad_cases(world.registry, person)[1]
    if any(m["soort"] == "VOOGDIJ" for m in measures):
        return {
            "gezagsvorm": "VOOGDIJ_GI",
            "gezaghebbenden": [],
            "ouders_zonder_gezag": [*auth.holders, *auth.parents_without_authority],
        }
    return {
        "gezagsvorm": _GEZAG.get(auth.type, auth.type.upper()),
        "gezaghebbenden": list(auth.holders),
        "ouders_zonder_gezag": list(auth.parents_without_authority),
    }
