"""Whole-page checks of the audit log (audit.pages) on real SQLite and
PostgreSQL: a clean page yields its first ``prev_hash``, last hash and the
RFC 9162 root of its entries, a changed page is not clean, worker processes
return what this process computes, and ``verify_log`` gives the entry-by-entry
check's result whether pages are checked here, in worker processes, or not at
all (tests/property/test_audit_tamper.py generates the changes at random)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import create_engine
from structlog.testing import capture_logs

from audit import pages
from audit.log import GENESIS, AuditWriter
from audit.verify import _target, _verify, verify_log
from broker.core.errors import AuditChainBroken
from broker.db.session import Database
from tests.property.test_audit_tamper import entries
from tests.property.test_merkle import naive_mth
from tests.unit.test_audit_log import record, sql

SIZE = 37  # nine pages of four, and a partial one


@pytest.fixture
async def log(database: Database) -> Database:
    writer = AuditWriter(database)
    await writer.start()
    try:
        # Several commits: several distinct time stamps in one page.
        for start in range(0, SIZE, 5):
            await writer.append([record(n) for n in range(start, min(SIZE, start + 5))])
    finally:
        await writer.stop()
    return database


def checker(db: Database) -> tuple[pages.PageChecker, Any]:
    engine = create_engine(db.url.replace("sqlite+aiosqlite:", "sqlite:", 1))
    connection = engine.raw_connection()
    return pages.PageChecker(connection.driver_connection, db.is_sqlite), engine


def outcome(db: Database, **options: Any) -> tuple[Any, ...]:
    try:
        return ("ok", *_verify(db, chain=True, tree=True, **options))
    except AuditChainBroken as exc:
        return ("broken", str(exc), exc.index)


async def all_ways(db: Database) -> tuple[Any, ...]:
    """The entry-by-entry result, after checking every way agrees with it."""
    reference = await asyncio.to_thread(outcome, db, page=4, batch=False)
    for options in ({"workers": 0}, {"workers": 2}):
        assert await asyncio.to_thread(outcome, db, page=4, **options) == reference, options
    return reference


async def test_clean_pages_give_their_links_and_roots(log: Database) -> None:
    stored = await entries(log)
    check, engine = await asyncio.to_thread(checker, log)
    try:
        prev = GENESIS
        for start in range(0, SIZE - SIZE % 4, 4):
            result = await asyncio.to_thread(check.check, start, 4, chain=True, tree=True)
            assert result is not None
            assert result.first_prev == prev
            assert result.root == naive_mth(stored[start : start + 4])
            prev = result.last_hash
        # A page must be whole: the last, partial one is not clean.
        assert await asyncio.to_thread(check.check, 36, 4, chain=True, tree=True) is None
        only_tree = await asyncio.to_thread(check.check, 8, 8, chain=False, tree=True)
        assert only_tree == pages.PageResult("", "", naive_mth(stored[8:16]))
    finally:
        engine.dispose()


async def test_worker_processes_return_what_this_process_computes(log: Database) -> None:
    target = _target(log)
    assert target is not None
    check, engine = await asyncio.to_thread(checker, log)
    try:
        here = [
            await asyncio.to_thread(check.check, start, 4, chain=True, tree=True)
            for start in range(0, 36, 4)
        ]
    finally:
        engine.dispose()

    def elsewhere() -> list[pages.PageResult | None]:
        with pages.Workers(target, 2) as workers:
            return list(workers.results(9, 4, chain=True, tree=True))

    assert await asyncio.to_thread(elsewhere) == here


async def test_a_changed_page_is_not_clean_and_the_others_are(log: Database) -> None:
    await sql(log, "UPDATE audit_entries SET element = 'other' WHERE seq = 13")
    check, engine = await asyncio.to_thread(checker, log)
    try:
        clean = [
            await asyncio.to_thread(check.check, start, 4, chain=True, tree=True) is not None
            for start in range(0, 36, 4)
        ]
    finally:
        engine.dispose()
    assert clean == [True, True, True, False, True, True, True, True, True]
    assert await all_ways(log) == ("broken", "entry 13's indexed columns were altered", 13)


@pytest.mark.parametrize(
    ("statement", "index"),
    [
        ("UPDATE audit_entries SET entry = replace(entry, 'politie', 'polite') WHERE seq = 22", 22),
        ("DELETE FROM audit_entries WHERE seq = 8", 8),
        ("UPDATE audit_entries SET prev_hash = upper(prev_hash) WHERE seq = 12", 12),
        ('UPDATE audit_nodes SET hash = upper(hash) WHERE level = 1 AND "index" = 9', 18),
        ('UPDATE audit_nodes SET hash = upper(hash) WHERE level = 5 AND "index" = 0', 0),
        ('DELETE FROM audit_nodes WHERE level = 0 AND "index" = 35', 35),
        ("UPDATE audit_head SET size = 36", 35),  # the head no longer names the last
    ],
)
async def test_every_way_names_the_same_first_broken_entry(
    log: Database, statement: str, index: int
) -> None:
    await sql(log, statement)
    result = await all_ways(log)
    assert result[0] == "broken"
    assert result[2] == index


async def test_a_clean_log_verifies_every_way(log: Database) -> None:
    result = await all_ways(log)
    assert result[0] == "ok"
    chain, tree = await verify_log(log, workers=2)
    assert (chain, tree) == result[1:]
    assert tree.root_hash == naive_mth(await entries(log))


async def test_failing_workers_leave_the_work_to_this_process(
    log: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Workers that cannot reach the database: the result stands, with a warning.
    kind = "sqlite" if log.is_sqlite else "postgresql"
    missing = "/nonexistent/dir/audit.db" if log.is_sqlite else "postgresql://nobody@127.0.0.1:1/x"
    monkeypatch.setattr("audit.verify._target", lambda db: (kind, missing))
    reference = await asyncio.to_thread(outcome, log, page=4, batch=False)
    with capture_logs() as logs:
        assert await asyncio.to_thread(outcome, log, page=4, workers=2) == reference
    assert any(e["event"] == "audit.verify_pages_failed" for e in logs)
