"""A simulated HL7 FHIR R4 server (read-only search API) for the GGZ and the GP (huisarts).

Resources follow FHIR R4 and validate with ``fhir.resources.R4B`` (R4B is R4 plus a few
additions; every resource used here is identical in R4). Everything is fictional and
deterministic, derived from the registry (data/lindeburg.yaml):

- GGZ: P01 in FACT-team treatment since 2024-02-01; P03 in youth GGZ since 2026-01-01;
  P10 and P13 adult ambulant GGZ clients. Each has an EpisodeOfCare, a CareTeam with a 24/7
  contact, a Condition (DSM-5, fictional) and Encounters; P01 also a MedicationStatement.
- huisarts: the Hoekstra household (P01..P05) is registered with one practice
  (``Patient.generalPractitioner`` -> contained Organization with name and phone); P01 has an
  ICPC Condition and a MedicationStatement.

Search API (all answers are ``Bundle`` ``searchset``):

- ``GET /Patient?identifier=http://fhir.nl/fhir/NamingSystem/bsn|<bsn>``
- ``GET /EpisodeOfCare?patient=<id>``, ``/CareTeam?patient=<id>``, ``/Condition?patient=<id>``,
  ``/Encounter?patient=<id>``, ``/MedicationStatement?patient=<id>``

Faults: the shared /_sim admin endpoints (``faults.py``) apply to every search; in addition
``invalid_resource`` serves resources of one type (or ``"*"``) that fail validation. The
resource types requested are recorded: ``GET|DELETE /_sim/fhir-requests``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from aiohttp import web

from adapters.simulators.faults import (
    FAULTS_KEY,
    FaultConfig,
    FaultInjector,
    _loopback_only,
    add_admin_routes,
)
from adapters.simulators.registry import Person, split_name
from adapters.simulators.values import World

__all__ = ["BSN_SYSTEM", "FHIR_PARTIES", "FhirStore", "build_store", "create_fhir_app"]

BSN_SYSTEM = "http://fhir.nl/fhir/NamingSystem/bsn"
FHIR_PARTIES: tuple[str, ...] = ("ggz", "huisarts")
SEARCH_TYPES: tuple[str, ...] = (
    "EpisodeOfCare",
    "CareTeam",
    "Condition",
    "Encounter",
    "MedicationStatement",
)
FHIR_JSON = "application/fhir+json"
_SETTING_SYSTEM = "urn:oid:2.16.840.1.113883.2.4.3.11.999.1"  # fictional code system
_DSM = "http://hl7.org/fhir/sid/dsm5"
_ICPC = "http://hl7.org/fhir/sid/icpc-1-nl"
_CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"


@dataclass(frozen=True, slots=True)
class _GgzCare:
    setting: str  # fact | jeugd_ggz | ambulant | klinisch
    since: date
    team: str
    phone: str
    dsm_code: str
    dsm_display: str
    medication: tuple[tuple[str, date], ...] = ()


# Fictional care facts per registry person (by ref).
_GGZ: dict[str, _GgzCare] = {
    "P01": _GgzCare(
        "fact",
        date(2024, 2, 1),
        "FACT-team Lindeburg Noord (fictional)",
        "+31 00 0000001",
        "F-SIM-01",
        "Psychotic disorder (fictional)",
        (("(fictional) antipsychotic", date(2025, 5, 1)),),
    ),
    "P03": _GgzCare(
        "jeugd_ggz",
        date(2026, 1, 1),
        "Jeugd-GGZ team Lindeburg (fictional)",
        "+31 00 0000002",
        "F-SIM-02",
        "Anxiety disorder (fictional)",
    ),
    "P10": _GgzCare(
        "ambulant",
        date(2025, 3, 1),
        "GGZ Lindeburg ambulant team Zuid (fictional)",
        "+31 00 0000003",
        "F-SIM-03",
        "Depressive disorder (fictional)",
    ),
    "P13": _GgzCare(
        "ambulant",
        date(2025, 9, 15),
        "GGZ Lindeburg ambulant team Oost (fictional)",
        "+31 00 0000004",
        "F-SIM-04",
        "Post-traumatic stress disorder (fictional)",
    ),
}
_GP_HOUSEHOLDS = ("HH-HOEKSTRA",)
_GP_PRACTICE = ("Huisartsenpraktijk De Linde (fictional)", "+31 00 0000010")


@dataclass(slots=True)
class FhirStore:
    """The resources one party's FHIR server holds: patients by BSN, others by patient id."""

    party: str
    patients: dict[str, dict[str, Any]] = field(default_factory=dict)  # bsn -> Patient
    by_patient: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=dict)

    def add(self, patient_id: str, resource: dict[str, Any]) -> None:
        self.by_patient.setdefault((str(resource["resourceType"]), patient_id), []).append(resource)


