"""``POST /v1/subject-access``: a subject-access overview (AVG art. 15) for privacy
officers (agencies whose OIN is listed in ``BROKER_PRIVACY_OFFICERS``). The BSN
travels in the body, never in a URL."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Literal

from fastapi import APIRouter, Depends
from fastapi.responses import HTMLResponse, Response
from fastapi.security import HTTPBearer
from pydantic import BaseModel, ConfigDict, Field

from broker.deps import CurrentAgency, RequestId, ServicesDep, require_json
from broker.exchange.schemas import Bsn, problem_responses
from broker.subject_access.pdf import render_pdf
from broker.subject_access.render import render_html
from broker.subject_access.service import SubjectAccessReport

router = APIRouter(prefix="/v1", tags=["subject access"])
_bearer = HTTPBearer(auto_error=False, description="Access token from /oauth/token")

_DESCRIPTIONS = {
    401: "Missing or invalid access token",
    403: "Not a privacy officer (not_a_privacy_officer)",
    413: "Request body too large",
    415: "Request body is not application/json",
    422: "Invalid request (field names the fault; e.g. invalid_bsn, invalid_time)",
    503: "Database, register or audit log unavailable; no report was produced",
}


class SubjectAccessIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    bsn: Bsn = Field(description="The data subject")
    since: datetime | None = Field(default=None, description="Entries from this time (inclusive)")
    until: datetime | None = Field(default=None, description="Entries before this time")
    format: Literal["json", "html", "pdf"] = Field(
        default="json",
        description="json, a self-contained printable HTML page, or a printable PDF (A4)",
    )


@router.post(
    "/subject-access",
    response_model=SubjectAccessReport,
    responses={
        200: {
            "description": (
                "The report (JSON), with format=html a printable HTML page, "
                "with format=pdf a printable PDF"
            ),
            "content": {
                "text/html": {"schema": {"type": "string"}},
                "application/pdf": {"schema": {"type": "string", "format": "binary"}},
            },
        },
        **problem_responses(_DESCRIPTIONS),
    },
    dependencies=[Depends(require_json), Depends(_bearer)],
    summary="Subject-access overview (AVG art. 15) of one person, for privacy officers",
)
async def subject_access(
    body: SubjectAccessIn, principal: CurrentAgency, services: ServicesDep, request_id: RequestId
) -> SubjectAccessReport | Response:
    report = await services.subject_access.generate(
        body.bsn,
        officer_oin=principal.oin,
        channel="api",
        since=body.since,
        until=body.until,
        output_format=body.format,
        request_id=request_id,
    )
    if body.format == "html":
        return HTMLResponse(render_html(report), headers={"Cache-Control": "no-store"})
    if body.format == "pdf":
        # Laying out a long table takes a while: off the event loop.
        return Response(
            await asyncio.to_thread(render_pdf, report),
            media_type="application/pdf",
            headers={
                "Cache-Control": "no-store",
                "Content-Disposition": 'attachment; filename="subject-access.pdf"',
            },
        )
    return report
