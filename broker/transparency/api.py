"""Public HTTP routes of the verifiable audit log.

These routes need no access token: they reveal only tree sizes and SHA-256
hashes (roots, subtree hashes, leaf hashes), never an entry, a subject, a
payload or who asked for what. An agency keeps checkpoints it has seen and asks
for consistency proofs between them (the log only grows) and for inclusion
proofs of entries it holds (audit/verifier.py checks both offline).
"""

from __future__ import annotations

import base64
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, Field

from audit.tree import consistency_proof, inclusion_proof
from broker.deps import ServicesDep
from broker.exchange.schemas import Problem

router = APIRouter(prefix="/v1/audit", tags=["audit transparency"])

MAX_SIZE = 2**62

_DESCRIPTIONS = {
    422: "Invalid or out-of-range parameters (field names the fault)",
    503: "Database unavailable",
}


def _problems(*statuses: int) -> dict[int | str, dict[str, object]]:
    return {
        status: {
            "model": Problem,
            "content": {"application/problem+json": {}},
            "description": _DESCRIPTIONS[status],
        }
        for status in (*statuses, 503)
    }


def _b64(h: bytes) -> str:
    return base64.b64encode(h).decode("ascii")


Hash = Annotated[str, Field(description="A SHA-256 hash, base64 (standard alphabet, padded)")]


class InclusionProofOut(BaseModel):
    index: int = Field(description="The entry's position (leaf index, = its seq)")
    size: int = Field(description="The tree size the proof is for")
    leaf_hash: Hash = Field(description="SHA-256(0x00 || entry bytes)")
    root_hash: Hash = Field(description="The RFC 9162 root of the first `size` entries")
    hashes: list[Hash] = Field(description="The inclusion path (RFC 9162 2.1.3), deepest first")


class ConsistencyProofOut(BaseModel):
    from_: int = Field(alias="from", description="The older tree size")
    to: int = Field(description="The newer tree size")
    from_root: Hash
    to_root: Hash
    hashes: list[Hash] = Field(description="The consistency proof (RFC 9162 2.1.4)")

    model_config = {"populate_by_name": True}


@router.get(
    "/checkpoint",
    response_class=PlainTextResponse,
    responses={
        200: {
            "content": {"text/plain": {"schema": {"type": "string"}}},
            "description": "The latest signed checkpoint (C2SP tlog-checkpoint signed note); "
            "at most one second behind the last append",
        },
        **_problems(),
    },
    summary="The latest signed checkpoint of the audit log (public)",
)
async def checkpoint(services: ServicesDep) -> PlainTextResponse:
    text = await services.checkpoints.latest()
    return PlainTextResponse(
        text,
        media_type="text/plain; charset=utf-8",
        headers={"Cache-Control": "no-store", "X-Verifier-Key": services.checkpoints.verifier_key},
    )


@router.get(
    "/proof/inclusion",
    response_model=InclusionProofOut,
    responses=_problems(422),
    summary="RFC 9162 inclusion proof of entry `index` in the tree of `size` entries (public)",
)
async def inclusion(
    services: ServicesDep,
    index: Annotated[int, Query(ge=0, lt=MAX_SIZE)],
    size: Annotated[int, Query(ge=1, le=MAX_SIZE)],
) -> InclusionProofOut:
    proof = await inclusion_proof(services.db, index, size)
    return InclusionProofOut(
        index=proof.index,
        size=proof.size,
        leaf_hash=_b64(proof.leaf_hash),
        root_hash=_b64(proof.root_hash),
        hashes=[_b64(h) for h in proof.hashes],
    )


@router.get(
    "/proof/consistency",
    response_model=ConsistencyProofOut,
    response_model_by_alias=True,
    responses=_problems(422),
    summary="RFC 9162 consistency proof between tree sizes `from` and `to` (public)",
)
async def consistency(
    services: ServicesDep,
    from_: Annotated[int, Query(alias="from", ge=0, le=MAX_SIZE)],
    to: Annotated[int, Query(ge=0, le=MAX_SIZE)],
) -> ConsistencyProofOut:
    proof = await consistency_proof(services.db, from_, to)
    return ConsistencyProofOut(
        from_=proof.old_size,
        to=proof.new_size,
        from_root=_b64(proof.old_root),
        to_root=_b64(proof.new_root),
        hashes=[_b64(h) for h in proof.hashes],
    )
