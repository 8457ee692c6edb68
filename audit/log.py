"""The audit log writer: append-only, hash-chained, group-committed.

One writer task per broker process takes every pending unit of work (an
exchange's decision and release records, plus the rows that belong with them),
chains the entries onto the current head and commits them in ONE durable
transaction; only then are the callers' futures resolved and may data leave the
broker. A failed commit fails every caller in the batch: nothing is released.

Entries are canonical JSON (RFC 8785); ``entry_hash = SHA-256(entry bytes)`` and
each entry names its predecessor's hash (``prev``), so changing, inserting or
removing an entry breaks the chain at that point. Writers lock the head row
(``SELECT ... FOR UPDATE`` on PostgreSQL), so several broker processes on one
database append to one sequence without forking it.

The entries are also the leaves of an RFC 9162 Merkle tree (leaf hash =
SHA-256(0x00 || entry bytes)). The same transaction that appends entries stores
the hash of every perfect subtree they complete (``audit_nodes``) and the new
root and frontier in the head row, so the tree never disagrees with the log and
an append costs O(log n) hashes (see audit.merkle).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import psycopg
import structlog
from sqlalchemy import Table, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from audit.merkle import append_leaves, decode_frontier, encode_frontier, fold
from audit.models import AuditEntry, AuditHead, AuditNode
from broker.core.canonical import canonical_json_plain
from broker.core.errors import AuditUnavailable, BrokerError, Conflict
from broker.core.periodic import cancel
from broker.core.telemetry import AUDIT_APPEND_SECONDS, tracer
from broker.db.session import Database

GENESIS = "0" * 64
ENTRY_VERSION = 1

_COPY_ENTRIES = (
    "COPY audit_entries (seq, created_at, kind, exchange_id, subject_key, element, outcome, "
    "entry, prev_hash, entry_hash) FROM STDIN"
)
_COPY_NODES = 'COPY audit_nodes (level, "index", hash) FROM STDIN'
_COPY_LINES = 64  # entries per write while a COPY streams

log = structlog.get_logger("audit")


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One entry to append. ``body`` must hold no payloads and no BSNs."""

    kind: str
    body: dict[str, Any]
    exchange_id: str | None = None
    subject_key: str | None = None
    element: str | None = None
    outcome: str | None = None


@dataclass(frozen=True, slots=True)
class RowUpdate:
    """An UPDATE committed together with a unit's entries. ``where`` holds column
    values to match (None matches NULL); exactly one row must match, else the
    unit fails with a Conflict and nothing of it is committed."""

    table: Table
    where: dict[str, Any]
    values: dict[str, Any]


# An entry on its way to storage: seq, record, bytes, previous hash, own hash.
_Entry = tuple[int, AuditRecord, bytes, str, str]


class _Chain:
    """Chains a commit's entries onto the head, in order: each names its
    position and its predecessor's hash; collects their leaf hashes."""

    __slots__ = ("leaves", "prev", "seq", "stamp")

    def __init__(self, seq: int, prev: str, stamp: str) -> None:
        self.seq = seq
        self.prev = prev
        self.stamp = stamp  # the commit's time: every entry's ts
        self.leaves: list[bytes] = []

    def extend(self, records: Sequence[AuditRecord]) -> list[_Entry]:
        sha256 = hashlib.sha256
        out: list[_Entry] = []
        for record in records:
            data = _entry_bytes(record, self.seq, self.prev, self.stamp)
            digest = sha256(data).hexdigest()
            out.append((self.seq, record, data, self.prev, digest))
            self.leaves.append(sha256(b"\x00" + data).digest())
            self.seq += 1
            self.prev = digest
        return out


class _UnitConflict(Exception):
    """A unit's own rows conflict (duplicate key, guarded update matched no row)."""


