"""Turns the Rego decision document into a frozen ``Decision`` (parse at the boundary)."""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from broker.core.errors import PolicyUnavailable
from broker.core.types import (
    Decision,
    ItemDecision,
    Obligations,
    PolicyInput,
    ReasonCode,
    ResponseForm,
)


class _Item(BaseModel):
    model_config = ConfigDict(extra="ignore")
    element: str
    subject: str
    outcome: str
    reason: ReasonCode
    legal_basis_ids: list[str]
    consent_id: str | None = None
    acute_declaration_id: str | None = None
    failed_preconditions: list[str] = []


class _Obligations(BaseModel):
    model_config = ConfigDict(extra="ignore")
    response_form: ResponseForm = ResponseForm.FULL
    retention: dict[str, Any] | None = None


class _Result(BaseModel):
    model_config = ConfigDict(extra="ignore")
    agreement_id: str
    agreement_version: str | None = None
    agreement_hash: str | None = None
    acute_mode: bool = False
    obligations: _Obligations
    items: list[_Item]


def parse_decision(
    document: Any, policy_input: PolicyInput, *, engine: str, bundle_hash: str
) -> Decision:
    """Validates the engine's answer; anything unexpected fails closed."""
    try:
        result = _Result.model_validate(document)
    except ValidationError as exc:
        raise PolicyUnavailable("The policy engine returned an unusable decision") from exc
    asked = [(i.element, i.subject) for i in policy_input.items]
    got = [(i.element, i.subject) for i in result.items]
    if asked != got:
        raise PolicyUnavailable("The policy engine did not decide every requested item")
    for item in result.items:
        if item.outcome != item.reason.outcome.value:
            raise PolicyUnavailable("The policy engine returned an inconsistent decision")
    return Decision(
        decision_id=str(uuid.uuid4()),
        engine=engine,
        bundle_hash=bundle_hash,
        agreement_id=result.agreement_id,
        agreement_version=result.agreement_version,
        agreement_hash=result.agreement_hash,
        acute_mode=result.acute_mode,
        obligations=Obligations(
            response_form=result.obligations.response_form,
            retention=result.obligations.retention,
        ),
        items=tuple(
            ItemDecision(
                element=i.element,
                subject=i.subject,
                reason=i.reason,
                legal_basis_ids=tuple(i.legal_basis_ids),
                consent_id=i.consent_id,
                acute_declaration_id=i.acute_declaration_id,
                failed_preconditions=tuple(i.failed_preconditions),
            )
            for i in result.items
        ),
    )