def _patient_id(party: str, person: Person) -> str:
    return hashlib.sha256(f"{party}:{person.ref}".encode()).hexdigest()[:16]


def _patient(party: str, person: Person, *, gp: bool) -> dict[str, Any]:
    given, prefix, surname = split_name(person.name)
    name: dict[str, Any] = {"family": f"{prefix} {surname}" if prefix else surname}
    name["given"] = given.split()
    resource: dict[str, Any] = {
        "resourceType": "Patient",
        "id": _patient_id(party, person),
        "identifier": [{"system": BSN_SYSTEM, "value": person.bsn}],
        "name": [name],
        "gender": {"M": "male", "V": "female"}.get(person.gender, "other"),
        "birthDate": person.birth_date.isoformat(),
    }
    if gp:
        practice, phone = _GP_PRACTICE
        resource["contained"] = [
            {
                "resourceType": "Organization",
                "id": "gp",
                "name": practice,
                "telecom": [{"system": "phone", "value": phone, "use": "work"}],
            }
        ]
        resource["generalPractitioner"] = [{"reference": "#gp", "display": practice}]
    return resource


def _ref(patient_id: str) -> dict[str, str]:
    return {"reference": f"Patient/{patient_id}"}


def _ggz_resources(pid: str, care: _GgzCare) -> list[dict[str, Any]]:
    since = care.since.isoformat()
    out: list[dict[str, Any]] = [
        {
            "resourceType": "EpisodeOfCare",
            "id": f"eoc-{pid}",
            "status": "active",
            "type": [{"coding": [{"system": _SETTING_SYSTEM, "code": care.setting}]}],
            "patient": _ref(pid),
            "period": {"start": since},
        },
        {
            "resourceType": "CareTeam",
            "id": f"ct-{pid}",
            "status": "active",
            "name": care.team,
            "subject": _ref(pid),
            "telecom": [{"system": "phone", "value": care.phone, "use": "work", "rank": 1}],
            "participant": [
                {
                    "role": [{"text": "regiebehandelaar"}],
                    "member": {"display": "Regiebehandelaar (fictional)"},
                }
            ],
        },
        {
            "resourceType": "Condition",
            "id": f"cond-{pid}",
            "clinicalStatus": {"coding": [{"system": _CLINICAL, "code": "active"}]},
            "code": {
                "coding": [{"system": _DSM, "code": care.dsm_code, "display": care.dsm_display}]
            },
            "subject": _ref(pid),
            "onsetDateTime": since,
        },
        {
            "resourceType": "Encounter",
            "id": f"enc-{pid}-1",
            "status": "finished",
            "class": {
                "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                "code": "AMB",
            },
            "subject": _ref(pid),
            "period": {"start": since, "end": since},
        },
    ]
    for i, (name, start) in enumerate(care.medication):
        out.append(_medication(pid, i, name, start))
    return out


def _medication(pid: str, i: int, name: str, start: date) -> dict[str, Any]:
    return {
        "resourceType": "MedicationStatement",
        "id": f"med-{pid}-{i}",
        "status": "active",
        "medicationCodeableConcept": {"text": name},
        "subject": _ref(pid),
        "effectivePeriod": {"start": start.isoformat()},
    }


