"""Value types shared by the broker, the audit log and the adapters.

Decisions are frozen values (see docs/architecture.md): per item the outcome,
the reason code, the legal bases, the agreement id/version/hash and the policy
bundle hash, plus a ``decision_id`` for the whole request.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum
from typing import Any


class Outcome(StrEnum):
    ALLOW = "allow"
    DENY = "deny"


class ReasonCode(StrEnum):
    """Reason codes of the normative decision procedure (scenarios.md)."""

    ALLOW_STATUTORY_BASIS = "allow_statutory_basis"
    ALLOW_CONSENT = "allow_consent"
    ALLOW_BREAK_GLASS = "allow_break_glass"
    DENY_AGREEMENT_NOT_IN_FORCE = "deny_agreement_not_in_force"
    DENY_UNKNOWN_PURPOSE = "deny_unknown_purpose"
    DENY_PURPOSE_MISMATCH = "deny_purpose_mismatch"
    DENY_ELEMENT_NOT_ALLOWED = "deny_element_not_allowed"
    DENY_PRECONDITION_FAILED = "deny_precondition_failed"
    DENY_CONSENT_MISSING = "deny_consent_missing"
    DENY_CONSENT_INCOMPLETE = "deny_consent_incomplete"
    DENY_CONSENT_WITHDRAWN = "deny_consent_withdrawn"
    DENY_BREAK_GLASS_EXPIRED = "deny_break_glass_expired"

    @property
    def outcome(self) -> Outcome:
        return _OUTCOMES[self]


# Looked up, not computed: the hot path asks every item's outcome several times.
_OUTCOMES: dict[ReasonCode, Outcome] = {
    code: Outcome.ALLOW if code.value.startswith("allow_") else Outcome.DENY for code in ReasonCode
}


class SubjectKind(StrEnum):
    PERSON = "person"
    HOUSEHOLD = "household"


class ResponseForm(StrEnum):
    FULL = "full"
    BOOLEAN_ONLY = "boolean_only"


class ItemStatus(StrEnum):
    """What happened to one item after the decision."""

    RELEASED = "released"
    DENIED = "denied"
    NOT_FOUND = "not_found"
    UNAVAILABLE = "unavailable"
    TIMEOUT = "timeout"


@dataclass(frozen=True, slots=True)
class SubjectFacts:
    """Facts about one data subject as the policy sees them (pseudonymised).

    ``key`` is the pseudonymised subject key; ``authority_holders`` are the
    pseudonymised keys of the holders of parental authority on the request date.
    """

    key: str
    kind: SubjectKind
    birth_date: date | None = None
    age: int | None = None
    authority_holders: tuple[str, ...] = ()

    def to_input(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "kind": self.kind.value,
            "birth_date": self.birth_date.isoformat() if self.birth_date else None,
            "age": self.age,
            "authority_holders": list(self.authority_holders),
        }


@dataclass(frozen=True, slots=True)
class ConsentFact:
    """A consent record as the policy input carries it (pseudonymised)."""

    id: str
    subject: str
    given_by: tuple[str, ...]
    agreement: str
    purpose: str
    given_at_ns: int
    withdrawn_at_ns: int | None = None
    elements: tuple[str, ...] | None = None
    recipients: tuple[str, ...] | None = None
    # The record states that the minor subject cannot reasonably assess his
    # interests (wilsonbekwaam, consent_rules.md section 2 rule 5): the holders of
    # authority consent for him, whatever his age under 18.
    wilsonbekwaam: bool = False

    def to_input(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "subject": self.subject,
            "given_by": list(self.given_by),
            "agreement": self.agreement,
            "purpose": self.purpose,
            "given_at_ns": self.given_at_ns,
            "withdrawn_at_ns": self.withdrawn_at_ns,
        }
        if self.elements is not None:
            out["elements"] = list(self.elements)
        if self.recipients is not None:
            out["recipients"] = list(self.recipients)
        if self.wilsonbekwaam:
            out["wilsonbekwaam"] = True
        return out


@dataclass(frozen=True, slots=True)
class AcuteDeclarationFact:
    """A stored acute-danger (break-the-glass) declaration as the policy sees it."""

    id: str
    agreement: str
    purpose: str
    declared_by: str
    declared_at_ns: int
    subjects: tuple[str, ...]
    evidence: dict[str, Any]

    def to_input(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "agreement": self.agreement,
            "purpose": self.purpose,
            "declared_by": self.declared_by,
            "declared_at_ns": self.declared_at_ns,
            "subjects": list(self.subjects),
            "evidence": self.evidence,
        }


@dataclass(frozen=True, slots=True)
class PriorAnswerFact:
    """A boolean-only answer the broker itself released earlier to the same
    requesting agency about the same subject (pseudonymised), looked up in the
    broker's own decision records. Never taken from the request: a follow-up
    purpose's precondition (e.g. the kindcheck contact route after a recent
    ``true``) reads it from ``input.prior_answers``."""

    subject: str
    agreement: str
    purpose: str
    element: str
    answer: bool
    answered_at_ns: int
    exchange_id: str | None = None

    def to_input(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "agreement": self.agreement,
            "purpose": self.purpose,
            "element": self.element,
            "answer": self.answer,
            "answered_at_ns": self.answered_at_ns,
            "exchange_id": self.exchange_id,
        }


@dataclass(frozen=True, slots=True)
class RequestedItem:
    element: str
    subject: str  # pseudonymised subject key


@dataclass(frozen=True, slots=True)
class PolicyInput:
    """Everything the decision depends on; stored with the decision for replay."""

    agreement: str
    purpose: str
    provider: str
    recipient: str
    request_time_ns: int
    request_date: date
    context: dict[str, Any]
    subjects: tuple[SubjectFacts, ...]
    items: tuple[RequestedItem, ...]
    consents: tuple[ConsentFact, ...] = ()
    acute_declaration: AcuteDeclarationFact | None = None
    # Broker-derived: earlier boolean-only answers (see PriorAnswerFact).
    prior_answers: tuple[PriorAnswerFact, ...] = ()

    def to_document(self) -> dict[str, Any]:
        return {
            "agreement": self.agreement,
            "purpose": self.purpose,
            "provider": self.provider,
            "recipient": self.recipient,
            "request_time_ns": self.request_time_ns,
            "request_date": self.request_date.isoformat(),
            "context": self.context,
            "subjects": [s.to_input() for s in self.subjects],
            "items": [{"element": i.element, "subject": i.subject} for i in self.items],
            "consents": [c.to_input() for c in self.consents],
            "acute_declaration": (
                self.acute_declaration.to_input() if self.acute_declaration else None
            ),
            "prior_answers": [a.to_input() for a in self.prior_answers],
        }


@dataclass(frozen=True, slots=True)
class ItemDecision:
    element: str
    subject: str
    reason: ReasonCode
    legal_basis_ids: tuple[str, ...] = ()
    consent_id: str | None = None
    acute_declaration_id: str | None = None
    failed_preconditions: tuple[str, ...] = ()

    @property
    def outcome(self) -> Outcome:
        return _OUTCOMES[self.reason]

    @property
    def allowed(self) -> bool:
        return _OUTCOMES[self.reason] is Outcome.ALLOW


@dataclass(frozen=True, slots=True)
class Obligations:
    response_form: ResponseForm = ResponseForm.FULL
    retention: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    """The policy engine's answer for one request: one value per item."""

    decision_id: str
    engine: str
    bundle_hash: str
    agreement_id: str
    agreement_version: str | None
    agreement_hash: str | None
    acute_mode: bool
    obligations: Obligations
    items: tuple[ItemDecision, ...] = field(default_factory=tuple)

    def allowed_items(self) -> tuple[ItemDecision, ...]:
        return tuple(i for i in self.items if i.allowed)
