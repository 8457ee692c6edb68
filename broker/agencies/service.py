"""Agency registry: onboarding, key rotation, disabling; and a cached directory
for the hot path (lookups by OIN and by party type, refreshed every few seconds
so a change made by another instance is seen quickly). Every write announces
itself (``broker.cluster.changes``) so that running instances drop their cached
entries at once; the cache lifetime bounds the delay when an announcement is lost."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from broker.agencies.models import Agency, AgencyKey
from broker.cluster.changes import AGENCIES, announce
from broker.core.errors import Conflict, InvalidRequest, NotFound
from broker.crypto.keys import PartnerKey, parse_jwks, validate_public_jwk
from broker.db.session import Database
from broker.reference import ReferenceData

_OIN = re.compile(r"[0-9]{20}")


def validate_oin(oin: str) -> str:
    if not _OIN.fullmatch(oin):
        raise InvalidRequest("An OIN is 20 digits", field="oin")
    return oin


@dataclass(frozen=True, slots=True)
class AgencyView:
    """What the hot path needs to know about an agency (no ORM objects)."""

    oin: str
    name: str
    party_type: str
    endpoint_url: str | None
    adapter_kind: str
    active: bool
    keys: tuple[PartnerKey, ...]

    def signing_keys(self) -> tuple[PartnerKey, ...]:
        return tuple(k for k in self.keys if k.use == "sig")

    def encryption_key(self) -> PartnerKey | None:
        """The newest active encryption key: partners rotate by adding a key."""
        enc = [k for k in self.keys if k.use == "enc"]
        return enc[-1] if enc else None

    def to_json(self) -> dict[str, Any]:
        return {
            "oin": self.oin,
            "name": self.name,
            "party_type": self.party_type,
            "endpoint_url": self.endpoint_url,
            "adapter_kind": self.adapter_kind,
            "active": self.active,
            "keys": [{"kid": k.kid, "use": k.use, "alg": k.alg} for k in self.keys],
        }


def _view(agency: Agency) -> AgencyView:
    return AgencyView(
        oin=agency.oin,
        name=agency.name,
        party_type=agency.party_type,
        endpoint_url=agency.endpoint_url,
        adapter_kind=agency.adapter_kind,
        active=agency.active,
        keys=tuple(
            PartnerKey(kid=k.kid, use=k.use, alg=k.alg, jwk=dict(k.jwk))
            for k in agency.keys
            if k.active
        ),
    )


class AgencyService:
    """Writes to the registry. Used by the CLI and the demo."""

    def __init__(self, db: Database, reference: ReferenceData) -> None:
        self._db = db
        self._reference = reference

    async def add(
        self,
        *,
        oin: str,
        name: str,
        party_type: str,
        jwks: dict[str, Any],
        endpoint_url: str | None = None,
        adapter_kind: str = "partner_api",
    ) -> AgencyView:
        validate_oin(oin)
        if party_type not in self._reference.parties:
            raise InvalidRequest("Unknown party type", field="party_type")
        if not name.strip():
            raise InvalidRequest("A name is required", field="name")
        try:
            keys = parse_jwks(jwks)
        except ValueError as exc:
            raise InvalidRequest(str(exc), field="jwks") from exc
        now = datetime.now(UTC)
        async with self._db.session() as session:
            agency = Agency(
                oin=oin,
                name=name.strip(),
                party_type=party_type,
                endpoint_url=endpoint_url,
                adapter_kind=adapter_kind,
                active=True,
                created_at=now,
                updated_at=now,
            )
            agency.keys = [
                AgencyKey(kid=k.kid, use=k.use, alg=k.alg, jwk=k.jwk, active=True, added_at=now)
                for k in keys
            ]
            session.add(agency)
            try:
                await announce(session, AGENCIES)  # other instances drop their cache
                await session.commit()
            except IntegrityError as exc:
                raise Conflict("An agency with this OIN exists") from exc
        return await self.get(oin)

    async def get(self, oin: str) -> AgencyView:
        async with self._db.session() as session:
            agency = await session.get(Agency, oin)
            if agency is None:
                raise NotFound("No such agency")
            return _view(agency)

    async def list(self) -> list[AgencyView]:
        async with self._db.session() as session:
            rows = (await session.scalars(select(Agency).order_by(Agency.oin))).all()
            return [_view(a) for a in rows]

    async def set_active(self, oin: str, active: bool) -> AgencyView:
        async with self._db.session() as session:
            agency = await session.get(Agency, oin)
            if agency is None:
                raise NotFound("No such agency")
            agency.active = active
            agency.updated_at = datetime.now(UTC)
            await announce(session, AGENCIES)  # other instances drop their cache
            await session.commit()
        return await self.get(oin)

    async def set_endpoint(self, oin: str, endpoint_url: str | None) -> AgencyView:
        async with self._db.session() as session:
            agency = await session.get(Agency, oin)
            if agency is None:
                raise NotFound("No such agency")
            agency.endpoint_url = endpoint_url
            agency.updated_at = datetime.now(UTC)
            await announce(session, AGENCIES)  # other instances drop their cache
            await session.commit()
        return await self.get(oin)

    async def add_key(self, oin: str, jwk: dict[str, Any]) -> AgencyView:
        try:
            key = validate_public_jwk(jwk)
        except ValueError as exc:
            raise InvalidRequest(str(exc), field="jwk") from exc
        now = datetime.now(UTC)
        async with self._db.session() as session:
            agency = await session.get(Agency, oin)
            if agency is None:
                raise NotFound("No such agency")
            session.add(
                AgencyKey(
                    agency_oin=oin,
                    kid=key.kid,
                    use=key.use,
                    alg=key.alg,
                    jwk=key.jwk,
                    active=True,
                    added_at=now,
                )
            )
            agency.updated_at = now
            try:
                await announce(session, AGENCIES)  # other instances drop their cache
                await session.commit()
            except IntegrityError as exc:
                raise Conflict("This key id is registered already") from exc
        return await self.get(oin)

    async def remove_key(self, oin: str, kid: str) -> AgencyView:
        """Retires a key. The last active key of a use cannot be removed."""
        now = datetime.now(UTC)
        async with self._db.session() as session:
            agency = await session.get(Agency, oin)
            if agency is None:
                raise NotFound("No such agency")
            key = next((k for k in agency.keys if k.kid == kid and k.active), None)
            if key is None:
                raise NotFound("No such active key")
            if sum(1 for k in agency.keys if k.active and k.use == key.use) < 2:
                raise Conflict("Add a new key of this use before removing the last one")
            key.active = False
            key.removed_at = now
            agency.updated_at = now
            await announce(session, AGENCIES)  # other instances drop their cache
            await session.commit()
        return await self.get(oin)


class AgencyDirectory:
    """Read-through cache of agencies for the hot path."""

    def __init__(self, db: Database, *, ttl_seconds: float = 5.0) -> None:
        self._db = db
        self._ttl = ttl_seconds
        self._by_oin: dict[str, tuple[float, AgencyView | None]] = {}
        self._by_party: dict[str, tuple[float, list[AgencyView]]] = {}

    async def get(self, oin: str) -> AgencyView | None:
        now = time.monotonic()
        hit = self._by_oin.get(oin)
        if hit is not None and now - hit[0] < self._ttl:
            return hit[1]
        async with self._db.session() as session:
            agency = await session.get(Agency, oin)
            view = _view(agency) if agency is not None else None
        self._by_oin[oin] = (now, view)
        return view

    async def providers_of(self, party_type: str) -> list[AgencyView]:
        now = time.monotonic()
        hit = self._by_party.get(party_type)
        if hit is not None and now - hit[0] < self._ttl:
            return hit[1]
        async with self._db.session() as session:
            rows = (
                await session.scalars(
                    select(Agency).where(Agency.party_type == party_type, Agency.active)
                )
            ).all()
            views = [_view(a) for a in rows]
        for v in views:
            self._by_oin[v.oin] = (now, v)
        self._by_party[party_type] = (now, views)
        return views

    def invalidate(self, oin: str | None = None) -> None:
        self._by_party.clear()
        if oin is None:
            self._by_oin.clear()
        else:
            self._by_oin.pop(oin, None)
