"""HTTP routes of the consent registry. BSNs travel in bodies, never in URLs."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path
from fastapi.security import HTTPBearer

from broker.consent.schemas import RECORD_ID, ConsentIn, ConsentOut, ConsentSearch, WithdrawalIn
from broker.deps import CurrentAgency, RequestId, ServicesDep, require_json
from broker.exchange.schemas import problem_responses

router = APIRouter(prefix="/v1/consents", tags=["consent"])
_bearer = HTTPBearer(auto_error=False, description="Access token from /oauth/token")

_PROBLEMS = problem_responses(
    {
        401: "Missing or invalid access token",
        404: "No such consent record (or not yours to see)",
        409: "A record with this id exists, or the consent is withdrawn already",
        413: "Request body too large",
        415: "Request body is not application/json",
        422: "Invalid request (field names the fault; e.g. invalid_bsn, unknown_purpose, "
        "consent_not_applicable, invalid_giver, invalid_time)",
        503: "Database or audit log unavailable; nothing was recorded",
    }
)

ConsentId = Annotated[str, Path(pattern=RECORD_ID)]


@router.post(
    "",
    status_code=201,
    response_model=ConsentOut,
    responses={k: v for k, v in _PROBLEMS.items() if k != 404},
    dependencies=[Depends(require_json), Depends(_bearer)],
    summary="Record a consent your agency obtained and documented",
)
async def record_consent(
    body: ConsentIn, principal: CurrentAgency, services: ServicesDep, request_id: RequestId
) -> ConsentOut:
    return await services.consents.record(
        body,
        actor_oin=principal.oin,
        actor_party=principal.party_type,
        policy_set=services.policy_set,
        request_id=request_id,
    )


@router.post(
    "/search",
    response_model=list[ConsentOut],
    responses={k: v for k, v in _PROBLEMS.items() if k not in (404, 409)},
    dependencies=[Depends(require_json), Depends(_bearer)],
    summary="The consent records your agency recorded about a subject",
)
async def search_consents(
    body: ConsentSearch, principal: CurrentAgency, services: ServicesDep
) -> list[ConsentOut]:
    return await services.consents.search(body, actor_oin=principal.oin)


@router.post(
    "/{consent_id}/withdraw",
    response_model=ConsentOut,
    responses=_PROBLEMS,
    dependencies=[Depends(require_json), Depends(_bearer)],
    summary="Record that the data subject or a giver withdrew the consent",
    description="Open to the recording agency and to any agency of a party to the "
    "agreement (withdrawing must be as easy as giving consent).",
)
async def withdraw_consent(
    consent_id: ConsentId,
    body: WithdrawalIn,
    principal: CurrentAgency,
    services: ServicesDep,
    request_id: RequestId,
) -> ConsentOut:
    return await services.consents.withdraw(
        consent_id,
        body,
        actor_oin=principal.oin,
        actor_party=principal.party_type,
        policy_set=services.policy_set,
        request_id=request_id,
    )
