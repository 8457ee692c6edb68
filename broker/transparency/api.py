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

from fastapi import APIRouter, Depends, Query
from fastapi.responses import PlainTextResponse
from fastapi.security import HTTPBearer
from pydantic import BaseModel, ConfigDict, Field

from audit.tree import consistency_proof, inclusion_proof
from broker.core.errors import Forbidden
from broker.deps import CurrentAgency, ServicesDep, require_json
from broker.exchange.schemas import problem_responses
from broker.transparency.witnesses import WitnessService

router = APIRouter(prefix="/v1/audit", tags=["audit transparency"])

MAX_SIZE = 2**62

_DESCRIPTIONS = {
    401: "Missing or invalid access token",
    403: "kid names no registered Ed25519 signing key, or the cosignature does not verify",
    404: "No checkpoint has that many cosignatures yet",
    409: "This agency cosigned a checkpoint of this size already",
    415: "Request body is not application/json",
    422: "Invalid or out-of-range parameters (field names the fault)",
    503: "Database unavailable",
}


def _problems(*statuses: int) -> dict[int | str, dict[str, object]]:
    return problem_responses(_DESCRIPTIONS, *statuses, 503)


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


_bearer = HTTPBearer(auto_error=False, description="Access token from /oauth/token")


def _witnesses(services: ServicesDep) -> WitnessService:
    return WitnessService(
        services.db, services.audit, services.keyring, services.settings.log_origin
    )


class CosignatureIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    checkpoint: str = Field(
        max_length=1024,
        description="The checkpoint body the agency verified (origin, size and root lines, "
        "each ending in a newline); a whole signed note is accepted, its signatures ignored",
    )
    kid: str = Field(max_length=128, description="The registered Ed25519 signing key used")
    signature: str = Field(
        max_length=128,
        description="C2SP tlog-cosignature (cosignature/v1): base64(key id || 8-byte big-endian "
        "Unix time || Ed25519 signature over 'cosignature/v1\\ntime <time>\\n' + body); "
        "key id = SHA-256(OIN || 0x0A || 0x04 || public key)[:4]",
    )


class CosignatureOut(BaseModel):
    tree_size: int
    root_hash: Hash
    agency: str = Field(description="The cosigning agency's OIN (the signature line's name)")
    timestamp: int = Field(description="The cosignature's time, Unix seconds")


@router.post(
    "/checkpoint/cosignatures",
    status_code=201,
    response_model=CosignatureOut,
    responses=_problems(401, 403, 409, 415, 422),
    dependencies=[Depends(require_json), Depends(_bearer)],
    summary="Cosign a checkpoint as a witness (C2SP tlog-cosignature, agency's Ed25519 key)",
)
async def cosign(
    body: CosignatureIn, principal: CurrentAgency, services: ServicesDep
) -> CosignatureOut:
    agency = await services.directory.get(principal.oin)
    if agency is None:
        raise Forbidden("The agency is not registered")
    stored = await _witnesses(services).submit(
        agency=agency, checkpoint=body.checkpoint, kid=body.kid, signature=body.signature
    )
    return CosignatureOut(
        tree_size=stored.tree_size,
        root_hash=_b64(stored.root_hash),
        agency=stored.agency_oin,
        timestamp=stored.timestamp,
    )


@router.get(
    "/checkpoint/cosigned",
    response_class=PlainTextResponse,
    responses={
        200: {
            "content": {"text/plain": {"schema": {"type": "string"}}},
            "description": "The newest checkpoint cosigned by at least `witnesses` agencies: "
            "the broker-signed note with one cosignature/v1 line per cosigning agency",
        },
        **_problems(404, 422),
    },
    summary="The newest checkpoint vouched for by witnesses (public)",
)
async def cosigned_checkpoint(
    services: ServicesDep, witnesses: Annotated[int, Query(ge=1, le=10_000)] = 1
) -> PlainTextResponse:
    text = await _witnesses(services).cosigned(witnesses)
    return PlainTextResponse(
        text,
        media_type="text/plain; charset=utf-8",
        headers={"Cache-Control": "no-store", "X-Verifier-Key": services.checkpoints.verifier_key},
    )
