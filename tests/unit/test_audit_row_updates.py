"""Rows and guarded updates committed with audit entries (SQLite and PostgreSQL):
a unit whose own rows conflict fails alone with a Conflict; the other units of
the same group commit are written, and the chain stays whole."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest
from sqlalchemy import Table, func, select
from structlog.testing import capture_logs

from audit.log import AuditWriter, RowUpdate
from audit.verify import verify_chain
from broker.core.errors import Conflict
from broker.db.session import Database
from broker.exchange.models import Exchange
from tests.unit.test_audit_log import exchange_row, record, writer  # noqa: F401 - fixture

TABLE = cast(Table, Exchange.__table__)


async def rows(db: Database) -> list[tuple[str, int]]:
    async with db.session() as session:
        result = await session.execute(
            select(Exchange.id, Exchange.released_count).order_by(Exchange.id)
        )
        return [(r[0], r[1]) for r in result]


async def test_a_conflicting_unit_fails_alone(
    database: Database,
    writer: AuditWriter,  # noqa: F811
) -> None:
    first = record(1)
    assert first.exchange_id is not None
    await writer.append([first], rows=[(TABLE, exchange_row(first.exchange_id))])

    def unit(n: int, row: dict[str, Any]) -> Any:
        return writer.append([record(n)], rows=[(TABLE, row)])

    second = record(2)
    assert second.exchange_id is not None
    with capture_logs():
        results = await asyncio.gather(
            unit(3, exchange_row(first.exchange_id)),  # duplicate key
            unit(2, exchange_row(second.exchange_id)),
            return_exceptions=True,
        )
    assert isinstance(results[0], Conflict)
    assert results[1] == [1]
    assert [r[0] for r in await rows(database)] == sorted([first.exchange_id, second.exchange_id])
    assert (await verify_chain(database)).size == 2


async def test_a_guarded_update_applies_once(
    database: Database,
    writer: AuditWriter,  # noqa: F811
) -> None:
    first = record(1)
    assert first.exchange_id is not None
    await writer.append([first], rows=[(TABLE, exchange_row(first.exchange_id))])
    guard = RowUpdate(
        TABLE,
        where={"id": first.exchange_id, "case_reference": None},
        values={
            "case_reference": "done",
            "released_count": 0,
        },
    )
    assert await writer.append([record(2)], updates=[guard]) == [1]
    assert await rows(database) == [(first.exchange_id, 0)]
    with capture_logs(), pytest.raises(Conflict):
        await writer.append([record(3)], updates=[guard])
    async with database.session() as session:
        count = await session.scalar(select(func.count()).select_from(Exchange))
    assert count == 1
    assert (await verify_chain(database)).size == 2
