"""Agreements as partners see them: what is in force, what to sign, and signing."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Depends
from fastapi.security import HTTPBearer
from pydantic import BaseModel, ConfigDict, Field

from broker.core.clock import dutch_date
from broker.core.errors import Forbidden
from broker.deps import CurrentAgency, ServicesDep, require_json
from broker.exchange.schemas import Problem

router = APIRouter(prefix="/v1/agreements", tags=["agreements"])
_bearer = HTTPBearer(auto_error=False, description="Access token from /oauth/token")


class SignatoryOut(BaseModel):
    party: str
    oin: str | None
    organisation: str | None
    signed: bool
    signed_by_oin: str | None
    signed_at: datetime | None


class AgreementOut(BaseModel):
    id: str
    version: str
    title: str
    status: str
    valid_from: str
    valid_until: str
    content_hash: str = Field(description="What signatories sign (canonical hash of the folder)")
    state: str = Field(description="in_force, unsigned, not_yet_valid, expired or status:<status>")
    purposes: list[str]
    signatories: list[SignatoryOut]


class SignatureIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    jws: str = Field(
        min_length=16,
        max_length=8192,
        description=(
            "JWS compact (EdDSA or ES256, kid = a registered signing key) over the canonical "
            'JSON {"agreement_id","version","content_hash","party","oin","signed_at"}'
        ),
    )


_PROBLEMS: dict[int | str, dict[str, object]] = {
    status: {"model": Problem, "content": {"application/problem+json": {}}, "description": d}
    for status, d in {
        401: "Missing or invalid access token",
        403: "Not a signatory, or the signature does not verify",
        404: "No such agreement",
        409: "Signed already",
        413: "Request body too large",
        415: "Request body is not application/json",
        422: "Invalid signature document",
        503: "Database or audit log unavailable",
    }.items()
}


async def _list(services: ServicesDep) -> list[AgreementOut]:
    policy_set = services.policy_set
    statuses = await services.agreements.statuses(policy_set, dutch_date(services.exchanges.now()))
    return [
        AgreementOut(
            id=s.agreement.id,
            version=s.agreement.version,
            title=str(s.agreement.source.get("title", s.agreement.id)),
            status=str(s.agreement.source.get("status", "")),
            valid_from=str(s.agreement.source.get("valid_from", "")),
            valid_until=str(s.agreement.source.get("valid_until", "")),
            content_hash=s.agreement.content_hash,
            state=s.state,
            purposes=sorted(s.agreement.purposes),
            signatories=[
                SignatoryOut(
                    party=e.party,
                    oin=e.oin,
                    organisation=e.organisation,
                    signed=e.signed_by_oin is not None,
                    signed_by_oin=e.signed_by_oin,
                    signed_at=e.signed_at,
                )
                for e in s.signatories
            ],
        )
        for s in statuses
    ]


@router.get(
    "",
    response_model=list[AgreementOut],
    responses={k: v for k, v in _PROBLEMS.items() if k in (401, 503)},
    dependencies=[Depends(_bearer)],
    summary="The agreements, their content hashes and who has signed them",
)
async def list_agreements(principal: CurrentAgency, services: ServicesDep) -> list[AgreementOut]:
    return await _list(services)


@router.post(
    "/{agreement_id}/signatures",
    status_code=201,
    response_model=AgreementOut,
    responses=_PROBLEMS,
    dependencies=[Depends(require_json), Depends(_bearer)],
    summary="Sign an agreement version as one of its signatories",
)
async def sign_agreement(
    agreement_id: str, body: SignatureIn, principal: CurrentAgency, services: ServicesDep
) -> AgreementOut:
    signer = await services.directory.get(principal.oin)
    if signer is None:
        raise Forbidden("The signing agency is not registered")
    row = await services.agreements.submit(body.jws, signer=signer, policy_set=services.policy_set)
    if row.agreement_id != agreement_id:
        raise Forbidden("The signature is for another agreement")
    await services.watcher.check()  # takes effect here at once, elsewhere on the next poll
    return next(a for a in await _list(services) if a.id == agreement_id)
