"""``GET /v1/adapters/health``: per-endpoint stats of the outgoing adapters and the register.

Reveals no personal data: endpoint URLs, adapter kinds, circuit states, counts and timings only.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from fastapi import APIRouter, Depends
from fastapi.security import HTTPBearer
from pydantic import BaseModel, ConfigDict, Field

from broker.deps import CurrentAgency, ServicesDep
from broker.exchange.schemas import Problem

router = APIRouter(prefix="/v1/adapters", tags=["operations"])
_bearer = HTTPBearer(auto_error=False, description="Access token from /oauth/token")


@runtime_checkable
class _HasHealth(Protocol):
    def health(self) -> dict[str, dict[str, Any]]: ...


class EndpointHealth(BaseModel):
    model_config = ConfigDict(frozen=True)

    kind: str
    endpoint: str
    circuit: str
    calls: int
    failures: int
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None


class AdaptersHealth(BaseModel):
    model_config = ConfigDict(frozen=True, populate_by_name=True)

    adapters: list[EndpointHealth]
    # ``register`` is the wire name; the attribute differs (BaseModel has ``register``).
    population_register: EndpointHealth | None = Field(alias="register")


def _row(kind: str, endpoint: str, snap: dict[str, Any]) -> EndpointHealth:
    return EndpointHealth(
        kind=kind,
        endpoint=endpoint,
        circuit=str(snap.get("state", "none")),
        calls=int(snap.get("calls", 0)),
        failures=int(snap.get("failures", 0)) + int(snap.get("timeouts", 0)),
        p50_ms=snap.get("p50_ms"),
        p95_ms=snap.get("p95_ms"),
        p99_ms=snap.get("p99_ms"),
    )


@router.get(
    "/health",
    response_model=AdaptersHealth,
    dependencies=[Depends(_bearer)],
    responses={
        401: {
            "model": Problem,
            "content": {"application/problem+json": {}},
            "description": "Missing or invalid access token",
        }
    },
    summary="Circuit state, call counts and latency percentiles per adapter endpoint",
    description=(
        "For every endpoint an adapter has called since start-up: its kind, circuit state "
        "(closed, open, half_open), calls, failed calls (time-outs included) and latency "
        "percentiles in milliseconds over the last 1,000 calls (null before the first call). "
        "`register` is the population register client (circuit `none`: it has no breaker). "
        "Any authenticated agency may ask; no personal data is returned."
    ),
)
async def adapters_health(services: ServicesDep, _agency: CurrentAgency) -> AdaptersHealth:
    rows = [
        _row(kind, endpoint, snap)
        for kind, adapter in sorted(services.adapters.items())
        for endpoint, snap in sorted(adapter.health().items())
    ]
    register: EndpointHealth | None = None
    if isinstance(services.register, _HasHealth):
        for endpoint, snap in services.register.health().items():
            register = _row("brp", endpoint, snap)
    return AdaptersHealth(adapters=rows, population_register=register)
