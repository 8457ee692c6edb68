"""The acceptance scenarios of ``policies/scenarios/scenarios.md`` as policy inputs.

Every fenced ```yaml block of the file that starts with ``kind:`` is
machine-readable: one ``kind: registry`` block (fictional persons, households,
authority) and one ``kind: scenario`` block per scenario. A scenario holds
requests; each request names agreement, purpose, parties, time, context and
items, and every (item, subject) pair carries the reason code it must get.

This is the product copy of the loader that the test suite started with
(tests/scenarios/scenario_data.py); ``broker policy test`` runs each scenario
item as a test case (broker.policy.testing).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import yaml

from broker.core import clock
from broker.core.types import (
    AcuteDeclarationFact,
    ConsentFact,
    PolicyInput,
    PriorAnswerFact,
    RequestedItem,
    SubjectFacts,
    SubjectKind,
)

SCENARIOS_FILE = Path("scenarios") / "scenarios.md"  # relative to the policy folder
AMSTERDAM = ZoneInfo("Europe/Amsterdam")

_BLOCK = re.compile(r"^```yaml[ \t]*\n(kind:.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)


def to_datetime(value: Any) -> datetime:
    """An ISO 8601 timestamp with offset (string or YAML datetime) as an aware datetime."""
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    if moment.tzinfo is None:
        raise ValueError(f"timestamp without offset: {value!r}")
    return moment


def to_ns(value: Any) -> int:
    """Integer nanoseconds since the epoch (exact, no float rounding)."""
    return clock.to_ns(to_datetime(value))


def to_date(value: Any) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value))


def local_date(value: Any) -> date:
    """The calendar date of a timestamp in Europe/Amsterdam."""
    return clock.dutch_date(to_datetime(value))


age_on = clock.age_on


def _plain(value: Any) -> Any:
    """YAML values as JSON values (dates and datetimes become ISO strings)."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


@dataclass(frozen=True, slots=True)
class Registry:
    persons: dict[str, dict[str, Any]]
    households: dict[str, dict[str, Any]]

    def subject(self, key: str, on: date) -> SubjectFacts:
        if key in self.households:
            return SubjectFacts(key=key, kind=SubjectKind.HOUSEHOLD)
        person = self.persons[key]
        born = to_date(person["born"])
        authority = person.get("authority") or {}
        return SubjectFacts(
            key=key,
            kind=SubjectKind.PERSON,
            birth_date=born,
            age=age_on(born, on),
            authority_holders=tuple(authority.get("holders", ())),
        )


@dataclass(frozen=True, slots=True)
class ScenarioItem:
    """One (request, element, subject) expectation."""

    scenario_id: str
    request_id: str
    element: str
    subject: str
    expect: str
    consent_considered: str | None
    response: Any

    @property
    def case_id(self) -> str:
        return f"{self.request_id}-{self.element}-{self.subject}"


@dataclass(frozen=True, slots=True)
class ScenarioRequest:
    scenario_id: str
    raw: dict[str, Any]
    consents: tuple[dict[str, Any], ...]
    declarations: dict[str, dict[str, Any]]
    # The scenario's requests before this one: the answers the broker gave them
    # are its own records of boolean-only answers (input.prior_answers).
    earlier: tuple[dict[str, Any], ...] = ()

    @property
    def id(self) -> str:
        return str(self.raw["id"])

    @property
    def agreement(self) -> str:
        return str(self.raw["agreement"])

    @property
    def acute_declaration_id(self) -> str | None:
        value = self.raw.get("acute_declaration")
        return str(value) if value is not None else None

    def items(self) -> list[ScenarioItem]:
        out: list[ScenarioItem] = []
        for entry in self.raw["items"]:
            out.extend(
                ScenarioItem(
                    scenario_id=self.scenario_id,
                    request_id=self.id,
                    element=str(entry["element"]),
                    subject=str(subject),
                    expect=str(entry["expect"]),
                    consent_considered=entry.get("consent_considered"),
                    response=entry.get("response"),
                )
                for subject in entry["subjects"]
            )
        return out

    def policy_input(self, registry: Registry) -> PolicyInput:
        at = self.raw["at"]
        request_date = local_date(at)
        items = tuple(RequestedItem(element=i.element, subject=i.subject) for i in self.items())
        subject_keys = list(dict.fromkeys(i.subject for i in items))
        declaration = None
        if self.acute_declaration_id is not None:
            declaration = acute_declaration_fact(self.declarations[self.acute_declaration_id])
        return PolicyInput(
            agreement=self.agreement,
            purpose=str(self.raw["purpose"]),
            provider=str(self.raw["provider"]),
            recipient=str(self.raw["recipient"]),
            request_time_ns=to_ns(at),
            request_date=request_date,
            context=_plain(dict(self.raw.get("context") or {})),
            subjects=tuple(registry.subject(k, request_date) for k in subject_keys),
            items=items,
            consents=tuple(consent_fact(c) for c in self.consents),
            acute_declaration=declaration,
            prior_answers=self.prior_answers(),
        )

    def prior_answers(self) -> tuple[PriorAnswerFact, ...]:
        """The latest answer per (subject, agreement, purpose, element) that earlier
        requests of the scenario got to the same recipient: items allowed with a
        ``response``, as the broker would have recorded them."""
        latest: dict[tuple[str, str, str, str], PriorAnswerFact] = {}
        for raw in self.earlier:
            if raw.get("recipient") != self.raw.get("recipient"):
                continue
            for entry in raw["items"]:
                response = entry.get("response")
                if not isinstance(response, bool) or not str(entry["expect"]).startswith("allow"):
                    continue
                for subject in entry["subjects"]:
                    fact = PriorAnswerFact(
                        subject=str(subject),
                        agreement=str(raw["agreement"]),
                        purpose=str(raw["purpose"]),
                        element=str(entry["element"]),
                        answer=response,
                        answered_at_ns=to_ns(raw["at"]),
                        exchange_id=str(raw["id"]),
                    )
                    latest[(fact.subject, fact.agreement, fact.purpose, fact.element)] = fact
        return tuple(latest.values())


