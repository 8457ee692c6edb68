"""HTTP routes of the signal register. BSNs travel in bodies, never in URLs."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path
from fastapi.security import HTTPBearer

from broker.deps import CurrentAgency, RequestId, ServicesDep, require_json
from broker.exchange.schemas import problem_responses
from broker.signals.schemas import SIGNAL_ID, SignalIn, SignalOut, SignalPage, WithdrawalOut

router = APIRouter(prefix="/v1/signals", tags=["signals"])
_bearer = HTTPBearer(auto_error=False, description="Access token from /oauth/token")

_PROBLEMS = problem_responses(
    {
        401: "Missing or invalid access token",
        403: "Your party may not register signals under this agreement (not_a_signal_party)",
        404: "No such signal of your agency",
        409: "Your agency has a signal for this subject under this agreement (signal_exists)",
        413: "Request body too large",
        415: "Request body is not application/json",
        422: "Invalid request (field names the fault; e.g. invalid_bsn, unknown_agreement, "
        "signals_not_offered, agreement_not_in_force, subject_kind_not_allowed, not_a_child, "
        "invalid_time)",
        503: "Population register, database or audit log unavailable; nothing was recorded",
    }
)

SignalId = Annotated[str, Path(pattern=SIGNAL_ID)]


@router.post(
    "",
    status_code=201,
    response_model=SignalOut,
    responses={k: v for k, v in _PROBLEMS.items() if k != 404},
    dependencies=[Depends(require_json), Depends(_bearer)],
    summary="Register that your agency is involved with a child (no content)",
    description="When another agency is involved with the same child (or household, where "
    "the agreement matches on households), both receive an inbox message (event type "
    "signal.match) naming the other agency and its contact route, nothing else.",
)
async def register_signal(
    body: SignalIn, principal: CurrentAgency, services: ServicesDep, request_id: RequestId
) -> SignalOut:
    return await services.signals.register(principal, body, request_id)


@router.get(
    "",
    response_model=SignalPage,
    responses={k: v for k, v in _PROBLEMS.items() if k in (401, 503)},
    dependencies=[Depends(_bearer)],
    summary="Your agency's live signals",
)
async def list_signals(principal: CurrentAgency, services: ServicesDep) -> SignalPage:
    return await services.signals.own(principal)


@router.delete(
    "/{signal_id}",
    response_model=WithdrawalOut,
    responses={k: v for k, v in _PROBLEMS.items() if k in (401, 404, 503)},
    dependencies=[Depends(_bearer)],
    summary="Withdraw a signal of your agency (audited, then deleted)",
)
async def withdraw_signal(
    signal_id: SignalId, principal: CurrentAgency, services: ServicesDep, request_id: RequestId
) -> WithdrawalOut:
    return await services.signals.withdraw(principal, signal_id, request_id)
