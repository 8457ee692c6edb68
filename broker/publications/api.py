"""HTTP routes of publications and the inbox. BSNs travel only in request bodies
and inside the JWE payloads."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Response
from fastapi.security import HTTPBearer

from broker.deps import CurrentAgency, RequestId, ServicesDep, require_json
from broker.exchange.schemas import problem_responses
from broker.publications.schemas import (
    MESSAGE_ID,
    AckResponse,
    InboxPage,
    PublicationRequest,
    PublicationResponse,
)

router = APIRouter(prefix="/v1", tags=["publications"])
_bearer = HTTPBearer(auto_error=False, description="Access token from /oauth/token")


def _problems(**described: str) -> dict[int | str, dict[str, object]]:
    return problem_responses({int(k.removeprefix("s")): v for k, v in described.items()})


@router.post(
    "/publications",
    status_code=202,
    response_model=PublicationResponse,
    responses=_problems(
        s401="Missing or invalid access token",
        s403="Your party may not publish this event type under the agreement (not_a_publisher)",
        s409="This event id was published before with another shape (event_id_reused)",
        s413="Request body too large",
        s415="Request body is not application/json",
        s422="Invalid request (field names the fault; e.g. invalid_bsn, unknown_element, "
        "unknown_agreement, unknown_event_type, element_not_in_subscription)",
        s503="Policy engine, register, database or audit log unavailable; nothing was stored",
    ),
    dependencies=[Depends(require_json), Depends(_bearer)],
    summary="Publish an event to the agencies its agreement subscribes",
    description="The broker decides per recipient agency and element x subject with the "
    "subscription's purpose, audits every decision, and stores for each recipient an inbox "
    "message holding only what is allowed, encrypted to its key, before answering. "
    "Publishing the same event_id again returns the first answer and delivers nothing twice.",
)
async def publish(
    body: PublicationRequest,
    principal: CurrentAgency,
    services: ServicesDep,
    request_id: RequestId,
) -> Response:
    result = await services.publications.publish(principal, body, request_id)
    return Response(result.model_dump_json(), status_code=202, media_type="application/json")


@router.get(
    "/inbox",
    response_model=InboxPage,
    responses=_problems(
        s401="Missing or invalid access token",
        s422="Invalid paging parameters",
        s503="Database unavailable",
    ),
    dependencies=[Depends(_bearer)],
    summary="Your agency's unacknowledged messages, oldest first",
)
async def inbox(
    principal: CurrentAgency,
    services: ServicesDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
    after: Annotated[
        str | None, Query(pattern=MESSAGE_ID, description="next_after of the previous page")
    ] = None,
) -> InboxPage:
    return await services.publications.inbox(principal, limit=limit, after=after)


@router.post(
    "/inbox/{message_id}/ack",
    response_model=AckResponse,
    responses=_problems(
        s401="Missing or invalid access token",
        s404="No such message in your inbox",
        s422="Not a message id",
        s503="Database or audit log unavailable; not acknowledged",
    ),
    dependencies=[Depends(_bearer)],
    summary="Acknowledge a message: it leaves the inbox (again: the first acknowledgement)",
)
async def ack(
    message_id: Annotated[str, Path(pattern=MESSAGE_ID)],
    principal: CurrentAgency,
    services: ServicesDep,
) -> AckResponse:
    return await services.publications.ack(principal, message_id)
