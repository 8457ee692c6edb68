"""Wire models of the exchange API (parsed at the boundary)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from broker.core.bsn import is_valid_bsn
from broker.core.types import ItemStatus, Outcome, ReasonCode, ResponseForm

_ID = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$"
_KEY = r"^[a-z][a-z0-9_]{0,63}$"
_KEY_RE = re.compile(_KEY)


def _check_bsn(value: str) -> str:
    if not is_valid_bsn(value):
        raise PydanticCustomError("invalid_bsn", "Not a valid BSN (9 digits passing the 11-check)")
    return value


Bsn = Annotated[
    str,
    Field(min_length=9, max_length=9, examples=["999990020"], description="BSN (elfproef)"),
    AfterValidator(_check_bsn),
]


def _check_context(value: dict[str, Any]) -> dict[str, Any]:
    for key in value:
        if not _KEY_RE.match(key):
            raise PydanticCustomError("invalid_context_key", "Context keys are snake_case names")
    return value


class ProviderRef(BaseModel):
    """The provider: a party type (resolved to the one registered agency of that
    type) or a specific agency by OIN."""

    model_config = ConfigDict(extra="forbid")
    party: str | None = Field(default=None, pattern=_KEY, examples=["politie"])
    oin: str | None = Field(default=None, pattern=r"^[0-9]{20}$")

    @model_validator(mode="after")
    def _exactly_one(self) -> ProviderRef:
        if (self.party is None) == (self.oin is None):
            raise PydanticCustomError("provider_ref", "Give exactly one of party or oin")
        return self


MAX_PROVIDERS = 10
ElementId = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)+$")]


class FanOutProvider(ProviderRef):
    """One of several providers; ``elements`` limits what is asked of it."""

    elements: list[ElementId] | None = Field(
        default=None,
        min_length=1,
        max_length=100,
        description="Only these of the request's elements are asked of this provider "
        "(default: all of them)",
    )


def _check_providers(value: list[FanOutProvider] | None) -> list[FanOutProvider] | None:
    if value is not None:
        refs = [(r.party, r.oin) for r in value]
        if len(set(refs)) != len(refs):
            raise PydanticCustomError("duplicate_provider", "A provider is named twice")
    return value


class ExchangeRequest(BaseModel):
    """Ask for elements about subjects, for one purpose under one agreement.

    The broker decides every element x subject pair; household elements apply
    to the household of the given person. Name the provider in ``provider``, or
    several in ``providers`` (at most 10, each once): the broker then decides
    every element x subject for each provider (the provider is part of the
    decision), asks all allowed providers at the same time and answers once,
    each item naming its provider. A provider's ``elements`` limits what is
    asked of it (default: every requested element). Give exactly one of the two."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "agreement_id": "agr-vt-politie-hg",
                    "purpose_id": "informatie_voor_veiligheidsbeoordeling",
                    "provider": {"party": "politie"},
                    "case_reference": "VT-LB-2026-0042",
                    "subjects": ["999990007"],
                    "elements": ["police.suspect_history_dv", "police.tijdelijk_huisverbod"],
                    "context": {"vt_case_status": "veiligheidsbeoordeling"},
                },
                {
                    "agreement_id": "agr-zvh-mdaplusplus",
                    "purpose_id": "veiligheidsoverleg",
                    "providers": [
                        {"party": "politie", "elements": ["police.dv_incident"]},
                        {"party": "veilig_thuis", "elements": ["vt.safety_assessment"]},
                    ],
                    "case_reference": "ZVH-LB-2026-0007",
                    "subjects": ["999990007"],
                    "elements": ["police.dv_incident", "vt.safety_assessment"],
                    "context": {"mda_case_id": "MDA-LB-2026-0007", "mda_case_status": "actief"},
                },
            ]
        },
    )
    agreement_id: str = Field(pattern=_ID)
    purpose_id: str = Field(pattern=_ID)
    provider: ProviderRef | None = Field(
        default=None, description="The one provider asked (or use providers)"
    )
    providers: Annotated[list[FanOutProvider] | None, AfterValidator(_check_providers)] = Field(
        default=None,
        min_length=1,
        max_length=MAX_PROVIDERS,
        description="Several providers, asked in parallel (or use provider)",
    )
    case_reference: str | None = Field(default=None, max_length=128, pattern=r"^[\x20-\x7e]*$")
    subjects: list[Bsn] = Field(min_length=1, max_length=100)
    elements: list[ElementId] = Field(min_length=1, max_length=100)
    context: Annotated[dict[str, Any], AfterValidator(_check_context)] = Field(
        default_factory=dict, max_length=64
    )
    acute_declaration_id: str | None = Field(
        default=None,
        pattern=_ID,
        description="An acute-danger declaration this request relies on (break-the-glass); "
        "the broker reads its evidence and subjects from the stored declaration",
    )


