"""Healthcare adapter: reaches a GGZ or GP system over the HL7 FHIR R4 REST API.

Per subject it searches ``Patient?identifier=<bsn system>|<bsn>`` and then ONLY the resource
types that the allowed elements need (source-side filtering: what the decision did not allow is
never queried). Every resource is validated with ``fhir.resources.R4B`` (FHIR R4/R4B models);
a resource type of which any resource fails validation makes the items derived from it
``unavailable``. Values are mapped per ``mapping.yaml`` (validated against the catalogue at
start-up).

HTTP discipline is the one shared :class:`adapters.sdk.calls.ResilientHttp`: one pooled session,
a total time budget per :meth:`FhirAdapter.fetch` call (retries included), bounded retries with
exponential backoff and jitter for connection errors, 5xx and 429, and a circuit breaker per
endpoint. Never raises for a provider fault; logs no BSNs or values.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Unpack

import structlog
import yaml
from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from adapters._http import FatalError
from adapters.sdk.calls import (
    Call,
    CallEnd,
    CallFailed,
    GuardedAdapter,
    HttpOptions,
)
from broker.core.clock import dutch_date
from broker.core.protocols import FetchedItem, FetchItem, FetchRequest
from broker.core.types import ItemStatus, ResponseForm

__all__ = ["DEFAULT_MAPPING_PATH", "ElementMapping", "FhirAdapter", "FhirMapping", "load_mapping"]

DEFAULT_MAPPING_PATH = Path(__file__).with_name("mapping.yaml")
DEFAULT_CATALOGUE_PATH = (
    Path(__file__).resolve().parents[2] / "policies" / "catalogue" / "catalogue.yaml"
)
_log = structlog.get_logger(__name__)

_Key = tuple[str, str]  # (element, bsn)
_Json = dict[str, Any]


# ---------------------------------------------------------------------- derivations
# Each takes the validated resources of the mapped type (as FHIR JSON), the Patient and the
# mapping params; returns the catalogue-shaped value or None ("the provider holds nothing").


def _codes(concepts: Any) -> list[str]:
    return [
        str(c["code"])
        for concept in concepts or ()
        if isinstance(concept, dict)
        for c in concept.get("coding") or ()
        if c.get("code")
    ]


def _episode_involvement(
    resources: list[_Json], _patient: _Json, params: Mapping[str, Any], as_of: date
) -> Any:
    """Involvement in an episode of care that is still running on ``as_of``, the
    request's date."""
    settings = list(params.get("settings") or ())
    today = as_of.isoformat()
    matches: list[tuple[str, str | None]] = []
    for episode in resources:
        if episode.get("status") not in ("active", "onhold", "waitlist"):
            continue
        end = (episode.get("period") or {}).get("end")
        if end and str(end)[:10] < today:
            continue
        setting = next((c for c in _codes(episode.get("type")) if c in settings), None)
        if setting is not None:
            start = (episode.get("period") or {}).get("start")
            matches.append((setting, str(start)[:10] if start else None))
    if not matches:
        return {"in_treatment": False, "setting": "geen", "since": None}
    matches.sort(key=lambda m: m[1] or "9999")
    setting, since = matches[0]
    return {"in_treatment": True, "setting": setting, "since": since}


def _phone(telecom: Any) -> str | None:
    phones = [t for t in telecom or () if t.get("system") == "phone" and t.get("value")]
    phones.sort(key=lambda t: int(t.get("rank") or 1_000_000))
    return str(phones[0]["value"]) if phones else None


def _care_team_contact(
    resources: list[_Json], _patient: _Json, _params: Mapping[str, Any], _as_of: date
) -> Any:
    for team in resources:
        if team.get("status") not in (None, "active", "proposed", "suspended"):
            continue
        name = team.get("name")
        if not name:
            members = [
                (p.get("member") or {}).get("display") for p in team.get("participant") or ()
            ]
            name = next((m for m in members if m), None)
        phone = _phone(team.get("telecom"))
        if phone is None:
            phone = next(
                (
                    p
                    for part in team.get("participant") or ()
                    if (p := _phone((part.get("member") or {}).get("telecom")))
                ),
                None,
            )
        if name or phone:
            return {"team": name, "phone_24_7": phone}
    return None


def _general_practitioner(
    _resources: list[_Json], patient: _Json, _params: Mapping[str, Any], _as_of: date
) -> Any:
    contained = {str(r.get("id")): r for r in patient.get("contained") or ()}
    for gp in patient.get("generalPractitioner") or ():
        ref = str(gp.get("reference") or "")
        org = contained.get(ref[1:]) if ref.startswith("#") else None
        practice = (org or {}).get("name") or gp.get("display")
        if practice:
            return {"practice": practice, "phone": _phone((org or {}).get("telecom"))}
    return None


