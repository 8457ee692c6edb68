"""Destroying retention keys whose period plus retention has ended.

Each destruction is one audit commit: a ``retention.key_destroyed`` entry (key
id, retention class, period, when it was due; no personal data) together with
the guarded update that erases the wrapped key (only while it is not destroyed
yet, so two instances never both record one destruction). Runs from ``broker
retention run`` and, every ``BROKER_RETENTION_RUN_SECONDS``, inside the app.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import cast

import structlog
from sqlalchemy import Table, select, text, update
from sqlalchemy.exc import SQLAlchemyError

from audit.log import AuditRecord, AuditWriter, RowUpdate
from broker.core.clock import Clock, system_clock
from broker.core.errors import Conflict
from broker.core.periodic import Periodic
from broker.db.session import Database
from broker.retention.models import RetentionKey
from broker.retention.vault import RetentionVault

log = structlog.get_logger("retention")

DESTROYED_KIND = "retention.key_destroyed"
_TABLE = cast(Table, RetentionKey.__table__)


@dataclass(frozen=True, slots=True)
class KeyState:
    id: str
    retention: str
    period: str
    period_end: datetime
    destroy_after: datetime
    destroyed_at: datetime | None
    destroyed_seq: int | None


class RetentionService:
    def __init__(
        self,
        db: Database,
        audit: AuditWriter,
        vault: RetentionVault,
        *,
        interval: float = 0.0,
        clock: Clock = system_clock,
    ) -> None:
        self._db = db
        self._audit = audit
        self.vault = vault
        self._clock = clock
        self._periodic = Periodic("retention", self.run, interval)

    async def keys(self) -> list[KeyState]:
        async with self._db.session() as session:
            rows = (
                await session.scalars(
                    select(RetentionKey).order_by(RetentionKey.destroy_after, RetentionKey.id)
                )
            ).all()
        return [
            KeyState(
                r.id,
                r.retention,
                r.period,
                r.period_end,
                r.destroy_after,
                r.destroyed_at,
                r.destroyed_seq,
            )
            for r in rows
        ]

    async def due(self, at: datetime | None = None) -> list[KeyState]:
        """The keys not destroyed yet whose period plus retention ended by ``at``.
        A key whose period has not ended now (records are still written under it)
        is never due, whatever ``at`` says."""
        now = self._clock()
        at = at or now
        return [
            k
            for k in await self.keys()
            if k.destroyed_at is None and k.destroy_after <= at and k.period_end <= now
        ]

    async def run(self, at: datetime | None = None) -> list[KeyState]:
        """Destroys every key due at ``at`` (default: now); returns those this
        call destroyed (a key another instance destroys meanwhile is skipped)."""
        destroyed: list[KeyState] = []
        for key in await self.due(at):
            now = self._clock()
            record = AuditRecord(
                kind=DESTROYED_KIND,
                body={
                    "key_id": key.id,
                    "retention": key.retention,
                    "period": key.period,
                    "destroy_after": key.destroy_after.isoformat(),
                    "destroyed_at": now.isoformat(),
                },
            )
            change = RowUpdate(
                _TABLE,
                where={"id": key.id, "destroyed_at": None},
                values={"wrapped": None, "destroyed_at": now},
            )
            try:
                [seq] = await self._audit.append([record], updates=[change])
            except Conflict:
                continue
            self.vault.forget(key.id)
            async with self._db.write_sessions() as session:
                await session.execute(
                    update(RetentionKey).where(RetentionKey.id == key.id).values(destroyed_seq=seq)
                )
                await session.commit()
            log.info("retention.key_destroyed", key_id=key.id, audit_seq=seq)
            destroyed.append(
                KeyState(
                    key.id, key.retention, key.period, key.period_end, key.destroy_after, now, seq
                )
            )
        if destroyed and not self._db.is_sqlite:
            await self._vacuum()
        return destroyed

    async def _vacuum(self) -> None:
        """Lets PostgreSQL reclaim the dead row versions that still hold the
        erased wrapped keys (VACUUM runs outside a transaction)."""
        try:
            engine = self._db.engine.execution_options(isolation_level="AUTOCOMMIT")
            async with engine.connect() as conn:
                await conn.execute(text("VACUUM retention_keys"))
        except SQLAlchemyError as exc:  # the destruction stands; the space is reclaimed later
            log.warning("retention.vacuum_failed", error=type(exc).__name__)

    # ---------------------------------------------------------- periodic
    def start(self) -> None:
        self._periodic.start()

    async def stop(self) -> None:
        await self._periodic.stop()