def consent_fact(raw: dict[str, Any]) -> ConsentFact:
    elements = raw.get("elements")
    recipients = raw.get("recipients")
    withdrawn_at = raw.get("withdrawn_at")
    return ConsentFact(
        id=str(raw["id"]),
        subject=str(raw["subject"]),
        given_by=tuple(str(g) for g in raw["given_by"]),
        agreement=str(raw["agreement"]),
        purpose=str(raw["purpose"]),
        given_at_ns=to_ns(raw["given_at"]),
        withdrawn_at_ns=to_ns(withdrawn_at) if withdrawn_at is not None else None,
        elements=tuple(elements) if elements is not None else None,
        recipients=tuple(recipients) if recipients is not None else None,
    )


def acute_declaration_fact(raw: dict[str, Any]) -> AcuteDeclarationFact:
    return AcuteDeclarationFact(
        id=str(raw["id"]),
        agreement=str(raw["agreement"]),
        purpose=str(raw["purpose"]),
        declared_by=str(raw["declared_by"]),
        declared_at_ns=to_ns(raw["declared_at"]),
        subjects=tuple(str(s) for s in raw["subjects"]),
        evidence=_plain(raw.get("evidence") or {}),
    )


@dataclass(frozen=True, slots=True)
class ScenarioSet:
    registry: Registry
    requests: tuple[ScenarioRequest, ...]

    def items(self) -> list[tuple[ScenarioRequest, ScenarioItem]]:
        return [(r, i) for r in self.requests for i in r.items()]

    def request(self, request_id: str) -> ScenarioRequest:
        return next(r for r in self.requests if r.id == request_id)


def yaml_blocks(text: str) -> list[dict[str, Any]]:
    """Every fenced yaml block that starts with ``kind:``, parsed."""
    return [yaml.safe_load(m.group(1)) for m in _BLOCK.finditer(text)]


def load_scenarios(path: Path) -> ScenarioSet:
    """Parses a scenarios file (e.g. ``<policy dir>/scenarios/scenarios.md``)."""
    blocks = yaml_blocks(path.read_text(encoding="utf-8"))
    registries = [b for b in blocks if b["kind"] == "registry"]
    if len(registries) != 1:
        raise ValueError(f"{path}: expected exactly one registry block, found {len(registries)}")
    reg = registries[0]
    registry = Registry(persons=dict(reg["persons"]), households=dict(reg["households"]))
    requests: list[ScenarioRequest] = []
    for block in blocks:
        if block["kind"] != "scenario":
            continue
        consents = tuple(block.get("consents") or ())
        declarations = {str(d["id"]): d for d in block.get("acute_declarations") or ()}
        raws = list(block["requests"])
        requests.extend(
            ScenarioRequest(
                scenario_id=str(block["id"]),
                raw=raw,
                consents=consents,
                declarations=declarations,
                earlier=tuple(raws[:n]),
            )
            for n, raw in enumerate(raws)
        )
    return ScenarioSet(registry=registry, requests=tuple(requests))