_CLINICAL_STATUS = {
    "active": "actief",
    "recurrence": "actief",
    "relapse": "actief",
    "remission": "in_remissie",
    "inactive": "opgelost",
    "resolved": "opgelost",
}


def _condition_code(
    resources: list[_Json], _patient: _Json, params: Mapping[str, Any], _as_of: date
) -> Any:
    systems: Mapping[str, str] = params.get("code_systems") or {}
    best: tuple[int, _Json] | None = None
    for condition in resources:
        if _codes([condition.get("verificationStatus")]) == ["entered-in-error"]:
            continue
        status = _CLINICAL_STATUS.get(next(iter(_codes([condition.get("clinicalStatus")])), ""))
        coding = next(
            (
                c
                for c in (condition.get("code") or {}).get("coding") or ()
                if c.get("system") in systems
            ),
            None,
        )
        if coding is None or status is None:
            continue
        value = {
            "code_system": systems[str(coding["system"])],
            "code": str(coding.get("code")),
            "display": str(coding.get("display") or (condition.get("code") or {}).get("text")),
            "status": status,
        }
        rank = ("actief", "in_remissie", "opgelost").index(status)
        if best is None or rank < best[0]:
            best = (rank, value)
    return best[1] if best else None


def _medication_list(
    resources: list[_Json], _patient: _Json, _params: Mapping[str, Any], _as_of: date
) -> Any:
    out: list[dict[str, Any]] = []
    for statement in resources:
        if statement.get("status") not in ("active", "intended", "on-hold"):
            continue
        concept = statement.get("medicationCodeableConcept") or {}
        name = concept.get("text") or next(
            (c.get("display") for c in concept.get("coding") or () if c.get("display")), None
        )
        if not name:
            continue
        period = statement.get("effectivePeriod") or {}
        since = period.get("start") or statement.get("effectiveDateTime")
        out.append({"name": name, "since": str(since)[:10] if since else None})
    return out or None


# (resources, patient, params, the request's date) -> value or None.
_Derivation = Callable[[list[_Json], _Json, Mapping[str, Any], date], Any]
_DERIVATIONS: dict[str, _Derivation] = {
    "episode_involvement": _episode_involvement,
    "care_team_contact": _care_team_contact,
    "general_practitioner": _general_practitioner,
    "condition_code": _condition_code,
    "medication_list": _medication_list,
}


# ---------------------------------------------------------------------- mapping


@dataclass(frozen=True, slots=True)
class ElementMapping:
    element: str
    resource: str
    derive: str
    boolean: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)

    def value(self, resources: list[_Json], patient: _Json, as_of: date) -> Any:
        return _DERIVATIONS[self.derive](resources, patient, self.params, as_of)


@dataclass(frozen=True, slots=True)
class FhirMapping:
    identifier_system: str
    elements: dict[str, ElementMapping]


def _catalogue_ids(path: Path) -> set[str]:
    doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return {str(e["id"]) for e in doc.get("elements") or ()}


def load_mapping(
    path: Path = DEFAULT_MAPPING_PATH, catalogue_path: Path = DEFAULT_CATALOGUE_PATH
) -> FhirMapping:
    """Read and validate ``mapping.yaml``; raises ValueError on any unknown id or name."""
    doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if str(doc.get("fhir_version")) != "R4":
        raise ValueError("mapping.yaml: fhir_version must be R4")
    system = str(doc.get("patient_identifier_system") or "")
    if not system:
        raise ValueError("mapping.yaml: patient_identifier_system is required")
    known = _catalogue_ids(catalogue_path)
    elements: dict[str, ElementMapping] = {}
    for key, spec in (doc.get("elements") or {}).items():
        element = str(key)
        if element not in known:
            raise ValueError(f"mapping.yaml: unknown catalogue element {element!r}")
        if not isinstance(spec, dict):
            raise ValueError(f"mapping.yaml: {element}: a mapping is required")
        resource = str(spec.get("resource") or "")
        try:
            get_fhir_model_class(resource)
        except (KeyError, ValueError, AttributeError) as exc:
            raise ValueError(f"mapping.yaml: {element}: unknown resource {resource!r}") from exc
        derive = str(spec.get("derive") or "")
        if derive not in _DERIVATIONS:
            raise ValueError(f"mapping.yaml: {element}: unknown derivation {derive!r}")
        unknown = set(spec) - {"resource", "derive", "boolean", "params"}
        if unknown:
            raise ValueError(f"mapping.yaml: {element}: unknown keys {sorted(unknown)}")
        boolean = spec.get("boolean")
        elements[element] = ElementMapping(
            element=element,
            resource=resource,
            derive=derive,
            boolean=str(boolean) if boolean else None,
            params=dict(spec.get("params") or {}),
        )
    return FhirMapping(identifier_system=system, elements=elements)


