"""Signing and activation of agreement versions.

Each signatory agency signs the agreement's content hash (the canonical hash of
its folder, ``broker.policy.loader.folder_hash``) with its registered signing key,
as a JWS compact token (EdDSA, also as RFC 9864's "Ed25519", or ES256) over the
canonical JSON
``{"agreement_id", "version", "content_hash", "party", "oin", "signed_at"}``;
any JOSE library can make one. The broker enforces an agreement only while every
signatory listed in it has signed that exact hash; a changed file changes the
hash and so needs new signatures. Submissions and every change in what the
broker enforces (activation, expiry, supersession, missing signatures) are
written to the audit log.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, cast

import jwt
from sqlalchemy import Table, func, select
from sqlalchemy.exc import IntegrityError

from audit.log import AuditRecord, AuditWriter, RowUpdate
from broker.agencies.service import AgencyView
from broker.agreements.models import AgreementSignature, AgreementState
from broker.cluster.changes import AGREEMENTS, announce
from broker.core.canonical import canonical_json
from broker.core.errors import Conflict, ErrorCode, Forbidden, InvalidRequest, NotFound
from broker.crypto.keys import ACCEPTED_JWS_ALGS, signing_alg
from broker.db.session import Database
from broker.policy.loader import Agreement, PolicySet

SIGNING_ALGS = ACCEPTED_JWS_ALGS


def signing_payload(agreement: Agreement, *, party: str, oin: str, signed_at: datetime) -> bytes:
    return canonical_json(
        {
            "agreement_id": agreement.id,
            "version": agreement.version,
            "content_hash": agreement.content_hash,
            "party": party,
            "oin": oin,
            "signed_at": signed_at.astimezone(UTC).isoformat(timespec="seconds"),
        }
    )


def sign(agreement: Agreement, *, party: str, oin: str, private_jwk: dict[str, Any]) -> str:
    """What a signatory does with its own key (any JOSE library can do the same)."""
    payload = signing_payload(agreement, party=party, oin=oin, signed_at=datetime.now(UTC))
    token: str = jwt.api_jws.encode(
        payload,
        jwt.PyJWK(private_jwk).key,
        algorithm=str(private_jwk["alg"]),
        headers={"kid": private_jwk["kid"], "typ": "agreement-signature+jws"},
    )
    return token


def signatories(agreement: Agreement) -> list[dict[str, Any]]:
    entries = agreement.source.get("signatories") or []
    return [e for e in entries if isinstance(e, dict) and e.get("party")]


def _matches(entry: dict[str, Any], party: str, oin: str) -> bool:
    return entry.get("party") == party and entry.get("oin") in (None, oin)


@dataclass(frozen=True, slots=True)
class SignatoryStatus:
    party: str
    oin: str | None
    organisation: str | None
    signed_by_oin: str | None
    signed_at: datetime | None


@dataclass(frozen=True, slots=True)
class AgreementStatus:
    agreement: Agreement
    signatories: tuple[SignatoryStatus, ...]
    state: str  # in_force | unsigned | not_yet_valid | expired | status:<status>

    @property
    def fully_signed(self) -> bool:
        return all(s.signed_by_oin for s in self.signatories) and bool(self.signatories)


def effective_state(agreement: Agreement, fully_signed: bool, today: date) -> str:
    status = str(agreement.source.get("status", ""))
    if status != "active":
        return f"status:{status}"
    if today.isoformat() < str(agreement.source.get("valid_from", "")):
        return "not_yet_valid"
    if agreement.valid_until is not None and today.isoformat() > agreement.valid_until:
        return "expired"
    return "in_force" if fully_signed else "unsigned"


class AgreementService:
    def __init__(self, db: Database, audit: AuditWriter | None = None) -> None:
        self._db = db
        self._audit = audit
        self._last_states: dict[tuple[str, str], tuple[str, str]] = {}
        self.upload_lock = asyncio.Lock()  # one agreement upload at a time (upload.py)

    async def fingerprint(self) -> tuple[int, str]:
        """Changes whenever a signature is added (for reload polling)."""
        async with self._db.session() as session:
            count, latest = (
                await session.execute(select(func.count(), func.max(AgreementSignature.signed_at)))
            ).one()
        return int(count), str(latest)

    async def statuses(self, policy_set: PolicySet, today: date) -> list[AgreementStatus]:
        hashes = {a.content_hash for a in policy_set.all_versions()}
        async with self._db.session() as session:
            rows = (
                await session.scalars(
                    select(AgreementSignature).where(AgreementSignature.content_hash.in_(hashes))
                )
            ).all()
        out = []
        for agreement in policy_set.all_versions():
            mine = [
                r
                for r in rows
                if r.agreement_id == agreement.id and r.content_hash == agreement.content_hash
            ]
            entries = []
            for entry in signatories(agreement):
                match = next((r for r in mine if _matches(entry, r.party, r.signer_oin)), None)
                entries.append(
                    SignatoryStatus(
                        party=str(entry["party"]),
                        oin=entry.get("oin"),
                        organisation=entry.get("organisation"),
                        signed_by_oin=match.signer_oin if match else None,
                        signed_at=match.signed_at if match else None,
                    )
                )
            signed = bool(entries) and all(e.signed_by_oin for e in entries)
            out.append(
                AgreementStatus(
                    agreement=agreement,
                    signatories=tuple(entries),
                    state=effective_state(agreement, signed, today),
                )
            )
        return out

    async def enforce(self, policy_set: PolicySet, today: date) -> PolicySet:
        """The policy set enforcing only fully signed agreement versions; records
        every change in what is enforced in the audit log."""
        statuses = await self.statuses(policy_set, today)
        enforced = frozenset(s.agreement.content_hash for s in statuses if s.fully_signed)
        await self._record_states(statuses)
        return policy_set.with_enforced(enforced)

    async def _record_states(self, statuses: list[AgreementStatus]) -> None:
        records = []
        for s in statuses:
            key = (s.state, s.agreement.content_hash)
            version = (s.agreement.id, s.agreement.version)
            if self._last_states.get(version) == key:
                continue
            self._last_states[version] = key
            records.append(
                AuditRecord(
                    kind="agreement_state",
                    body={
                        "agreement": {
                            "id": s.agreement.id,
                            "version": s.agreement.version,
                            "hash": s.agreement.content_hash,
                        },
                        "state": s.state,
                        "signatories_signed": sum(1 for e in s.signatories if e.signed_by_oin),
                        "signatories_required": len(s.signatories),
                    },
                )
            )
        if records and self._audit is not None:
            await asyncio.gather(*(self._record_once(self._audit, r) for r in records))

    async def _record_once(self, audit: AuditWriter, record: AuditRecord) -> None:
        """Appends an ``agreement_state`` record unless the log holds that state of
        the version already (another instance, or this one before a restart,
        recorded it): the ``agreement_states`` row changes in the same commit,
        guarded by its previous value, so concurrent instances record it once."""
        agreement = record.body["agreement"]
        key = {"agreement_id": agreement["id"], "version": agreement["version"]}
        values = {"state": record.body["state"], "content_hash": agreement["hash"]}
        table = cast(Table, AgreementState.__table__)
        for _ in range(3):
            async with self._db.session() as session:
                row = await session.get(AgreementState, (key["agreement_id"], key["version"]))
            seen = None if row is None else {"state": row.state, "content_hash": row.content_hash}
            if seen == values:
                return
            now = datetime.now(UTC)
            rows: list[tuple[Table, dict[str, Any]]] = []
            updates: list[RowUpdate] = []
            if seen is None:
                rows.append((table, {**key, **values, "recorded_at": now}))
            else:
                updates.append(RowUpdate(table, {**key, **seen}, {**values, "recorded_at": now}))
            try:
                await audit.append([record], rows=rows, updates=updates)
            except Conflict:
                continue  # another instance recorded a change meanwhile: look again
            return

    async def sign_as(
        self,
        policy_set: PolicySet,
        signer: AgencyView,
        private_jwk: dict[str, Any],
        agreement_ids: list[str] | None = None,
        version: str | None = None,
    ) -> list[str]:
        """Signs (with ``private_jwk``) and submits, of every agreement (or of
        ``agreement_ids``), ``version`` (default: the version in force today, or the
        latest) when it lists ``signer`` as a signatory and ``signer`` has not
        signed it yet; returns the versions signed as ``<id> <version>``. The same
        as a signatory doing it with its own tools."""
        done = []
        today = datetime.now(UTC).date()
        statuses = await self.statuses(policy_set, today)
        for status in statuses:
            agreement = status.agreement
            if agreement_ids is not None and agreement.id not in agreement_ids:
                continue
            if agreement is not policy_set.select(agreement.id, version, today):
                continue
            mine = [e for e in signatories(agreement) if _matches(e, signer.party_type, signer.oin)]
            if not mine or any(e.signed_by_oin == signer.oin for e in status.signatories):
                continue
            jws = sign(agreement, party=signer.party_type, oin=signer.oin, private_jwk=private_jwk)
            await self.submit(jws, signer=signer, policy_set=policy_set)
            done.append(f"{agreement.id} {agreement.version}")
        return done

    async def submit(
        self, jws: str, *, signer: AgencyView, policy_set: PolicySet
    ) -> AgreementSignature:
        """Verifies a signature by ``signer`` and stores it. Raises on any fault."""
        try:
            header = jwt.get_unverified_header(jws)
        except jwt.PyJWTError as exc:
            raise InvalidRequest("Not a JWS compact token", field="jws") from exc
        key = next(
            (
                k
                for k in signer.signing_keys()
                if k.kid == header.get("kid") and k.alg == signing_alg(str(header.get("alg")))
            ),
            None,
        )
        if key is None or header.get("alg") not in SIGNING_ALGS:
            raise Forbidden("The signature is not made with a registered signing key")
        try:
            payload_bytes = jwt.api_jws.decode(
                jws, jwt.PyJWK(key.jwk).key, algorithms=[str(header["alg"])]
            )
            payload = json.loads(payload_bytes)
        except (jwt.PyJWTError, ValueError) as exc:
            raise Forbidden("The signature does not verify") from exc
        if not isinstance(payload, dict):
            raise InvalidRequest("The signed payload is not an object", field="jws")
        agreement_id = str(payload.get("agreement_id"))
        if agreement_id not in policy_set.versions:
            raise NotFound("No such agreement")
        agreement = policy_set.version(agreement_id, str(payload.get("version")))
        if agreement is None:
            agreement = policy_set.agreements[agreement_id]  # answered below: another version
        if payload.get("oin") != signer.oin or payload.get("party") != signer.party_type:
            raise Forbidden("The signature names another organisation")
        if (
            payload.get("content_hash") != agreement.content_hash
            or payload.get("version") != agreement.version
        ):
            raise InvalidRequest(
                "The signature is for another content hash or version of this agreement",
                field="jws",
                code=ErrorCode.CONFLICT,
            )
        if not any(_matches(e, signer.party_type, signer.oin) for e in signatories(agreement)):
            raise Forbidden("This organisation is not a signatory of the agreement")
        try:
            signed_at = datetime.fromisoformat(str(payload.get("signed_at")))
        except ValueError as exc:
            raise InvalidRequest("signed_at is not an ISO 8601 time", field="jws") from exc
        row = AgreementSignature(
            agreement_id=agreement.id,
            content_hash=agreement.content_hash,
            signer_oin=signer.oin,
            version=agreement.version,
            party=signer.party_type,
            kid=key.kid,
            jws=jws,
            signed_at=signed_at if signed_at.tzinfo else signed_at.replace(tzinfo=UTC),
        )
        async with self._db.session() as session:
            session.add(row)
            try:
                await session.flush()
                await announce(session, AGREEMENTS)  # the other instances reload
                await session.commit()
            except IntegrityError as exc:
                raise Conflict("This organisation signed this version already") from exc
        if self._audit is not None:
            await self._audit.append(
                [
                    AuditRecord(
                        kind="agreement_signature",
                        body={
                            "agreement": {
                                "id": agreement.id,
                                "version": agreement.version,
                                "hash": agreement.content_hash,
                            },
                            "signer": signer.oin,
                            "party": signer.party_type,
                            "kid": key.kid,
                        },
                    )
                ]
            )
        return row
