"""The audit log on real SQLite and PostgreSQL: group-committed appends from many
tasks form one contiguous hash chain, and any direct change to the stored rows is
found by verify_chain at the right index."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import random
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select, text
from structlog.testing import capture_logs

from audit.log import GENESIS, AuditRecord, AuditWriter
from audit.models import AuditEntry, AuditHead
from audit.verify import verify_chain, verify_log
from broker.core.errors import AuditChainBroken, AuditUnavailable
from broker.db.session import Database
from broker.exchange.models import Exchange
from broker.settings import Settings
from tests.conftest import clean


def record(n: int, *, subject: str | None = None, outcome: str | None = "permit") -> AuditRecord:
    """A decision-like record whose indexed columns agree with its body."""
    exchange_id = str(uuid.UUID(int=n))
    subject = subject or f"psn:{n:040x}"
    return AuditRecord(
        kind="decision",
        body={
            "n": n,
            "exchange_id": exchange_id,
            "subject": subject,
            "element": "politie.incidenten",
            "outcome": outcome,
        },
        exchange_id=exchange_id,
        subject_key=subject,
        element="politie.incidenten",
        outcome=outcome,
    )


def exchange_row(exchange_id: str) -> dict[str, Any]:
    return {
        "id": exchange_id,
        "request_id": "req-1",
        "created_at": datetime.now(UTC),
        "requester_oin": "00000001800006185000",
        "recipient_party": "veilig_thuis",
        "provider_oin": "00000001800014844000",
        "provider_party": "politie",
        "agreement_id": "a",
        "agreement_version": "1",
        "purpose_id": "p",
        "case_reference": None,
        "decision_id": exchange_id,
        "item_count": 1,
        "allowed_count": 1,
        "released_count": 1,
    }


@pytest.fixture
async def writer(database: Database) -> AsyncIterator[AuditWriter]:
    w = AuditWriter(database)
    await w.start()
    yield w
    await w.stop()


async def sql(db: Database, statement: str, **params: Any) -> None:
    async with db.engine.begin() as conn:
        await conn.execute(text(statement), params)


async def count(db: Database, model: Any) -> int:
    async with db.session() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def fill(writer: AuditWriter, n: int) -> None:
    await writer.append([record(i) for i in range(n)])


# ----------------------------------------------------------------- appending


async def test_empty_log_verifies(database: Database, writer: AuditWriter) -> None:
    summary = await verify_chain(database)
    assert (summary.size, summary.head_hash) == (0, GENESIS)


@pytest.mark.parametrize("batch_max", [512, 3])
async def test_concurrent_appends_form_one_contiguous_chain(
    database: Database, batch_max: int
) -> None:
    writer = AuditWriter(database, batch_max=batch_max)
    await writer.start()
    rng = random.Random(batch_max)
    sizes = [rng.randint(1, 4) for _ in range(50)]
    units = [[record(100 * u + i) for i in range(size)] for u, size in enumerate(sizes)]
    try:
        results = await asyncio.gather(*(writer.append(unit) for unit in units))
    finally:
        await writer.stop()

    total = sum(sizes)
    flat = [seq for seqs in results for seq in seqs]
    assert sorted(flat) == list(range(total))
    for seqs, size in zip(results, sizes, strict=True):
        # A unit's records are committed together, one after the other.
        assert seqs == list(range(seqs[0], seqs[0] + size))

    summary = await verify_chain(database)
    assert summary.size == total
    async with database.session() as session:
        head = await session.get(AuditHead, 1)
        rows = (await session.scalars(select(AuditEntry).order_by(AuditEntry.seq))).all()
    assert head is not None
    assert (head.size, head.head_hash) == (total, summary.head_hash)
    assert rows[0].prev_hash == GENESIS
    for before, after in itertools.pairwise(rows):
        assert after.prev_hash == before.entry_hash
    for row in rows:
        assert hashlib.sha256(row.entry.encode()).hexdigest() == row.entry_hash
    # Every unit's records landed at its own sequence numbers.
    by_seq = {row.seq: row for row in rows}
    for unit, seqs in zip(units, results, strict=True):
        assert [by_seq[s].subject_key for s in seqs] == [r.subject_key for r in unit]


async def test_appends_continue_the_chain_across_writers(database: Database) -> None:
    for round_ in range(3):
        writer = AuditWriter(database)
        await writer.start()
        try:
            seqs = await writer.append([record(round_ * 10), record(round_ * 10 + 1)])
        finally:
            await writer.stop()
        assert seqs == [2 * round_, 2 * round_ + 1]
    assert (await verify_chain(database)).size == 6


async def test_rows_are_committed_with_the_entries(database: Database, writer: AuditWriter) -> None:
    rec = record(7)
    assert rec.exchange_id is not None
    await writer.append([rec], rows=[(Exchange.__table__, exchange_row(rec.exchange_id))])
    assert await count(database, Exchange) == 1
    assert (await verify_chain(database)).size == 1


async def test_append_after_stop_is_refused(database: Database) -> None:
    writer = AuditWriter(database)
    with pytest.raises(AuditUnavailable):
        await writer.append([record(0)])  # never started
    await writer.start()
    assert await writer.append([record(0)]) == [0]
    await writer.stop()
    with pytest.raises(AuditUnavailable):
        await writer.append([record(1)])
    assert await count(database, AuditEntry) == 1


async def test_commit_failure_fails_every_caller_and_writes_nothing(
    database: Database, writer: AuditWriter
) -> None:
    await fill(writer, 3)
    before = await verify_chain(database)
    await sql(database, "ALTER TABLE audit_head RENAME TO audit_head_offline")
    try:
        with capture_logs():  # keeps the logged tracebacks out of the console (and fast)
            outcomes = await asyncio.gather(
                *(
                    writer.append(
                        [record(100 + i)],
                        rows=[(Exchange.__table__, exchange_row(str(uuid.UUID(int=100 + i))))],
                    )
                    for i in range(5)
                ),
                return_exceptions=True,
            )
    finally:
        await sql(database, "ALTER TABLE audit_head_offline RENAME TO audit_head")
    assert all(isinstance(o, AuditUnavailable) for o in outcomes), outcomes
    assert await count(database, AuditEntry) == 3
    assert await count(database, Exchange) == 0
    assert await verify_chain(database) == before
    # The writer survives the failure and continues the same chain.
    assert await writer.append([record(200)]) == [3]
    assert (await verify_chain(database)).size == 4


async def test_failed_commit_rolls_back_rows_inserted_before_the_failure(
    database: Database, writer: AuditWriter
) -> None:
    await fill(writer, 2)
    before = await verify_chain(database)
    # A stray row at the next sequence number makes the entry insert fail after the
    # unit's other rows were already inserted in the same transaction.
    await sql(
        database,
        "INSERT INTO audit_entries (seq, created_at, kind, entry, prev_hash, entry_hash) "
        "VALUES (2, :ts, 'stray', '{}', :h, :h)",
        ts=datetime.now(UTC),
        h=GENESIS,
    )
    rec = record(9)
    assert rec.exchange_id is not None
    with capture_logs(), pytest.raises(AuditUnavailable):
        await writer.append([rec], rows=[(Exchange.__table__, exchange_row(rec.exchange_id))])
    assert await count(database, Exchange) == 0
    await sql(database, "DELETE FROM audit_entries WHERE seq = 2")
    assert await verify_chain(database) == before
    assert await writer.append([rec], rows=[(Exchange.__table__, exchange_row(rec.exchange_id))])
    assert await count(database, Exchange) == 1
    assert (await verify_chain(database)).size == 3


# ----------------------------------------------------------------- tampering

SIZE = 8
MIDDLE = 3


def _rehash(entry: str) -> str:
    return hashlib.sha256(entry.encode()).hexdigest()


async def _entry(db: Database, seq: int) -> AuditEntry:
    async with db.session() as session:
        row = await session.get(AuditEntry, seq)
    assert row is not None
    return row


async def _edit_entry(db: Database, seq: int, *, rehash: bool) -> None:
    row = await _entry(db, seq)
    new = row.entry.replace(f'"n":{seq}', f'"n":{seq + 1000}')
    assert new != row.entry
    if rehash:
        await sql(
            db,
            "UPDATE audit_entries SET entry = :e, entry_hash = :h WHERE seq = :s",
            e=new,
            h=_rehash(new),
            s=seq,
        )
    else:
        await sql(db, "UPDATE audit_entries SET entry = :e WHERE seq = :s", e=new, s=seq)


async def _set(db: Database, seq: int, column: str, value: Any) -> None:
    await sql(db, f"UPDATE audit_entries SET {column} = :v WHERE seq = :s", v=value, s=seq)


async def _broken_at(db: Database) -> int:
    with pytest.raises(AuditChainBroken) as info:
        await verify_chain(db)
    return info.value.index


@pytest.mark.parametrize("seq", [0, MIDDLE, SIZE - 1])
async def test_editing_an_entry_is_found_at_that_entry(
    database: Database, writer: AuditWriter, seq: int
) -> None:
    await fill(writer, SIZE)
    await _edit_entry(database, seq, rehash=False)
    assert await _broken_at(database) == seq


@pytest.mark.parametrize("seq", [0, MIDDLE])
async def test_editing_and_rehashing_an_entry_breaks_the_next_link(
    database: Database, writer: AuditWriter, seq: int
) -> None:
    # A rewritten entry with a matching hash is self-consistent; the chain breaks
    # where the next entry names the original hash.
    await fill(writer, SIZE)
    await _edit_entry(database, seq, rehash=True)
    assert await _broken_at(database) == seq + 1


async def test_editing_and_rehashing_the_last_entry_names_it(
    database: Database, writer: AuditWriter
) -> None:
    # Not one past the end: the last entry is the one that disagrees with the head.
    await fill(writer, SIZE)
    await _edit_entry(database, SIZE - 1, rehash=True)
    assert await _broken_at(database) == SIZE - 1


@pytest.mark.parametrize("seq", [0, MIDDLE, SIZE - 1])
async def test_deleting_an_entry_is_found_at_that_entry(
    database: Database, writer: AuditWriter, seq: int
) -> None:
    await fill(writer, SIZE)
    await sql(database, "DELETE FROM audit_entries WHERE seq = :s", s=seq)
    assert await _broken_at(database) == seq


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("subject_key", "psn:someone-else"),
        ("subject_key", None),
        ("element", "ggz.diagnose"),
        ("exchange_id", str(uuid.UUID(int=999))),
        ("kind", "release"),
        ("prev_hash", "f" * 64),
        ("entry_hash", "f" * 64),
    ],
)
async def test_changing_a_column_is_found_at_that_entry(
    database: Database, writer: AuditWriter, column: str, value: Any
) -> None:
    await fill(writer, SIZE)
    await _set(database, MIDDLE, column, value)
    assert await _broken_at(database) == MIDDLE


async def test_changing_the_outcome_column_is_found(
    database: Database, writer: AuditWriter
) -> None:
    # Turning a recorded "deny" into "permit" in the column must not go unnoticed.
    await writer.append([record(i, outcome="deny") for i in range(SIZE)])
    await _set(database, MIDDLE, "outcome", "permit")
    assert await _broken_at(database) == MIDDLE


async def test_head_that_disagrees_with_the_log_is_found(
    database: Database, writer: AuditWriter
) -> None:
    await fill(writer, SIZE)
    await sql(database, "UPDATE audit_head SET size = :n WHERE id = 1", n=SIZE + 1)
    assert await _broken_at(database) == SIZE


async def test_inserting_an_entry_is_found_where_the_chain_resumes(
    database: Database, writer: AuditWriter
) -> None:
    await fill(writer, SIZE)
    original = await _entry(database, MIDDLE)
    # Shift the tail up by one (in two steps, to keep the primary key unique) and
    # forge a self-consistent entry into the gap; the head is moved along.
    await sql(database, "UPDATE audit_entries SET seq = seq + 100 WHERE seq >= :s", s=MIDDLE)
    await sql(database, "UPDATE audit_entries SET seq = seq - 99 WHERE seq >= 100")
    forged = (
        f'{{"kind":"decision","n":-1,"prev":"{original.prev_hash}","seq":{MIDDLE},'
        f'"ts":"2025-01-01T00:00:00.000000+00:00","v":1}}'
    )
    await sql(
        database,
        "INSERT INTO audit_entries (seq, created_at, kind, entry, prev_hash, entry_hash) "
        "VALUES (:s, :ts, 'decision', :e, :p, :h)",
        s=MIDDLE,
        ts=datetime(2025, 1, 1, tzinfo=UTC),  # consistent with the forged "ts"
        e=forged,
        p=original.prev_hash,
        h=_rehash(forged),
    )
    await sql(database, "UPDATE audit_head SET size = :n WHERE id = 1", n=SIZE + 1)
    # The forged entry itself links correctly; the displaced original does not.
    assert await _broken_at(database) == MIDDLE + 1


# ----------------------------------------------------------------- property

reserved = {"v", "seq", "prev", "ts", "kind", "subject", "element", "exchange_id"}
bodies = st.dictionaries(
    st.text(max_size=6).filter(lambda k: k not in reserved),
    st.none()
    | st.booleans()
    | st.integers(-(2**53) + 1, 2**53 - 1)
    | st.text(max_size=12)
    | st.lists(st.integers(0, 9), max_size=3),
    max_size=4,
)
records = st.builds(
    lambda kind, body, subject: AuditRecord(
        kind=kind,
        body={**body, **({"subject": subject} if subject else {})},
        subject_key=subject,
    ),
    st.sampled_from(["decision", "release", "consent"]),
    bodies,
    st.none() | st.text(alphabet="0123456789abcdef", min_size=1, max_size=40).map("psn:".__add__),
)


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    st.lists(st.lists(records, min_size=1, max_size=3), min_size=1, max_size=4),
    st.sampled_from(["entry", "entry_hash", "prev_hash"]),
    st.data(),
)
async def test_any_one_character_change_is_detected(
    sqlite_url: str, units: list[list[AuditRecord]], column: str, data: st.DataObject
) -> None:
    clean(sqlite_url)
    db = Database(Settings(database_url=sqlite_url).async_database_url)
    try:
        writer = AuditWriter(db)
        await writer.start()
        try:
            await asyncio.gather(*(writer.append(u) for u in units))
        finally:
            await writer.stop()
        total = sum(len(u) for u in units)
        assert (await verify_chain(db)).size == total

        seq = data.draw(st.integers(0, total - 1), label="seq")
        value: str = getattr(await _entry(db, seq), column)
        pos = data.draw(st.integers(0, len(value) - 1), label="pos")
        alphabet = "0123456789abcdef" if column != "entry" else '0123456789abcdef{}[]":, x'
        char = data.draw(st.sampled_from(alphabet).filter(lambda c: c != value[pos]))
        await _set(db, seq, column, value[:pos] + char + value[pos + 1 :])
        with pytest.raises(AuditChainBroken) as info:
            await verify_chain(db)
        assert info.value.index == seq
    finally:
        await db.dispose()


async def test_values_that_copy_must_escape_are_stored_exactly(
    database: Database, writer: AuditWriter
) -> None:
    # PostgreSQL gets the entries through COPY's text format: backslashes, tabs,
    # line breaks and a literal \N must arrive as written, and NULL as NULL.
    awkward = ["a\\b", "tab\there", "line\nbreak", "cr\rlf", "\\N", "", "ünïcode ✓", "\\\\t"]
    records = [
        AuditRecord(
            kind="decision",
            body={
                "subject": value,
                "element": value,
                "exchange_id": value or None,
                "note": value,
                "outcome": None,
            },
            exchange_id=value or None,
            subject_key=value,
            element=value,
            outcome=None,
        )
        for value in awkward
    ]
    await writer.append(records)
    async with database.session() as session:
        rows = (await session.scalars(select(AuditEntry).order_by(AuditEntry.seq))).all()
    assert [(r.subject_key, r.element, r.exchange_id, r.outcome) for r in rows] == [
        (v, v, v or None, None) for v in awkward
    ]
    assert [orjson.loads(r.entry)["note"] for r in rows] == awkward
    chain, tree = await verify_log(database)
    assert chain.size == tree.size == len(awkward)