# ---------------------------------------------------------------------- adapter


class _SearchFailed(Exception):
    """A search could not be completed (after retries); its items become unavailable."""


@dataclass(slots=True)
class _Call:
    call: Call
    request: FetchRequest
    invalid: int = 0

    @property
    def endpoint(self) -> str:
        return self.call.endpoint


@dataclass(frozen=True, slots=True)
class _Searched:
    resources: list[_Json]
    valid: bool


class FhirAdapter(GuardedAdapter):
    """Implements :class:`broker.core.protocols.PartnerAdapter` over a FHIR R4 REST API.

    ``timeout`` is the total budget of one :meth:`fetch` call in seconds (all searches and
    retries included); ``retries`` the extra attempts per search after a connection error,
    a 5xx or a 429. Breaker: as :class:`adapters.partner_api.PartnerApiAdapter`.
    """

    kind = "fhir"

    def __init__(
        self,
        *,
        mapping_path: Path = DEFAULT_MAPPING_PATH,
        catalogue_path: Path = DEFAULT_CATALOGUE_PATH,
        **options: Unpack[HttpOptions],
    ) -> None:
        super().__init__(kind=self.kind, log_prefix="fhir", **options)
        self.mapping = load_mapping(mapping_path, catalogue_path)

    # ------------------------------------------------------------------ fetch

    async def _fetch(
        self, endpoint: str, request: FetchRequest, wanted: list[FetchItem]
    ) -> list[FetchedItem]:
        results: dict[_Key, FetchedItem] = {}
        mapped: list[FetchItem] = []
        for item in wanted:
            if item.element in self.mapping.elements:
                mapped.append(item)
            else:
                results[(item.element, item.bsn)] = _item(item, ItemStatus.UNAVAILABLE)
        if len(mapped) < len(wanted):
            _log.warning(
                "fhir_element_not_mapped",
                endpoint=endpoint,
                request_id=request.request_id,
                elements=sorted({i.element for i in wanted} - {i.element for i in mapped}),
            )
        if mapped:
            await self._fetch_mapped(endpoint, request, mapped, results)
        return [results[(i.element, i.bsn)] for i in wanted]

    async def _fetch_mapped(
        self,
        endpoint: str,
        request: FetchRequest,
        items: list[FetchItem],
        results: dict[_Key, FetchedItem],
    ) -> None:
        by_bsn: dict[str, list[FetchItem]] = {}
        for item in items:
            by_bsn.setdefault(item.bsn, []).append(item)
        calls: list[_Call] = []

        async def work(call: Call) -> None:
            state = _Call(call, request)
            calls.append(state)
            await asyncio.gather(
                *(self._subject(state, bsn, subject, results) for bsn, subject in by_bsn.items())
            )

        done = await self._http.guarded(endpoint, request.request_id, work)
        _fill(
            items,
            results,
            ItemStatus.TIMEOUT if done.end is CallEnd.TIMEOUT else ItemStatus.UNAVAILABLE,
        )
        if calls and calls[0].invalid:
            _log.warning(
                "fhir_invalid_resources",
                endpoint=endpoint,
                request_id=request.request_id,
                searches=calls[0].invalid,
            )

    async def _subject(
        self, call: _Call, bsn: str, items: list[FetchItem], results: dict[_Key, FetchedItem]
    ) -> None:
        boolean_only = call.request.response_form is ResponseForm.BOOLEAN_ONLY
        system = self.mapping.identifier_system
        try:
            found = await self._search(call, "Patient", {"identifier": f"{system}|{bsn}"})
        except _SearchFailed:
            _fill(items, results, ItemStatus.UNAVAILABLE)
            return
        if not found.valid:
            _fill(items, results, ItemStatus.UNAVAILABLE)
            return
        patients = [p for p in found.resources if _has_identifier(p, system, bsn)]
        if not patients:
            for item in items:
                results[(item.element, item.bsn)] = (
                    _item(item, ItemStatus.RELEASED, False)
                    if boolean_only
                    else _item(item, ItemStatus.NOT_FOUND)
                )
            return
        if len(patients) > 1:
            _log.warning("fhir_patient_ambiguous", endpoint=call.endpoint, count=len(patients))
            _fill(items, results, ItemStatus.UNAVAILABLE)
            return
        patient = patients[0]
        patient_id = str(patient.get("id") or "")
        # Source-side filtering: only the resource types the allowed elements need.
        needed = sorted({self.mapping.elements[i.element].resource for i in items} - {"Patient"})
        searched: dict[str, _Searched | None] = {"Patient": found}

        async def one(resource_type: str) -> None:
            try:
                searched[resource_type] = await self._search(
                    call, resource_type, {"patient": patient_id}
                )
            except _SearchFailed:
                searched[resource_type] = None

        await asyncio.gather(*(one(t) for t in needed))
        for item in items:
            rule = self.mapping.elements[item.element]
            results[(item.element, item.bsn)] = self._answer(
                call, item, rule, searched.get(rule.resource), patient, boolean_only=boolean_only
            )

    def _answer(
        self,
        call: _Call,
        item: FetchItem,
        rule: ElementMapping,
        got: _Searched | None,
        patient: _Json,
        *,
        boolean_only: bool,
    ) -> FetchedItem:
        if got is None or not got.valid:
            return _item(item, ItemStatus.UNAVAILABLE)
        resources = [patient] if rule.resource == "Patient" else got.resources
        try:
            as_of = call.request.request_date or dutch_date(datetime.now(UTC))
            value = rule.value(resources, patient, as_of)
        except Exception as exc:  # noqa: BLE001 - odd but valid data: this item only
            _log.error(
                "fhir_mapping_error",
                endpoint=call.endpoint,
                element=item.element,
                error_type=type(exc).__name__,
            )
            return _item(item, ItemStatus.UNAVAILABLE)
        if boolean_only:
            if rule.boolean and isinstance(value, dict):
                return _item(item, ItemStatus.RELEASED, value.get(rule.boolean) is True)
            return _item(item, ItemStatus.RELEASED, value is not None)
        if value is None:
            return _item(item, ItemStatus.NOT_FOUND)
        return _item(item, ItemStatus.RELEASED, value)

    async def _search(self, call: _Call, resource_type: str, params: dict[str, str]) -> _Searched:
        """One search with bounded retries; raises _SearchFailed (the call is marked failed)."""
        try:
            bundle = await self._http.request(
                call.call,
                "GET",
                f"{call.endpoint}/{resource_type}",
                parse=_json_body,
                label=resource_type,
                params=params,
                headers={"Accept": "application/fhir+json"},
            )
        except CallFailed as exc:
            raise _SearchFailed from exc
        searched = _validate_bundle(bundle, resource_type)
        if not searched.valid:
            call.invalid += 1
        return searched