def build_store(world: World, party: str) -> FhirStore:
    """The deterministic content of ``party``'s FHIR server."""
    if party not in FHIR_PARTIES:
        raise ValueError(f"no FHIR simulator for {party!r}")
    reg = world.registry
    store = FhirStore(party)
    if party == "ggz":
        for ref, care in _GGZ.items():
            person = reg.persons.get(ref)
            if person is None:
                continue
            patient = _patient(party, person, gp=False)
            store.patients[person.bsn] = patient
            for resource in _ggz_resources(patient["id"], care):
                store.add(patient["id"], resource)
        return store
    for hid in _GP_HOUSEHOLDS:
        household = reg.households.get(hid)
        for ref in household.members if household else ():
            person = reg.persons.get(ref)
            if person is None:
                continue
            patient = _patient(party, person, gp=True)
            store.patients[person.bsn] = patient
            pid = patient["id"]
            store.add(
                pid,
                {
                    "resourceType": "EpisodeOfCare",
                    "id": f"eoc-{pid}",
                    "status": "active",
                    "type": [{"coding": [{"system": _SETTING_SYSTEM, "code": "huisartsenzorg"}]}],
                    "patient": _ref(pid),
                    "period": {"start": "2015-01-01"},
                },
            )
            if ref == "P01":
                store.add(
                    pid,
                    {
                        "resourceType": "Condition",
                        "id": f"cond-{pid}",
                        "clinicalStatus": {"coding": [{"system": _CLINICAL, "code": "active"}]},
                        "code": {
                            "coding": [{"system": _ICPC, "code": "P72", "display": "Schizofrenie"}]
                        },
                        "subject": _ref(pid),
                    },
                )
                store.add(pid, _medication(pid, 0, "(fictional) antipsychotic", date(2025, 5, 1)))
    return store


def _bundle(base: str, resources: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(resources),
        "entry": [
            {
                "fullUrl": f"{base}/{r['resourceType']}/{r['id']}",
                "resource": r,
                "search": {"mode": "match"},
            }
            for r in resources
        ],
    }


def _corrupt(resources: list[dict[str, Any]], cfg: FaultConfig) -> list[dict[str, Any]]:
    target = cfg.invalid_resource
    if not target:
        return resources
    return [
        {**r, "unknownElement": True} if target in ("*", r["resourceType"]) else r
        for r in resources
    ]


def _outcome(status: int, text: str) -> web.Response:
    return web.json_response(
        {
            "resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": "invalid", "diagnostics": text}],
        },
        status=status,
        content_type=FHIR_JSON,
    )


FHIR_LOG_KEY = web.AppKey("fhir_requests", list)


def create_fhir_app(
    party: str,
    world: World,
    *,
    faults: FaultConfig | None = None,
    admin: bool = True,
    seed: int = 0,
) -> web.Application:
    """An aiohttp app serving ``party``'s FHIR R4 search API."""
    store = build_store(world, party)
    injector = FaultInjector.create(faults, seed=seed)
    requested: list[str] = []

    def base_url(request: web.Request) -> str:
        return f"{request.scheme}://{request.host}"

    async def search_patient(request: web.Request) -> web.StreamResponse:
        requested.append("Patient")
        failure = await injector.before(request)
        if failure is not None:
            return failure
        system, sep, value = request.query.get("identifier", "").partition("|")
        if not sep or system != BSN_SYSTEM or not value:
            return _outcome(400, "search by identifier=<bsn system>|<bsn> only")
        found = store.patients.get(value)
        resources = _corrupt([found] if found else [], injector.config)
        return web.json_response(_bundle(base_url(request), resources), content_type=FHIR_JSON)

    def search(resource_type: str) -> Any:
        async def handler(request: web.Request) -> web.StreamResponse:
            requested.append(resource_type)
            failure = await injector.before(request)
            if failure is not None:
                return failure
            patient = request.query.get("patient", "").removeprefix("Patient/")
            if not patient:
                return _outcome(400, "the patient parameter is required")
            resources = _corrupt(
                list(store.by_patient.get((resource_type, patient), ())), injector.config
            )
            return web.json_response(_bundle(base_url(request), resources), content_type=FHIR_JSON)

        return handler

    async def get_log(request: web.Request) -> web.Response:
        _loopback_only(request)
        return web.json_response({"requested": list(requested)})

    async def clear_log(request: web.Request) -> web.Response:
        _loopback_only(request)
        requested.clear()
        return web.json_response({"requested": []})

    app = web.Application(client_max_size=1024 * 1024)
    app[FAULTS_KEY] = injector
    app[FHIR_LOG_KEY] = requested
    app.router.add_get("/Patient", search_patient)
    for resource_type in SEARCH_TYPES:
        app.router.add_get(f"/{resource_type}", search(resource_type))
    if admin:
        add_admin_routes(app, injector)
        app.router.add_get("/_sim/fhir-requests", get_log)
        app.router.add_delete("/_sim/fhir-requests", clear_log)
    return app
