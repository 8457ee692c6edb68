"""Veilig Thuis's records: files, reports, safety assessments, conclusions, safety
agreements and the information received from chain partners."""

from __future__ import annotations

from datetime import date, timedelta

from adapters.simulators.registry import Person, Registry, VtRecord, split_name
from adapters.simulators.source_data._common import (
    Answer,
    Rec,
    adults,
    iso,
    members,
    pick,
    vt_household,
)
from adapters.simulators.source_data.police import police_incidents
from adapters.simulators.source_data.raad import raad_cases
from adapters.simulators.values import World

_TEAMS = ("Team Onderzoek Oost", "Team Onderzoek West", "Team Veiligheidsbeoordeling")
_WORKERS = ("(fictional) R. Kandemir", "(fictional) L. Smit", "(fictional) A. Boukhari")


def _dossier(reg: Registry, person: Person) -> Rec | None:
    hh, record = vt_household(reg, person)
    if record is None:
        return None
    hid = record.household
    closed = record.case_closed
    team = 0 if hid == "HH-HOEKSTRA" else pick(hid, len(_TEAMS))
    return {
        "dossiernummer": f"VT-LB-{record.case_opened.year}-{pick(hid, 9000) + 42:04d}"
        if hid != "HH-HOEKSTRA"
        else "VT-LB-2026-0042",
        "huishouden_ref": hid,
        "geopend": record.case_opened.isoformat(),
        "gesloten": iso(closed),
        "herkomst": (record.origin or "onbekend").upper(),
        "status": {
            "fase": "AFGESLOTEN" if closed else "ONDERZOEK",
            "sinds": (closed or record.case_opened).isoformat(),
            "overgedragen_aan": None,
        },
        "casusregie": {
            "team": _TEAMS[team],
            "medewerker": _WORKERS[team],
            "telefoon": "+31 88 0000000",
        },
        "_household": hh,
        "_record": record,
    }


def _public(rec: Rec) -> Rec:
    return {k: v for k, v in rec.items() if not k.startswith("_")}


def vt_dossiers(world: World, person: Person) -> Answer:
    dossier = _dossier(world.registry, person)
    return [_public(dossier)] if dossier else []


def vt_reports(world: World, person: Person) -> Answer:
    dossier = _dossier(world.registry, person)
    if dossier is None:
        return []
    record: VtRecord = dossier["_record"]
    origin = (record.origin or "").lower()
    reporter = {"politie": "POLITIE", "": "ANONIEM"}.get(origin, "PROFESSIONAL")
    summary = (
        "Children present during escalated conflict between parents."
        if record.household == "HH-HOEKSTRA"
        else "(fictional) Concerns about the safety of the children at home."
    )
    return [
        {
            "meldingnummer": f"{dossier['dossiernummer']}-M1",
            "dossiernummer": dossier["dossiernummer"],
            "ontvangen": record.case_opened.isoformat(),
            "melder": {
                "soort": reporter,
                "naam": "(fictional) J. de Vries",  # never mapped: the reporter stays hidden
                "organisatie": None if reporter == "ANONIEM" else origin,
            },
            "geweldsvormen": ["GETUIGE_PARTNERGEWELD"]
            if origin == "politie"
            else ["VERWAARLOZING"],
            "samenvatting": summary,
        }
    ]


def vt_assessments(world: World, person: Person) -> Answer:
    dossier = _dossier(world.registry, person)
    if dossier is None:
        return []
    record: VtRecord = dossier["_record"]
    structural = record.household in world.registry.mda_cases
    return [
        {
            "dossiernummer": dossier["dossiernummer"],
            "datum": (record.case_opened + timedelta(days=4)).isoformat(),
            "acuut_onveilig": False,
            "structureel_onveilig": structural,
            "vervolg": "VERVOLG_ONDERZOEK" if structural else "OVERDRACHT_LOKAAL_TEAM",
        }
    ]


