"""FastAPI dependencies as ``Annotated`` aliases.

All are ``async def``: FastAPI runs a plain ``def`` dependency in a worker
thread, which costs more than the dependency itself on the hot path."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from broker.app import Services
from broker.core.errors import UnsupportedMediaType
from broker.security.tokens import Principal


async def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


async def get_principal(
    services: ServicesDep,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> Principal:
    return await services.tokens.authenticate(authorization)


CurrentAgency = Annotated[Principal, Depends(get_principal)]


async def get_request_id(request: Request) -> str:
    return str(request.state.request_id)


RequestId = Annotated[str, Depends(get_request_id)]


async def require_json(request: Request) -> None:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/json":
        raise UnsupportedMediaType()


JsonBody = Depends(require_json)
