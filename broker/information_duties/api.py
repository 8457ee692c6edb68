"""HTTP routes of AVG art. 14 information duties, their embargoes and the safety
investigations behind them.

A privacy officer (an agency listed in ``BROKER_PRIVACY_OFFICERS``) sees every
duty, e.g. ``GET /v1/information-duties?status=overdue``; any other agency the
duties it holds, received or provided."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query
from fastapi.security import HTTPBearer

from broker.consent.schemas import RECORD_ID
from broker.deps import CurrentAgency, RequestId, ServicesDep, require_json
from broker.exchange.schemas import problem_responses
from broker.information_duties.schemas import (
    CASE_REF,
    DutyOut,
    EmbargoIn,
    ExchangeEmbargoIn,
    FulfilIn,
    InvestigationIn,
    InvestigationOut,
    StatusFilter,
)

router = APIRouter(prefix="/v1", tags=["information duties"])
_bearer = HTTPBearer(auto_error=False, description="Access token from /oauth/token")

_DESCRIPTIONS = {
    401: "Missing or invalid access token",
    403: "Not allowed (e.g. only the agency that must inform marks a duty fulfilled)",
    404: "No such duty or investigation (or not yours to see)",
    409: "The duty is fulfilled or under an embargo already (already_fulfilled, "
    "duty_embargoed), or the investigation has ended (investigation_ended)",
    413: "Request body too large",
    415: "Request body is not application/json",
    422: "Invalid request (field names the fault; e.g. reason, investigation_reference: "
    "unknown_investigation, investigation_ended; embargo_not_applicable; invalid_time)",
    503: "Database or audit log unavailable; nothing was recorded",
}


def _problems(*statuses: int) -> dict[int | str, dict[str, object]]:
    return problem_responses(_DESCRIPTIONS, 401, *statuses, 503)


DutyId = Annotated[str, Path(pattern=RECORD_ID)]
CaseReference = Annotated[str, Path(pattern=CASE_REF)]


@router.get(
    "/information-duties",
    response_model=list[DutyOut],
    responses=_problems(422),
    dependencies=[Depends(_bearer)],
    summary="Information duties by due date (overdue: open past due_at)",
)
async def list_duties(
    principal: CurrentAgency,
    services: ServicesDep,
    status: Annotated[StatusFilter, Query()] = "all",
    exchange_id: Annotated[str | None, Query(pattern=RECORD_ID)] = None,
) -> list[DutyOut]:
    return await services.information_duties.list_duties(
        actor_oin=principal.oin, status=status, exchange_id=exchange_id
    )


@router.get(
    "/information-duties/{duty_id}",
    response_model=DutyOut,
    responses=_problems(404, 422),
    dependencies=[Depends(_bearer)],
    summary="One information duty",
)
async def get_duty(duty_id: DutyId, principal: CurrentAgency, services: ServicesDep) -> DutyOut:
    return await services.information_duties.get(duty_id, actor_oin=principal.oin)


@router.post(
    "/information-duties/{duty_id}/embargo",
    response_model=DutyOut,
    responses=_problems(404, 409, 413, 415, 422),
    dependencies=[Depends(require_json), Depends(_bearer)],
    summary="Postpone informing while a safety investigation runs (reason required)",
)
async def set_embargo(
    duty_id: DutyId,
    body: EmbargoIn,
    principal: CurrentAgency,
    services: ServicesDep,
    request_id: RequestId,
) -> DutyOut:
    return await services.information_duties.embargo(
        duty_id,
        body,
        actor_oin=principal.oin,
        actor_party=principal.party_type,
        policy_set=services.policy_set,
        request_id=request_id,
    )


@router.post(
    "/information-duties/embargo",
    response_model=list[DutyOut],
    responses=_problems(404, 409, 413, 415, 422),
    dependencies=[Depends(require_json), Depends(_bearer)],
    summary="Postpone informing about one exchange: every open duty of it at once",
)
async def set_exchange_embargo(
    body: ExchangeEmbargoIn,
    principal: CurrentAgency,
    services: ServicesDep,
    request_id: RequestId,
) -> list[DutyOut]:
    return await services.information_duties.embargo_exchange(
        body,
        actor_oin=principal.oin,
        actor_party=principal.party_type,
        policy_set=services.policy_set,
        request_id=request_id,
    )


@router.post(
    "/information-duties/{duty_id}/fulfilment",
    response_model=DutyOut,
    responses=_problems(403, 404, 409, 413, 415, 422),
    dependencies=[Depends(require_json), Depends(_bearer)],
    summary="Record that the addressees were informed",
)
async def fulfil(
    duty_id: DutyId,
    body: FulfilIn,
    principal: CurrentAgency,
    services: ServicesDep,
    request_id: RequestId,
) -> DutyOut:
    return await services.information_duties.fulfil(
        duty_id, body, actor_oin=principal.oin, request_id=request_id
    )


@router.post(
    "/safety-investigations",
    status_code=201,
    response_model=InvestigationOut,
    responses=_problems(409, 413, 415, 422),
    dependencies=[Depends(require_json), Depends(_bearer)],
    summary="Register a safety investigation you run (other agencies may then cite it)",
)
async def open_investigation(
    body: InvestigationIn, principal: CurrentAgency, services: ServicesDep, request_id: RequestId
) -> InvestigationOut:
    return await services.information_duties.open_investigation(
        body, actor_oin=principal.oin, actor_party=principal.party_type, request_id=request_id
    )


@router.post(
    "/safety-investigations/{reference}/end",
    response_model=InvestigationOut,
    responses=_problems(404, 409, 422),
    dependencies=[Depends(_bearer)],
    summary="End your safety investigation: every embargo resting on it is lifted",
)
async def end_investigation(
    reference: CaseReference, principal: CurrentAgency, services: ServicesDep, request_id: RequestId
) -> InvestigationOut:
    return await services.information_duties.end_investigation(
        reference, actor_oin=principal.oin, request_id=request_id
    )
