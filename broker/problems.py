"""RFC 9457 problem+json rendering: the one place errors become HTTP responses."""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from broker.core.errors import AgreementRejected, AuthenticationFailed, BrokerError, ErrorCode

PROBLEM_JSON = "application/problem+json"
TYPE_BASE = "https://broker.example/problems/"

log = structlog.get_logger("problems")

_PYDANTIC_CODES = {
    "invalid_bsn": ErrorCode.INVALID_BSN,
    "json_invalid": ErrorCode.INVALID_REQUEST,
}


def problem(
    *,
    status: int,
    code: str,
    title: str,
    detail: str,
    request_id: str | None,
    field: str | None = None,
    decision_id: str | None = None,
    extra: dict[str, Any] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": TYPE_BASE + code,
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
        "request_id": request_id,
    }
    if field is not None:
        body["field"] = field
    if decision_id is not None:
        body["decision_id"] = decision_id
    if extra:
        body.update(extra)
    headers = {"WWW-Authenticate": 'Bearer realm="broker"'} if status == 401 else None
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _request_id(request: Request) -> str | None:
    rid = getattr(request.state, "request_id", None)
    return str(rid) if rid else None


def _field(loc: Any) -> str:
    parts = [p for p in loc if p not in ("body", "query", "path", "header")]
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "body"


def install(app: FastAPI) -> None:
    @app.exception_handler(BrokerError)
    async def _broker_error(request: Request, exc: BrokerError) -> JSONResponse:
        if exc.status >= 500:
            log.warning("request.failed", code=str(exc.code), status=exc.status)
        extra: dict[str, Any] | None = None
        if isinstance(exc, AuthenticationFailed) and exc.code is ErrorCode.INVALID_CLIENT:
            extra = {"error": "invalid_client"}  # RFC 6749 section 5.2, for OAuth clients
        elif isinstance(exc, AgreementRejected):
            extra = {"errors": exc.errors}
        return problem(
            status=exc.status,
            code=str(exc.code),
            title=exc.title,
            detail=exc.message,
            request_id=_request_id(request),
            field=exc.field,
            decision_id=exc.decision_id,
            extra=extra,
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {"loc": ("body",), "type": "invalid", "msg": "invalid"}
        code = _PYDANTIC_CODES.get(str(first.get("type")), ErrorCode.VALIDATION_FAILED)
        # Messages are pydantic's own texts about the shape; input values are never echoed.
        detail = str(first.get("msg", "invalid value"))
        return problem(
            status=422,
            code=str(code),
            title="The request is not valid",
            detail=detail,
            request_id=_request_id(request),
            field=_field(first.get("loc", ("body",))),
            extra={
                "errors": [
                    {"field": _field(e.get("loc", ())), "message": str(e.get("msg", ""))}
                    for e in errors[:20]
                ]
            },
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {
            404: ErrorCode.NOT_FOUND,
            405: ErrorCode.METHOD_NOT_ALLOWED,
            401: ErrorCode.UNAUTHORIZED,
        }.get(exc.status_code, ErrorCode.INVALID_REQUEST)
        return problem(
            status=exc.status_code,
            code=str(code),
            title=str(exc.detail) if exc.status_code < 500 else "Error",
            detail=str(exc.detail) if exc.status_code < 500 else "Error",
            request_id=_request_id(request),
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("request.crashed", error=type(exc).__name__)
        return problem(
            status=500,
            code=str(ErrorCode.INTERNAL_ERROR),
            title="Internal error",
            detail="An unexpected error occurred; nothing was released",
            request_id=_request_id(request),
        )
