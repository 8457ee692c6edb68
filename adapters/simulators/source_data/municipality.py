"""The municipal social domain's records: residents, MDA++ cases, signals, debts, housing."""

from __future__ import annotations

from adapters.simulators.registry import Person
from adapters.simulators.source_data._common import Answer, Rec, members, pick
from adapters.simulators.values import World


def _debts(person: Person) -> int:
    """0: no debts; 1: arrears only; 2: a debt trajectory."""
    if person.is_minor:
        return 0
    if person.ref in ("P01", "P02"):
        return 2
    if person.ref.startswith("P"):
        return 1 if person.ref == "P06" else 0
    return {0: 2, 1: 1}.get(pick(person.ref, 6), 0)


def gm_resident(world: World, person: Person) -> Answer:
    income = "BIJSTAND" if _debts(person) or person.ref == "P06" else "LOON"
    return {
        "bsn": person.bsn,
        "huisarts": {
            "praktijk": "Huisartsenpraktijk De Linde (fictional)",
            "telefoon": "+31 00 0000000",
        }
        if world.registry.household_of(person) is not None
        else None,
        "inkomen": None if person.is_minor else {"bron": income},
    }


def gm_mda_cases(world: World, person: Person) -> Answer:
    case = world.registry.mda_case(person)
    if case is None:
        return []
    return [
        {
            "zaaknummer": case.case_id,
            "fase": "AFGESLOTEN" if case.closed else "STABILISATIE",
            "laatste_evaluatie": (case.closed or case.registered).isoformat(),
            "regiepartij": "gemeente_wijkteam",
            "plan": {"documentnaam": f"{case.case_id}-plan-v1.pdf", "versie": 1},
        }
    ]


def gm_signals(world: World, person: Person) -> Answer:
    reg = world.registry
    out: list[Rec] = []
    hh = reg.household_of(person)
    if hh is not None and hh.id in reg.mda_cases:
        out.append(
            {
                "soort": "SOCIAAL_ISOLEMENT",
                "datum": reg.mda_cases[hh.id].registered.isoformat(),
                "toelichting": "No family in the region; no contact with neighbours",
            }
        )
    if person.ref in ("P07",):
        out.append(
            {
                "soort": "VERZUIM",
                "datum": "2026-04-29",
                "kanaal": "DUO",
                "code": "ongeoorloofd_verzuim",
            }
        )
    return out


def gm_arrears(world: World, person: Person) -> Answer:
    if _debts(person) == 0:
        return []
    return [
        {
            "schuldeisertype": "ZORGVERZEKERING",
            "bedrag": 1450,
            "achterstand_sinds": "2026-01-15",
            "signaaldatum": "2026-04-12",
            "crisis": True,
        },
        {
            "schuldeisertype": "ENERGIE",
            "bedrag": 310.5,
            "achterstand_sinds": "2026-02-01",
            "signaaldatum": "2026-04-20",
            "crisis": False,
        },
    ]


def gm_debt_trajectory(world: World, person: Person) -> Answer:
    debts = _debts(person)
    if debts == 0:
        return None
    if debts == 1:  # after an early-warning signal the municipality offers help (Wgs)
        arrears = gm_arrears(world, person)
        assert isinstance(arrears, list)
        return {
            "fase": "EERSTE_GESPREK_AANGEBODEN",
            "sinds": "2026-04-14",
            "schuldenlast": {
                "totaal_eur": sum(a["bedrag"] for a in arrears),
                "aantal_schuldeisers": len(arrears),
            },
        }
    return {
        "fase": "PLAN_VAN_AANPAK",
        "sinds": "2026-05-01",
        "schuldenlast": {"totaal_eur": 8200, "aantal_schuldeisers": 7},
    }


def gm_housing(world: World, person: Person) -> Answer:
    hh = world.registry.household_of(person)
    if hh is None:
        return None
    debts = max((_debts(p) for p in members(world.registry, hh)), default=0)
    return {
        "woonvorm": "ZELFSTANDIG_HUUR",
        "ontruimingsrisico": {"fase": "AANMANING", "datum": "2026-04-20"}
        if debts
        else {"fase": "GEEN", "datum": None},
    }
