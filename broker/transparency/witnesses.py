"""Witness cosignatures of the audit log's checkpoints (C2SP tlog-cosignature).

An agency that has checked a checkpoint (its signature, and consistency with
the last one it saw) cosigns it: an Ed25519 signature with its registered
signing key over ``cosignature/v1\\ntime <unix seconds>\\n`` + the checkpoint
body. Its signature line is ``— <OIN> base64(key id || 8-byte big-endian time
|| signature)``, the key id being SHA-256(OIN || 0x0A || 0x04 || public key)[:4].
The broker accepts a cosignature only over a checkpoint it issued (the root of
its tree at that size) and stores it with an audit entry; it serves the newest
checkpoint cosigned by enough agencies with the cosignature lines appended.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import cast

from sqlalchemy import Table, func, select

from audit import verifier
from audit.log import AuditRecord, AuditWriter
from audit.tree import root_at, tree_head
from broker.agencies.service import AgencyView
from broker.core.errors import Forbidden, InvalidRequest, NotFound
from broker.crypto.keys import BrokerKeyring
from broker.db.session import Database
from broker.transparency.checkpoint import sign_checkpoint_async
from broker.transparency.models import CheckpointCosignature

MAX_FUTURE_SKEW_SECONDS = 300


def ed25519_public_key(jwk: dict[str, object]) -> bytes | None:
    """The raw key of an Ed25519 JWK, None for any other key."""
    if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
        return None
    x = str(jwk.get("x", ""))
    try:
        raw = base64.urlsafe_b64decode(x + "=" * (-len(x) % 4))
    except (ValueError, binascii.Error):
        return None
    return raw if len(raw) == 32 else None


def cosignature_line(oin: str, signature_b64: str) -> str:
    return f"\u2014 {oin} {signature_b64}\n"


@dataclass(frozen=True, slots=True)
class StoredCosignature:
    tree_size: int
    root_hash: bytes
    agency_oin: str
    timestamp: int


async def witness_rows(db: Database) -> Sequence[CheckpointCosignature]:
    """Every stored cosignature, by size then agency."""
    t = CheckpointCosignature
    async with db.session() as session:
        return (await session.scalars(select(t).order_by(t.tree_size, t.agency_oin))).all()


class WitnessService:
    def __init__(
        self, db: Database, audit: AuditWriter, keyring: BrokerKeyring, origin: str
    ) -> None:
        self._db = db
        self._audit = audit
        self._keyring = keyring
        self.origin = origin

    async def submit(
        self, *, agency: AgencyView, checkpoint: str, kid: str, signature: str
    ) -> StoredCosignature:
        """Verifies and stores ``agency``'s cosignature. Raises InvalidRequest (not
        a checkpoint this broker issued), Forbidden (key or signature) or Conflict."""
        body = checkpoint.partition("\n\n")[0] + "\n" if "\n\n" in checkpoint else checkpoint
        try:
            cp = verifier.parse_checkpoint_body(body)
        except verifier.VerificationError as exc:
            raise InvalidRequest(f"not a checkpoint body: {exc}", field="checkpoint") from exc
        if cp.origin != self.origin or cp.extensions:
            raise InvalidRequest("not a checkpoint of this log", field="checkpoint")
        if cp.size > (await tree_head(self._db)).size or await root_at(self._db, cp.size) != (
            cp.root_hash
        ):
            raise InvalidRequest("the broker never issued this checkpoint", field="checkpoint")
        key = next((k for k in agency.signing_keys() if k.kid == kid), None)
        public = ed25519_public_key(key.jwk) if key is not None else None
        if key is None or public is None:
            raise Forbidden("kid names no registered Ed25519 signing key of this agency")
        try:
            blob = base64.b64decode(signature, validate=True)
        except (ValueError, binascii.Error) as exc:
            raise InvalidRequest("signature is not base64", field="signature") from exc
        if len(blob) != 76:
            raise InvalidRequest(
                "signature is base64(key id || 8-byte time || Ed25519 signature)",
                field="signature",
            )
        canonical = base64.b64encode(blob).decode("ascii")
        timestamp = int.from_bytes(blob[4:12], "big")
        if timestamp > time.time() + MAX_FUTURE_SKEW_SECONDS:
            raise InvalidRequest("the cosignature's time is in the future", field="signature")
        note = body + "\n" + cosignature_line(agency.oin, canonical)
        try:
            verifier.verify_cosignature(note, key_name=agency.oin, public_key=public)
        except verifier.VerificationError as exc:
            raise Forbidden(f"the cosignature does not verify: {exc}") from exc
        row = {
            "tree_size": cp.size,
            "agency_oin": agency.oin,
            "origin": cp.origin,
            "root_hash": cp.root_hash.hex(),
            "kid": kid,
            "timestamp": timestamp,
            "signature": canonical,
            "received_at": datetime.now(UTC),
        }
        await self._audit.append(
            [
                AuditRecord(
                    kind="checkpoint_cosigned",
                    body={
                        "agency": agency.oin,
                        "kid": kid,
                        "tree_size": cp.size,
                        "root_hash": cp.root_hash.hex(),
                        "timestamp": timestamp,
                    },
                )
            ],
            rows=[(cast(Table, CheckpointCosignature.__table__), row)],
        )
        return StoredCosignature(cp.size, cp.root_hash, agency.oin, timestamp)

    async def cosigned(self, min_witnesses: int = 1) -> str:
        """The broker-signed note of the newest checkpoint cosigned by at least
        ``min_witnesses`` agencies, with their cosignature lines appended."""
        t = CheckpointCosignature
        async with self._db.session() as session:
            size = await session.scalar(
                select(t.tree_size)
                .where(t.origin == self.origin)
                .group_by(t.tree_size)
                .having(func.count(t.agency_oin) >= min_witnesses)
                .order_by(t.tree_size.desc())
                .limit(1)
            )
            if size is None:
                raise NotFound(f"No checkpoint has {min_witnesses} cosignature(s) yet")
            rows = (
                await session.scalars(select(t).where(t.tree_size == size).order_by(t.agency_oin))
            ).all()
        root = bytes.fromhex(rows[0].root_hash)
        note = await sign_checkpoint_async(self._keyring, self.origin, int(size), root)
        return note + "".join(cosignature_line(r.agency_oin, r.signature) for r in rows)
