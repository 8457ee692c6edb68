"""A simulated population register (BRP) in the Haal Centraal "BRP Personen Bevragen" shape.

``POST /haalcentraal/api/brp/personen`` with ``{"type": "RaadpleegMetBurgerservicenummer",
"burgerservicenummer": [...max 20], "fields": [...]}``. Persons the register does not know are
left out of ``personen``. Only the requested ``fields`` (dotted paths) are returned.

``gezag`` follows the registry's ``authority``: a minor's record holds one relation with the
holders as ``ouders``; a holder's record lists the relations it holds over its minors. Parents
without authority hold nothing. ``verblijfplaats.adresseerbaarObjectIdentificatie`` is a stable
16-digit id per household (persons without a household have no ``verblijfplaats``).
"""

from __future__ import annotations

import re
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from adapters.simulators.faults import FAULTS_KEY, FaultConfig, FaultInjector, add_admin_routes
from adapters.simulators.registry import Person, Registry, split_name

__all__ = ["HC_GEZAG_TYPES", "create_brp_app", "person_document"]

HC_GEZAG_TYPES = {
    "gezamenlijk_gezag_ouders": "GezamenlijkOuderlijkGezag",
    "eenhoofdig_gezag_moeder": "EenhoofdigOuderlijkGezag",
    "eenhoofdig_gezag_vader": "EenhoofdigOuderlijkGezag",
    "voogdij_gi": "Voogdij",
    "voogdij_persoon": "Voogdij",
    "tijdelijk_geen_gezag": "TijdelijkGeenGezag",
}
_GENDER = {"M": "man", "V": "vrouw", "O": "onbekend"}
_MONTHS = (
    "januari",
    "februari",
    "maart",
    "april",
    "mei",
    "juni",
    "juli",
    "augustus",
    "september",
    "oktober",
    "november",
    "december",
)
_HOUSE_NUMBER = re.compile(r"^(\d+)([A-Za-z]?)(?:-?(\w+))?$")


class _Query(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["RaadpleegMetBurgerservicenummer"]
    burgerservicenummer: list[str] = Field(min_length=1, max_length=20)
    fields: list[str] = Field(min_length=1, max_length=50)
    gemeente_van_inschrijving: str | None = Field(default=None, alias="gemeenteVanInschrijving")


def _gezag_entry(reg: Registry, minor: Person) -> dict[str, Any]:
    auth = minor.authority
    assert auth is not None
    holders = [reg.persons[h] for h in auth.holders if h in reg.persons]
    hc_type = HC_GEZAG_TYPES.get(auth.type, "GezagNietTeBepalen")
    entry: dict[str, Any] = {"type": hc_type}
    if hc_type == "Voogdij":
        entry["derden"] = [{"burgerservicenummer": h.bsn} for h in holders]
    elif hc_type == "TijdelijkGeenGezag":
        entry["toelichting"] = "Tijdelijk geen gezag (gesimuleerd)"
    else:
        entry["ouders"] = [{"burgerservicenummer": h.bsn} for h in holders]
    entry["minderjarige"] = {"burgerservicenummer": minor.bsn}
    return entry


def person_document(reg: Registry, person: Person) -> dict[str, Any]:
    """The full Haal Centraal person document (before field selection)."""
    given, prefix, surname = split_name(person.name)
    naam: dict[str, Any] = {"voornamen": given, "geslachtsnaam": surname}
    if prefix:
        naam["voorvoegsel"] = prefix
    born = person.birth_date
    doc: dict[str, Any] = {
        "burgerservicenummer": person.bsn,
        "naam": naam,
        "geslacht": {"code": person.gender, "omschrijving": _GENDER.get(person.gender, "onbekend")},
        "geboorte": {
            "datum": {
                "type": "Datum",
                "datum": born.isoformat(),
                "langFormaat": f"{born.day} {_MONTHS[born.month - 1]} {born.year}",
            }
        },
    }
    household = reg.household_of(person)
    if household is not None:
        addr = household.address
        adres: dict[str, Any] = {
            "officieleStraatnaam": addr.street,
            "korteStraatnaam": addr.street,
            "postcode": addr.postcode.replace(" ", ""),
            "woonplaats": addr.city,
        }
        m = _HOUSE_NUMBER.match(addr.number)
        if m:
            adres["huisnummer"] = int(m[1])
            if m[2]:
                adres["huisletter"] = m[2]
            if m[3]:
                adres["huisnummertoevoeging"] = m[3]
        doc["verblijfplaats"] = {
            "type": "Adres",
            "adresseerbaarObjectIdentificatie": household.address_object_id,
            "verblijfadres": adres,
        }
    gezag: list[dict[str, Any]] = []
    if person.authority is not None:
        gezag.append(_gezag_entry(reg, person))
    for child in reg.children_of(person):
        if child.authority is not None and person.ref in child.authority.holders:
            gezag.append(_gezag_entry(reg, child))
    doc["gezag"] = gezag
    return doc


def _select(doc: dict[str, Any], fields: list[str]) -> dict[str, Any]:
    """Keep only the requested dotted field paths (Haal Centraal ``fields`` semantics)."""
    out: dict[str, Any] = {}
    for path in fields:
        parts = path.split(".")
        src: Any = doc
        for part in parts:
            src = src.get(part) if isinstance(src, dict) else None
            if src is None:
                break
        if src is None:
            continue
        dst = out
        for part in parts[:-1]:
            dst = dst.setdefault(part, {})
        dst[parts[-1]] = src
    return out


def _problem(status: int, title: str, detail: str | None = None) -> web.Response:
    body: dict[str, Any] = {
        "type": "https://datatracker.ietf.org/doc/html/rfc7231#section-6.5.1",
        "title": title,
        "status": status,
    }
    if detail:
        body["detail"] = detail
    return web.json_response(body, status=status, content_type="application/problem+json")


def create_brp_app(
    registry: Registry,
    *,
    faults: FaultConfig | None = None,
    admin: bool = True,
    seed: int = 0,
) -> web.Application:
    injector = FaultInjector.create(faults, seed=seed)

    async def personen(request: web.Request) -> web.StreamResponse:
        failure = await injector.before(request)
        if failure is not None:
            return failure
        try:
            query = _Query.model_validate_json(await request.read())
        except ValidationError:
            return _problem(400, "Een of meerdere parameters zijn niet correct.")
        if any(not re.fullmatch(r"[0-9]{9}", b) for b in query.burgerservicenummer):
            return _problem(
                400,
                "Een of meerdere parameters zijn niet correct.",
                "burgerservicenummer moet 9 cijfers zijn",
            )
        cfg = injector.config
        personen: list[dict[str, Any]] = []
        for bsn in dict.fromkeys(query.burgerservicenummer):
            person = registry.by_bsn(bsn)
            if person is not None:
                personen.append(_select(person_document(registry, person), query.fields))
        if cfg.extra_item:
            requested = set(query.burgerservicenummer)
            extra = next((p for p in registry.iter_persons() if p.bsn not in requested), None)
            if extra is not None:
                personen.append(_select(person_document(registry, extra), query.fields))
        if cfg.omit_item and personen:
            personen.pop()
        return web.json_response({"type": query.type, "personen": personen})

    app = web.Application(client_max_size=1024 * 1024)
    app[FAULTS_KEY] = injector
    app.router.add_post("/haalcentraal/api/brp/personen", personen)
    if admin:
        add_admin_routes(app, injector)
    return app
