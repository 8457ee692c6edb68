"""Change announcements between broker instances that share one database.

Shared state that instances cache or derive (the agreement files and signatures
behind the compiled policy set, the agency directory) has a version row in
``change_versions``. Whoever changes that state bumps the row in the same
transaction (``announce``); on PostgreSQL the bump also sends ``NOTIFY
broker_changes, '<topic>:<version>'``, which PostgreSQL delivers only when the
transaction commits. Every instance runs a ``ChangeFeed``: a ``LISTEN``
connection (PostgreSQL) for changes within milliseconds, and a cheap poll of
the version rows (every ``poll_seconds``) that catches whatever a lost
connection missed. Subscribers are called once per new version they have not
seen, so the two paths never double the work.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import cast

import psycopg
import structlog
from sqlalchemy import Table, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from broker.cluster.models import ChangeVersion
from broker.core.errors import BrokerError
from broker.db.session import Database

CHANNEL = "broker_changes"
AGREEMENTS = "agreements"  # agreement uploads and signatures: the policy set
AGENCIES = "agencies"  # the agency registry: activation, keys, endpoints
LISTEN_RETRY_SECONDS = 1.0
LISTEN_CONNECT_TIMEOUT = 5

log = structlog.get_logger("cluster")

_TABLE = cast(Table, ChangeVersion.__table__)


async def announce(session: AsyncSession | AsyncConnection, topic: str) -> int:
    """Bumps ``topic``'s version inside the caller's transaction (and queues the
    NOTIFY on PostgreSQL); returns the new version. Commit is the caller's."""
    bind = session.bind if isinstance(session, AsyncSession) else session
    dialect = bind.dialect.name if bind is not None else "sqlite"
    upsert = pg_insert(_TABLE) if dialect == "postgresql" else sqlite_insert(_TABLE)
    now = datetime.now(UTC)
    stmt = (
        upsert.values(topic=topic, version=1, changed_at=now)
        .on_conflict_do_update(
            index_elements=[_TABLE.c.topic],
            set_={"version": _TABLE.c.version + 1, "changed_at": now},
        )
        .returning(_TABLE.c.version)
    )
    version = int((await session.execute(stmt)).scalar_one())
    if dialect == "postgresql":
        await session.execute(
            text("SELECT pg_notify(:channel, :payload)"),
            {"channel": CHANNEL, "payload": f"{topic}:{version}"},
        )
    return version


def listen_url(db: Database) -> str | None:
    """The libpq URL of the database for a LISTEN connection; None on SQLite."""
    if db.is_sqlite:
        return None
    return db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)


class ChangeFeed:
    """Tells this instance's subscribers when another instance (or this one)
    changed shared state: at once by LISTEN on PostgreSQL, and by polling."""

    def __init__(self, db: Database, *, poll_seconds: float = 1.0) -> None:
        self._db = db
        self._poll_seconds = poll_seconds
        self._seen: dict[str, int] = {}
        self._subscribers: dict[str, list[Callable[[], None]]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self.listening = False

    def subscribe(self, topic: str, callback: Callable[[], None]) -> None:
        """``callback`` (quick, not async) runs once per new version of ``topic``."""
        self._subscribers.setdefault(topic, []).append(callback)

    async def versions(self) -> dict[str, int]:
        async with self._db.session() as session:
            rows = (await session.execute(select(_TABLE.c.topic, _TABLE.c.version))).all()
        return {str(topic): int(version) for topic, version in rows}

    async def start(self) -> None:
        """Takes the current versions as seen and starts listening and polling."""
        if self._tasks or self._poll_seconds <= 0:
            return
        self._seen = await self.versions()
        self._tasks.append(asyncio.create_task(self._poll(), name="change-poll"))
        url = listen_url(self._db)
        if url is not None:
            self._tasks.append(asyncio.create_task(self._listen(url), name="change-listen"))

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _seen_version(self, topic: str, version: int, *, polled: bool = False) -> None:
        """A notification names a version: only a newer one counts. A poll reads
        the row: any other value counts (a database restored from a backup)."""
        seen = self._seen.get(topic, 0)
        if version == seen or (version < seen and not polled):
            return
        self._seen[topic] = version
        for callback in self._subscribers.get(topic, ()):
            try:
                callback()
            except Exception:
                log.exception("cluster.subscriber_failed", topic=topic)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self._poll_seconds)
            try:
                current = await self.versions()
            except BrokerError as exc:  # the database is briefly unavailable: next round
                log.warning("cluster.poll_failed", error=exc.diagnostics())
                continue
            for topic, version in current.items():
                self._seen_version(topic, version, polled=True)

    async def _listen(self, url: str) -> None:
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    url, autocommit=True, connect_timeout=LISTEN_CONNECT_TIMEOUT
                ) as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    self.listening = True
                    async for notify in conn.notifies():
                        topic, _, version = notify.payload.rpartition(":")
                        if topic and version.isdigit():
                            self._seen_version(topic, int(version))
            except (psycopg.Error, OSError, SQLAlchemyError) as exc:
                log.warning("cluster.listen_failed", error=type(exc).__name__)
            self.listening = False
            await asyncio.sleep(LISTEN_RETRY_SECONDS)
