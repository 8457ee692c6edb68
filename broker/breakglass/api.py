"""HTTP routes of acute-danger (break-the-glass) declarations and their review.

The review routes are for privacy officers: agencies whose OIN is listed in
``BROKER_PRIVACY_OFFICERS`` (there is no privacy-officer role yet)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query
from fastapi.security import HTTPBearer

from broker.breakglass.schemas import DeclarationIn, DeclarationOut, ReviewIn
from broker.consent.schemas import RECORD_ID
from broker.deps import CurrentAgency, RequestId, ServicesDep, require_json
from broker.exchange.schemas import problem_responses

router = APIRouter(prefix="/v1", tags=["break-the-glass"])
_bearer = HTTPBearer(auto_error=False, description="Access token from /oauth/token")


_DESCRIPTIONS = {
    401: "Missing or invalid access token",
    403: "Not allowed: a party outside declarable_by (not_declarable), or not a privacy "
    "officer (not_a_privacy_officer)",
    404: "No such declaration (or not yours to see)",
    409: "A declaration with this id exists, or it is reviewed already",
    413: "Request body too large",
    415: "Request body is not application/json",
    422: "Invalid request (field names the fault; e.g. invalid_bsn, unknown_purpose, "
    "acute_danger_not_applicable, invalid_evidence)",
    503: "Database or audit log unavailable; nothing was recorded",
}


def _problems(*statuses: int) -> dict[int | str, dict[str, object]]:
    return problem_responses(_DESCRIPTIONS, 401, *statuses, 503)


DeclarationId = Annotated[str, Path(pattern=RECORD_ID)]


@router.post(
    "/acute-declarations",
    status_code=201,
    response_model=DeclarationOut,
    responses=_problems(403, 409, 413, 415, 422),
    dependencies=[Depends(require_json), Depends(_bearer)],
    summary="Declare acute danger (break-the-glass) for named subjects",
)
async def declare(
    body: DeclarationIn, principal: CurrentAgency, services: ServicesDep, request_id: RequestId
) -> DeclarationOut:
    return await services.breakglass.declare(
        body,
        actor_oin=principal.oin,
        actor_party=principal.party_type,
        policy_set=services.policy_set,
        request_id=request_id,
    )


@router.get(
    "/acute-declarations/{declaration_id}",
    response_model=DeclarationOut,
    responses=_problems(404, 422),
    dependencies=[Depends(_bearer)],
    summary="A declaration, for the agency that made it",
)
async def get_declaration(
    declaration_id: DeclarationId, principal: CurrentAgency, services: ServicesDep
) -> DeclarationOut:
    return await services.breakglass.get(declaration_id, actor_oin=principal.oin)


@router.get(
    "/review/acute-declarations",
    response_model=list[DeclarationOut],
    responses=_problems(403, 422),
    dependencies=[Depends(_bearer)],
    summary="The privacy officer's review queue (overdue: pending past review_due_at)",
)
async def review_queue(
    principal: CurrentAgency,
    services: ServicesDep,
    status: Annotated[Literal["pending", "approved", "questioned", "all"], Query()] = "pending",
) -> list[DeclarationOut]:
    return await services.breakglass.queue(actor_oin=principal.oin, status=status)


@router.post(
    "/review/acute-declarations/{declaration_id}",
    response_model=DeclarationOut,
    responses=_problems(403, 404, 409, 413, 415, 422),
    dependencies=[Depends(require_json), Depends(_bearer)],
    summary="Approve or question a declaration",
)
async def review_declaration(
    declaration_id: DeclarationId,
    body: ReviewIn,
    principal: CurrentAgency,
    services: ServicesDep,
    request_id: RequestId,
) -> DeclarationOut:
    return await services.breakglass.review(
        declaration_id, body, actor_oin=principal.oin, request_id=request_id
    )