# ---------------------------------------------------------------------- helpers


def _json_body(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise FatalError("malformed_body") from exc


def _validate_bundle(bundle: Any, resource_type: str) -> _Searched:
    """The matching resources of a searchset Bundle, each validated with fhir.resources.

    A body that is not a Bundle raises FatalError; a resource failing validation makes the
    whole search ``valid=False`` (its items become unavailable)."""
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise FatalError("not_a_bundle")
    entries = bundle.get("entry") or []
    if not isinstance(entries, list):
        raise FatalError("not_a_bundle")
    model = get_fhir_model_class(resource_type)
    out: list[_Json] = []
    for entry in entries:
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict):
            return _Searched([], valid=False)
        mode = (entry.get("search") or {}).get("mode", "match")
        if resource.get("resourceType") != resource_type or mode != "match":
            continue  # included resources or an OperationOutcome: not asked for
        try:
            validated = model.model_validate(resource)
        except (ValidationError, ValueError, TypeError):
            return _Searched([], valid=False)
        out.append(json.loads(validated.model_dump_json()))
    return _Searched(out, valid=True)


def _has_identifier(patient: _Json, system: str, bsn: str) -> bool:
    return any(
        i.get("system") == system and i.get("value") == bsn for i in patient.get("identifier") or ()
    )


def _item(item: FetchItem, status: ItemStatus, value: Any = None) -> FetchedItem:
    return FetchedItem(element=item.element, bsn=item.bsn, status=status, value=value)


def _fill(items: list[FetchItem], results: dict[_Key, FetchedItem], status: ItemStatus) -> None:
    """Give every item without a result yet ``status``."""
    for item in items:
        results.setdefault((item.element, item.bsn), _item(item, status))
