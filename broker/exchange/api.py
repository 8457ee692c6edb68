"""HTTP routes of the exchange API."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response
from fastapi.security import HTTPBearer

from broker.deps import CurrentAgency, RequestId, ServicesDep, require_json
from broker.exchange.schemas import ExchangeRequest, ExchangeResponse, Problem

router = APIRouter(prefix="/v1", tags=["exchange"])

_bearer = HTTPBearer(auto_error=False, description="Access token from /oauth/token")

_PROBLEMS: dict[int | str, dict[str, object]] = {
    status: {"model": Problem, "content": {"application/problem+json": {}}, "description": d}
    for status, d in {
        401: "Missing or invalid access token",
        403: "The requesting agency may not use the broker",
        413: "Request body too large",
        415: "Request body is not application/json",
        422: "Invalid request (field names the fault; e.g. invalid_bsn, unknown_element)",
        503: "Policy engine, register, database or audit log unavailable; nothing released",
    }.items()
}


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
    result = await services.exchanges.handle(principal, body, request_id)
    # Serialised once here; the response model above documents the shape.
    return Response(result.model_dump_json(), media_type="application/json")