class LegalBasisOut(BaseModel):
    id: str
    citation: str


class ProviderOut(BaseModel):
    """The agency asked for an item."""

    party: str
    oin: str | None


class LegOut(BaseModel):
    """One provider's part of an exchange: its own decision and exchange record."""

    party: str
    oin: str | None
    exchange_id: str = Field(
        description="The record of this provider's part (the exchange_id itself when the "
        "request named one provider)"
    )
    decision_id: str


class ItemOut(BaseModel):
    element: str
    subject: str = Field(description="The BSN as requested (for household elements: a member)")
    subject_kind: Literal["person", "household"]
    outcome: Outcome
    reason: ReasonCode
    status: ItemStatus
    legal_basis: list[LegalBasisOut]
    consent_id: str | None = None
    acute_declaration_id: str | None = None
    explanation: str
    provider: ProviderOut | None = Field(default=None, description="The provider of this item")
    source: str | None = Field(
        default=None,
        examples=["politie"],
        description="Released items: the party id the value originates at (the provider's "
        "own party, or the original source it passes on as a secondary provider; 'unknown' "
        "when the provider named a party the broker does not know); null otherwise",
    )


class AgreementRef(BaseModel):
    id: str
    version: str | None
    content_hash: str | None


class ExchangeResponse(BaseModel):
    exchange_id: str
    decision_id: str | None = Field(
        description="The policy decision; null when several providers were asked (each of "
        "providers has its own)"
    )
    providers: list[LegOut] = Field(
        default_factory=list, description="Per provider: its exchange record and decision"
    )
    request_id: str
    agreement: AgreementRef
    purpose_id: str
    policy_bundle: str
    response_form: ResponseForm
    retention: dict[str, Any] | None
    audit_indices: list[int] = Field(description="Audit log positions of this exchange's entries")
    items: list[ItemOut]
    payload: str | None = Field(
        description=(
            "JWE compact (ECDH-ES+A256KW, A256GCM) to the requester's encryption key, "
            "holding {exchange_id, items:[{element, subject, source, value}]} (several "
            "providers: each item also names its provider {party, oin}; boolean_only: no "
            "source); null when nothing was released"
        )
    )
    receipt: str = Field(
        description=(
            "Signed release receipt: JWS compact (EdDSA, typ release-receipt+jws, kid of a "
            "key in /oauth/jwks) over canonical JSON of the exchange, agreement, policy "
            "bundle, per-item decisions (pseudonymised subject keys, no BSNs), audit leaf "
            "indices and tree size (version 2 when several providers were asked: per-item "
            "provider); see docs/receipts.md"
        )
    )


class TokenResponse(BaseModel):
    access_token: str
    token_type: Literal["Bearer"]
    expires_in: int
    scope: str


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str
    title: str
    status: int
    detail: str
    code: str
    request_id: str | None = None
    field: str | None = None
    decision_id: str | None = None


def problem_responses(
    descriptions: Mapping[int, str], *statuses: int
) -> dict[int | str, dict[str, object]]:
    """OpenAPI ``responses`` for RFC 9457 problem+json answers: the ``statuses``
    given (default: every one described), each with its description."""
    return {
        status: {
            "model": Problem,
            "content": {"application/problem+json": {}},
            "description": descriptions[status],
        }
        for status in statuses or descriptions
    }
