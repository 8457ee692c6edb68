"""Database engine and sessions (async SQLAlchemy 2) for SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from broker.core.errors import StorageUnavailable


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL with synchronous=FULL: concurrent readers, and every commit is durable.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def _sqlite_autocommit_driver(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy's "begin" event issue the BEGIN itself (see _begin_immediate).
    dbapi_connection.isolation_level = None


def _begin_immediate(conn: Any) -> None:
    # A writer takes SQLite's write lock when its transaction starts, so a
    # read-then-write transaction never fails on a snapshot another process moved.
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def _json_text(value: Any) -> str:
    return orjson.dumps(value).decode("utf-8")


class Database:
    """Owns the async engine; hands out sessions; wraps driver errors."""

    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        kwargs: dict[str, Any] = {
            "pool_pre_ping": not self.is_sqlite,
            "json_serializer": _json_text,
            "json_deserializer": orjson.loads,
        }
        if not self.is_sqlite:
            kwargs.update(pool_size=pool_size, max_overflow=pool_size)
        self.engine: AsyncEngine = create_async_engine(url, **kwargs)
        if self.is_sqlite:
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        # Serialised writers (the audit log) use their own engine: on SQLite its
        # transactions begin IMMEDIATE; on PostgreSQL it is the same engine.
        if self.is_sqlite:
            self.write_engine = create_async_engine(
                url, json_serializer=_json_text, json_deserializer=orjson.loads
            )
            event.listen(self.write_engine.sync_engine, "connect", _sqlite_pragmas)
            event.listen(self.write_engine.sync_engine, "connect", _sqlite_autocommit_driver)
            event.listen(self.write_engine.sync_engine, "begin", _begin_immediate)
        else:
            self.write_engine = self.engine
        self.write_sessions = async_sessionmaker(self.write_engine, expire_on_commit=False)
        self._sync_write_engine: Engine | None = None

    @property
    def sync_write_engine(self) -> Engine:
        """A blocking engine for the audit writer's own thread: one transaction
        there costs one hand-over between threads instead of one per statement.
        Same durability settings as ``write_engine``; created on first use."""
        if self._sync_write_engine is None:
            kwargs: dict[str, Any] = {
                "json_serializer": _json_text,
                "json_deserializer": orjson.loads,
            }
            if self.is_sqlite:
                engine = create_engine(
                    self.url.replace("sqlite+aiosqlite:", "sqlite:", 1), **kwargs
                )
                event.listen(engine, "connect", _sqlite_pragmas)
                event.listen(engine, "connect", _sqlite_autocommit_driver)
                event.listen(engine, "begin", _begin_immediate)
            else:
                engine = create_engine(
                    self.url, pool_size=1, max_overflow=1, pool_pre_ping=True, **kwargs
                )
            self._sync_write_engine = engine
        return self._sync_write_engine

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A session whose database errors surface as StorageUnavailable."""
        try:
            async with self.sessions() as session:
                yield session
        except SQLAlchemyError as exc:
            raise StorageUnavailable() from exc
        except OSError as exc:
            raise StorageUnavailable() from exc

    async def ping(self) -> None:
        try:
            async with self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except (SQLAlchemyError, OSError) as exc:
            raise StorageUnavailable() from exc

    async def dispose(self) -> None:
        await self.engine.dispose()
        if self.write_engine is not self.engine:
            await self.write_engine.dispose()
        if self._sync_write_engine is not None:
            self._sync_write_engine.dispose()
            self._sync_write_engine = None
