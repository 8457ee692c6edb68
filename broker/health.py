"""Liveness and readiness."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from broker.deps import ServicesDep

router = APIRouter(tags=["health"])


@router.get("/health/live", summary="The process is up")
async def live() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/health/ready", summary="Database reachable and policies loaded")
async def ready(services: ServicesDep) -> dict[str, Any]:
    await services.db.ping()
    return {
        "status": "ok",
        "policy_engine": services.engine.name,
        "policy_bundle": services.engine.bundle_hash,
        "agreements": sorted(services.policy_set.agreements),
    }