@dataclass(slots=True)
class CommitUnit:
    records: Sequence[AuditRecord]
    rows: Sequence[tuple[Table, dict[str, Any]]] = ()
    updates: Sequence[RowUpdate] = ()
    future: asyncio.Future[list[int]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


def build_entry(record: AuditRecord, *, seq: int, prev: str, ts: datetime) -> bytes:
    return _entry_bytes(record, seq, prev, ts.isoformat(timespec="microseconds"))


def _entry_bytes(record: AuditRecord, seq: int, prev: str, stamp: str) -> bytes:
    # Entries are built by the broker from strings, integers, booleans and null.
    return canonical_json_plain(
        {
            **record.body,
            "v": ENTRY_VERSION,
            "seq": seq,
            "prev": prev,
            "ts": stamp,
            "kind": record.kind,
        }
    )


_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _copy_field(value: str | None) -> str:
    """A value in PostgreSQL's COPY text format."""
    if value is None:
        return "\\N"
    if "\\" in value or "\t" in value or "\n" in value or "\r" in value:
        return value.translate(_COPY_ESCAPES)
    return value


class AuditWriter:
    def __init__(self, db: Database, *, batch_max: int = 512) -> None:
        self._db = db
        self._batch_max = batch_max
        self._queue: asyncio.Queue[CommitUnit] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._lock_head = not db.is_sqlite
        # Commits run in one thread of their own on a blocking connection: a
        # whole transaction is one hand-over instead of one per statement.
        self._thread: ThreadPoolExecutor | None = None

    async def start(self) -> None:
        if self._task is None:
            await self._ensure_head()
            self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="audit-writer")
            self._task = asyncio.create_task(self._run(), name="audit-writer")

    async def stop(self) -> None:
        await cancel(self._task)
        self._task = None
        if self._thread is not None:
            # A commit in flight finishes (or fails) before the engine goes away.
            await asyncio.get_running_loop().run_in_executor(None, self._thread.shutdown)
            self._thread = None
        while not self._queue.empty():
            unit = self._queue.get_nowait()
            if not unit.future.done():
                unit.future.set_exception(AuditUnavailable())

    async def _ensure_head(self) -> None:
        try:
            async with self._db.write_sessions() as session:
                head = await session.get(AuditHead, 1)
                if head is None:
                    session.add(AuditHead(id=1, size=0, head_hash=GENESIS))
                    with contextlib.suppress(SQLAlchemyError):
                        await session.commit()
        except SQLAlchemyError as exc:
            raise AuditUnavailable() from exc

    async def append(
        self,
        records: Sequence[AuditRecord],
        rows: Sequence[tuple[Table, dict[str, Any]]] = (),
        updates: Sequence[RowUpdate] = (),
    ) -> list[int]:
        """Durably appends ``records`` (and inserts ``rows``, applies ``updates``)
        in one commit.

        Returns the sequence numbers (leaf indices). Raises AuditUnavailable, or
        Conflict when the unit's own rows conflict (then only that unit fails)."""
        if self._task is None or self._task.done():
            raise AuditUnavailable()
        started = time.perf_counter()
        with tracer.start_as_current_span("audit.append"):
            unit = CommitUnit(records=records, rows=rows, updates=updates)
            await self._queue.put(unit)
            seqs = await unit.future
        AUDIT_APPEND_SECONDS.observe(time.perf_counter() - started)
        return seqs

    async def _run(self) -> None:
        while True:
            first = await self._queue.get()
            batch = [first]
            count = len(first.records)
            while count < self._batch_max and not self._queue.empty():
                unit = self._queue.get_nowait()
                batch.append(unit)
                count += len(unit.records)
            await self._settle(batch)

    async def _settle(self, batch: list[CommitUnit]) -> None:
        try:
            assert self._thread is not None
            results = await asyncio.get_running_loop().run_in_executor(
                self._thread, self._commit, batch
            )
        except asyncio.CancelledError:
            # Stopping: these callers release nothing (the commit may still land).
            self._fail(batch, AuditUnavailable)
            raise
        except _UnitConflict as exc:
            if len(batch) > 1:
                # One unit's rows conflict: the others must not fail with it.
                for unit in batch:
                    await self._settle([unit])
                return
            log.warning("audit.unit_conflict", table=str(exc))
            self._fail(batch, lambda: Conflict("The record conflicts with a stored one"))
            return
        except Exception as exc:
            log.exception("audit.commit_failed", error=type(exc).__name__, units=len(batch))
            self._fail(batch, AuditUnavailable)
            return
        for unit, seqs in zip(batch, results, strict=True):
            if not unit.future.done():
                unit.future.set_result(seqs)

    @staticmethod
    def _fail(batch: list[CommitUnit], error: Callable[[], BrokerError]) -> None:
        for unit in batch:
            if not unit.future.done():
                unit.future.set_exception(error())

    def _commit(self, batch: list[CommitUnit]) -> list[list[int]]:
        # Core statements on a plain connection: the ORM adds nothing here but cost.
        head_table = cast(Table, AuditHead.__table__)
        stmt = select(head_table.c.size, head_table.c.head_hash, head_table.c.frontier).where(
            head_table.c.id == 1
        )
        if self._lock_head:
            stmt = stmt.with_for_update()
        with self._db.sync_write_engine.begin() as conn:
            size, prev, frontier_text = conn.execute(stmt).one()
            now = datetime.now(UTC)  # under the head lock: times rise along the log
            chain = _Chain(size, prev, now.isoformat(timespec="microseconds"))
            results: list[list[int]] = []
            for unit in batch:
                results.append(list(range(size, size + len(unit.records))))
                size += len(unit.records)
            self._apply_rows(conn, batch)
            if size == chain.seq:
                return results  # nothing to append
            if self._lock_head:
                self._copy_entries(conn, batch, chain)
            else:
                self._insert_entries(conn, batch, chain, now)
            frontier, _, nodes = append_leaves(
                decode_frontier(frontier_text), results[0][0], chain.leaves
            )
            self._store_nodes(conn, nodes)
            conn.execute(
                update(head_table)
                .where(head_table.c.id == 1)
                .values(
                    size=chain.seq,
                    head_hash=chain.prev,
                    root_hash=fold(frontier).hex(),
                    frontier=encode_frontier(frontier),
                )
            )
        return results

    def _apply_rows(self, conn: Connection, batch: list[CommitUnit]) -> None:
        """The units' updates, then their rows (one executemany per table)."""
        extra: dict[Table, list[dict[str, Any]]] = {}
        for unit in batch:
            for table, row in unit.rows:
                extra.setdefault(table, []).append(row)
            for change in unit.updates:
                self._apply(conn, change)
        for table, rows in extra.items():
            try:
                conn.execute(insert(table), rows)
            except IntegrityError as exc:  # a duplicate key among the units' own rows
                raise _UnitConflict(table.name) from exc

    @staticmethod
    def _insert_entries(
        conn: Connection, batch: list[CommitUnit], chain: _Chain, now: datetime
    ) -> None:
        """SQLite: executemany is its fast path."""
        conn.execute(
            insert(cast(Table, AuditEntry.__table__)),
            [
                {
                    "seq": seq,
                    "created_at": now,
                    "kind": record.kind,
                    "exchange_id": record.exchange_id,
                    "subject_key": record.subject_key,
                    "element": record.element,
                    "outcome": record.outcome,
                    "entry": data.decode("utf-8"),
                    "prev_hash": prev,
                    "entry_hash": entry_hash,
                }
                for unit in batch
                for seq, record, data, prev, entry_hash in chain.extend(unit.records)
            ],
        )

    @staticmethod
    def _copy_entries(conn: Connection, batch: list[CommitUnit], chain: _Chain) -> None:
        """PostgreSQL: one COPY, its text built here a few units at a time and
        sent while the next ones are built (the server inserts meanwhile), not
        one INSERT, nor one ``write_row``, per entry."""
        field = _copy_field
        stamp = chain.stamp
        driver = cast(psycopg.Connection[Any], conn.connection.driver_connection)
        with driver.cursor() as cursor, cursor.copy(_COPY_ENTRIES) as copy:
            lines: list[str] = []
            for unit in batch:
                lines.extend(
                    f"{seq}\t{stamp}\t{field(record.kind)}\t{field(record.exchange_id)}\t"
                    f"{field(record.subject_key)}\t{field(record.element)}\t"
                    f"{field(record.outcome)}\t{field(data.decode('utf-8'))}\t{prev}\t{digest}\n"
                    for seq, record, data, prev, digest in chain.extend(unit.records)
                )
                if len(lines) >= _COPY_LINES:
                    copy.write("".join(lines))
                    lines.clear()
            if lines:
                copy.write("".join(lines))

    def _store_nodes(self, conn: Connection, nodes: list[tuple[int, int, bytes]]) -> None:
        if not self._lock_head:
            conn.execute(
                insert(cast(Table, AuditNode.__table__)),
                [{"level": lv, "index": i, "hash": h.hex()} for lv, i, h in nodes],
            )
            return
        driver = cast(psycopg.Connection[Any], conn.connection.driver_connection)
        with driver.cursor() as cursor, cursor.copy(_COPY_NODES) as copy:
            copy.write("".join(f"{lv}\t{i}\t{h.hex()}\n" for lv, i, h in nodes))

    @staticmethod
    def _apply(conn: Connection, change: RowUpdate) -> None:
        table = change.table
        conditions = [
            table.c[name].is_(None) if value is None else table.c[name] == value
            for name, value in change.where.items()
        ]
        result = conn.execute(update(table).where(*conditions).values(**change.values))
        if result.rowcount != 1:
            raise _UnitConflict(table.name)