def vt_conclusions(world: World, person: Person) -> Answer:
    dossier = _dossier(world.registry, person)
    if dossier is None:
        return []
    record: VtRecord = dossier["_record"]
    if record.household == "HH-HOEKSTRA":
        when, outcome = date(2026, 5, 6), "BEVESTIGD"
    elif record.case_closed is not None:
        when = record.case_closed - timedelta(days=14)
        outcome = (
            "BEVESTIGD" if record.household in world.registry.mda_cases else "ONVOLDOENDE_ZICHT"
        )
    else:
        return []
    return [
        {
            "dossiernummer": dossier["dossiernummer"],
            "datum": when.isoformat(),
            "conclusie": outcome,
            "onderbouwing": "Repeated partner violence witnessed by the children; "
            "safety agreements not kept."
            if outcome == "BEVESTIGD"
            else "(fictional) Not enough insight into the home situation.",
        }
    ]


def vt_safety_agreements(world: World, person: Person) -> Answer:
    dossier = _dossier(world.registry, person)
    if dossier is None or dossier["_household"] is None:
        return []
    record: VtRecord = dossier["_record"]
    grown = adults(world.registry, dossier["_household"])
    owner = grown[-1].ref if grown else None
    text = (
        "Father stays with his brother during weekends"
        if record.household == "HH-HOEKSTRA"
        else "(fictional) Parents call the case worker after every escalation"
    )
    return [
        {
            "dossiernummer": dossier["dossiernummer"],
            "afspraak": text,
            "eigenaar_ref": "P01" if record.household == "HH-HOEKSTRA" else owner,
            "uiterlijk": (record.case_opened + timedelta(days=47)).isoformat(),
        }
    ]


def vt_person(world: World, person: Person) -> Answer:
    """Veilig Thuis holds person data only of the members of a household it has a file on."""
    reg = world.registry
    if reg.vt_record(person) is None:
        return None
    given, prefix, surname = split_name(person.name)
    hh = reg.household_of(person)
    auth = person.authority
    return {
        "bsn": person.bsn,
        "naam": {"voornamen": given, "voorvoegsel": prefix, "geslachtsnaam": surname},
        "geboortedatum": person.birth_date.isoformat(),
        "adres": None
        if hh is None
        else {
            "straat": hh.address.street,
            "huisnummer": hh.address.number,
            "postcode": hh.address.postcode,
            "woonplaats": hh.address.city,
        },
        "huishouden": [
            {"persoon_ref": m.ref, "relatie": reg.relation(m)} for m in members(reg, hh)
        ],
        "gezag": None
        if auth is None
        else {
            "soort": auth.type,
            "gezaghebbenden": list(auth.holders),
            "ouders_zonder_gezag": list(auth.parents_without_authority),
        },
    }


def vt_chain_information(world: World, person: Person) -> Answer:
    """What Veilig Thuis lawfully received from chain partners (police incidents under
    agr-vt-politie-hg, care involvement, measures), with the original source."""
    reg = world.registry
    if reg.vt_record(person) is None:
        return []
    out: list[Rec] = []
    for incident in police_incidents(world, person) or []:
        assert isinstance(incident, dict)
        out.append({"soort": "POLITIE_INCIDENT", "bron": "politie", "gegevens": incident})
    if person.ref in ("P01", "P10"):  # scenario: adult GGZ clients known to Veilig Thuis
        since = "2024-02-01" if person.ref == "P01" else "2025-01-15"
        setting = "fact" if person.ref == "P01" else "ambulant"
        out.append(
            {
                "soort": "GGZ_BETROKKENHEID",
                "bron": "ggz",
                "gegevens": {"in_behandeling": True, "setting": setting, "sinds": since},
            }
        )
    _investigations, measures = raad_cases(reg, person)
    for m in measures:
        if m["soort"] in ("OTS", "VOOGDIJ"):
            out.append(
                {"soort": "KINDERBESCHERMING", "bron": "raad_kinderbescherming", "gegevens": m}
            )
    return out
