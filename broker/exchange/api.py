"""HTTP routes of the exchange API."""

from __future__ import annotations

from collections.abc import Iterable

from fastapi import APIRouter, Depends, Response
from fastapi.security import HTTPBearer

from broker.core.errors import BrokerError
from broker.core.telemetry import EXCHANGES
from broker.core.types import ItemStatus
from broker.deps import CurrentAgency, RequestId, ServicesDep, require_json
from broker.exchange.schemas import ExchangeRequest, ExchangeResponse, problem_responses
from broker.policy.loader import PolicySet

router = APIRouter(prefix="/v1", tags=["exchange"])

_bearer = HTTPBearer(auto_error=False, description="Access token from /oauth/token")

_PROBLEMS = problem_responses(
    {
        401: "Missing or invalid access token",
        403: "The requesting agency may not use the broker",
        413: "Request body too large",
        415: "Request body is not application/json",
        422: "Invalid request (field names the fault; e.g. invalid_bsn, unknown_element)",
        503: "Policy engine, register, database or audit log unavailable; nothing released",
    }
)


@router.post(
    "/exchanges",
    response_model=ExchangeResponse,
    responses=_PROBLEMS,
    dependencies=[Depends(require_json), Depends(_bearer)],
    summary="Ask for data elements about subjects for a stated purpose",
)
async def create_exchange(
    body: ExchangeRequest,
    principal: CurrentAgency,
    services: ServicesDep,
    request_id: RequestId,
) -> Response:
    try:
        result = await services.exchanges.handle(principal, body, request_id)
    except BrokerError as exc:
        if exc.status >= 500:  # requests refused as invalid (4xx) are no exchanges
            _count("failed", body, services.policy_set)
        raise
    except Exception:
        _count("failed", body, services.policy_set)
        raise
    _count(exchange_outcome(i.status for i in result.items), body, services.policy_set)
    # Serialised once here; the response model above documents the shape.
    return Response(result.model_dump_json(), media_type="application/json")


_ANSWERED = frozenset({ItemStatus.RELEASED, ItemStatus.NOT_FOUND})


def exchange_outcome(statuses: Iterable[ItemStatus]) -> str:
    """``completed``: every item answered by the provider (released or not found);
    ``denied_all``: the policy denied every item; ``failed``: none of the allowed items
    could be fetched; ``partial``: the rest (some answered, some denied or unavailable)."""
    answered = allowed = total = 0
    for status in statuses:
        total += 1
        if status is not ItemStatus.DENIED:
            allowed += 1
            if status in _ANSWERED:
                answered += 1
    if answered == total:
        return "completed"
    if allowed == 0:
        return "denied_all"
    return "failed" if answered == 0 else "partial"


def _count(outcome: str, body: ExchangeRequest, policy_set: PolicySet) -> None:
    """One exchange in the counter; ids the policy set does not know become ``unknown``
    (callers choose them: the label set must stay bounded)."""
    versions = policy_set.versions.get(body.agreement_id)
    agreement = body.agreement_id if versions else "unknown"
    known_purpose = versions is not None and any(body.purpose_id in a.purposes for a in versions)
    purpose = body.purpose_id if known_purpose else "unknown"
    EXCHANGES.labels(outcome, agreement, purpose).inc()
