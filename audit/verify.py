"""Recomputes the audit hash chain (and the Merkle root) and names the first broken entry.

Verification raises; a clean log returns a summary.

Both checks run in a worker thread on a plain blocking connection of their own
(the event loop stays free) and read the log in pages of ``CHUNK`` entries by
``seq`` as plain tuples: no ORM objects, orjson for parsing, hashlib (OpenSSL)
for SHA-256. They check the log up to the size the head names when they start,
so entries appended meanwhile do not disturb them; entries beyond the head that
no append accounts for are reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import create_engine
from sqlalchemy.exc import SQLAlchemyError

from audit.log import GENESIS
from audit.merkle import EMPTY_ROOT, append_leaves, fold
from audit.tree import root_at
from broker.core.errors import AuditChainBroken, StorageUnavailable
from broker.db.session import Database

CHUNK = 1 << 14  # a power of two: a full page is one perfect subtree
_sha256 = hashlib.sha256

# The entry as its UTF-8 bytes (what was hashed), without a decode and re-encode.
_ENTRIES = (
    "SELECT seq, created_at, kind, exchange_id, subject_key, element, outcome, {bytes}, "
    "prev_hash, entry_hash FROM audit_entries WHERE seq >= {p} AND seq < {p} ORDER BY seq"
)
_NODES = (
    'SELECT "index", hash FROM audit_nodes WHERE level = {p} AND "index" >= {p} '
    'AND "index" <= {p} ORDER BY "index"'
)


@dataclass(frozen=True, slots=True)
class ChainSummary:
    size: int
    head_hash: str


@dataclass(frozen=True, slots=True)
class TreeSummary:
    size: int
    root_hash: bytes


class _Reader:
    """A blocking DB-API cursor on a connection of its own."""

    def __init__(self, cursor: Any, sqlite: bool) -> None:
        self._cursor = cursor
        self._param = "?" if sqlite else "%s"
        self.sqlite = sqlite

    def rows(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        entry = "CAST(entry AS BLOB)" if self.sqlite else "convert_to(entry, 'UTF8')"
        self._cursor.execute(sql.format(p=self._param, bytes=entry), params)
        rows: list[tuple[Any, ...]] = self._cursor.fetchall()
        return rows

    def head(self) -> tuple[int, str, str]:
        rows = self.rows("SELECT size, head_hash, root_hash FROM audit_head WHERE id = 1")
        if not rows:
            return 0, GENESIS, EMPTY_ROOT.hex()
        size, head_hash, root_hash = rows[0]
        return int(size), str(head_hash), str(root_hash)

    def scalar(self, sql: str) -> int:
        return int(self.rows(sql)[0][0] or 0)


@contextlib.contextmanager
def _reader(db: Database) -> Iterator[_Reader]:
    url = db.url.replace("sqlite+aiosqlite:", "sqlite:", 1)
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            dbapi = conn.connection.dbapi_connection
            assert dbapi is not None
            cursor = dbapi.cursor()
            try:
                yield _Reader(cursor, db.is_sqlite)
            finally:
                cursor.close()
    except SQLAlchemyError as exc:
        raise StorageUnavailable() from exc
    except OSError as exc:
        raise StorageUnavailable() from exc
    finally:
        engine.dispose()


def _check_beyond(reader: _Reader, size: int) -> None:
    """Entries past the verified size must be covered by the (re-read) head."""
    last = reader.rows("SELECT max(seq) FROM audit_entries")[0][0]
    current = reader.head()[0]
    if last is not None and int(last) >= max(size, current):
        raise AuditChainBroken(
            f"the head (size {current}) does not match the log (size {int(last) + 1})",
            index=max(size, current),
        )


async def verify_chain(db: Database) -> ChainSummary:
    """Checks every entry: its bytes hash to the stored hash, it names the
    previous entry's hash and its own position, and the indexed columns agree
    with the entry; the head row must match the last entry."""
    chain, _ = await asyncio.to_thread(_verify, db, chain=True, tree=False)
    assert chain is not None
    return chain


async def verify_tree(db: Database) -> TreeSummary:
    """Recomputes the RFC 9162 root from every entry (the leaves) and checks it
    equals the root in the head row and the root built from the stored subtree
    hashes that proofs are served from."""
    _, tree = await asyncio.to_thread(_verify, db, chain=False, tree=True)
    assert tree is not None
    await _check_root(db, tree)
    return tree


async def verify_log(db: Database) -> tuple[ChainSummary, TreeSummary]:
    """``verify_chain`` and ``verify_tree`` in one read of the log."""
    chain, tree = await asyncio.to_thread(_verify, db, chain=True, tree=True)
    assert chain is not None
    assert tree is not None
    await _check_root(db, tree)
    return chain, tree


async def _check_root(db: Database, tree: TreeSummary) -> None:
    if tree.size and await root_at(db, tree.size) != tree.root_hash:
        raise AuditChainBroken(
            "the stored subtree hashes do not match the entries", index=tree.size - 1
        )


_DONE = object()


def _pages(db: Database, size: int, out: queue.Queue[Any], stop: threading.Event) -> None:
    """Reads entries [0, size) page by page on a connection of its own (the
    database reads overlap the hashing in the caller's thread)."""
    try:
        with _reader(db) as reader:
            start = 0
            while start < size and not stop.is_set():
                rows = reader.rows(_ENTRIES, start, min(size, start + CHUNK))
                out.put(rows)
                if not rows:
                    return
                start = int(rows[-1][0]) + 1
    except Exception as exc:  # noqa: BLE001 - handed to the verifying thread, raised there
        out.put(exc)
    finally:
        out.put(_DONE)


def _verify(
    db: Database, *, chain: bool, tree: bool
) -> tuple[ChainSummary | None, TreeSummary | None]:
    with _reader(db) as reader:
        size, head_hash, head_root = reader.head()
        pages: queue.Queue[Any] = queue.Queue(maxsize=2)
        stop = threading.Event()
        fetcher = threading.Thread(target=_pages, args=(db, size, pages, stop), daemon=True)
        fetcher.start()
        try:
            expected_seq = 0
            prev = GENESIS
            times: tuple[Any, Any] = (None, None)  # the last (column, "ts") pair that agreed
            frontier: list[bytes] = []
            leaves_done = 0
            while True:
                rows = pages.get()
                if rows is _DONE or not rows:
                    break
                if isinstance(rows, BaseException):
                    raise rows
                if chain:
                    for row in rows:
                        times = _check(row, expected_seq, prev, times)
                        prev = row[9]
                        expected_seq += 1
                if tree:
                    frontier, leaves_done = _tree_page(reader, frontier, leaves_done, rows)
        finally:
            stop.set()
            while fetcher.is_alive():  # let the reader finish if we stopped early
                with contextlib.suppress(queue.Empty):
                    pages.get(timeout=0.1)
            fetcher.join()
        chain_summary = tree_summary = None
        if chain:
            chain_summary = _chain_summary(size, head_hash, expected_seq, prev)
        if tree:
            tree_summary = _tree_summary(reader, size, head_root, leaves_done, frontier)
        _check_beyond(reader, size)
    return chain_summary, tree_summary


def _chain_summary(size: int, head_hash: str, verified: int, prev: str) -> ChainSummary:
    if size != verified:
        raise AuditChainBroken(
            f"the head (size {size}) does not match the log (size {verified})",
            index=min(size, verified),
        )
    if head_hash != prev:
        raise AuditChainBroken(
            f"entry {size - 1} does not match the recorded head hash", index=size - 1
        )
    return ChainSummary(size=verified, head_hash=prev)


def _tree_summary(
    reader: _Reader, head_size: int, head_root: str, size: int, frontier: list[bytes]
) -> TreeSummary:
    root = fold(frontier)
    stored = bytes.fromhex(head_root) if head_size else EMPTY_ROOT
    if head_size != size or stored != root:
        raise AuditChainBroken(
            "the Merkle root in the head does not match the entries", index=max(size - 1, 0)
        )
    # Every stored subtree lies within the log: exactly 2n - popcount(n) of them
    # for n entries (unless entries were appended meanwhile).
    before = reader.head()[0]
    nodes = reader.scalar("SELECT count(*) FROM audit_nodes")
    current = reader.head()[0]
    if before == current and nodes != 2 * current - current.bit_count():
        raise AuditChainBroken(
            "the stored subtree hashes do not match the entries", index=max(size - 1, 0)
        )
    return TreeSummary(size=size, root_hash=root)


def _ts(value: object) -> datetime | None:
    try:
        return datetime.fromisoformat(str(value))
    except ValueError:
        return None


def _column_time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    moment = _ts(value)
    return moment.replace(tzinfo=UTC) if moment is not None and not moment.tzinfo else moment


def _check(row: tuple[Any, ...], seq: int, prev: str, times: tuple[Any, Any]) -> tuple[Any, Any]:
    (
        row_seq,
        created_at,
        kind,
        exchange_id,
        subject_key,
        element,
        outcome,
        text,
        prev_hash,
        digest,
    ) = row
    if row_seq != seq:
        raise AuditChainBroken(f"entry {seq} is missing", index=seq)
    data = bytes(text)
    if _sha256(data).hexdigest() != digest:
        raise AuditChainBroken(f"entry {seq} was altered (hash mismatch)", index=seq)
    try:
        entry = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise AuditChainBroken(f"entry {seq} is not JSON", index=seq) from exc
    if not isinstance(entry, dict):
        raise AuditChainBroken(f"entry {seq} is not a JSON object", index=seq)
    get = entry.get
    if get("seq") != seq or get("prev") != prev or prev_hash != prev:
        raise AuditChainBroken(f"entry {seq} does not follow entry {seq - 1}", index=seq)
    ts = get("ts")
    # Entries of one commit share their time: compare each distinct pair once.
    same_time = (created_at, ts) == times or _column_time(created_at) == _ts(ts)
    if (
        get("kind") != kind
        or get("subject") != subject_key
        or get("element") != element
        or get("exchange_id") != exchange_id
        or get("outcome") != outcome
        or not same_time
    ):
        raise AuditChainBroken(f"entry {seq}'s indexed columns were altered", index=seq)
    return (created_at, ts)


Levels = dict[int, tuple[int, list[bytes]]]  # level -> (first index, hashes in order)


def _tree_page(
    reader: _Reader, frontier: list[bytes], size: int, rows: list[tuple[Any, ...]]
) -> tuple[list[bytes], int]:
    """Appends a page of entries to the tree and checks the subtrees it completes."""
    if rows[0][0] != size:
        raise AuditChainBroken(f"entry {size} is missing", index=size)
    leaves = [_sha256(b"\x00" + bytes(row[7])).digest() for row in rows]
    if size % CHUNK == 0 and len(rows) == CHUNK and rows[-1][0] == size + CHUNK - 1:
        levels = _append_page(frontier, size, leaves)
        size += CHUNK
    else:
        frontier, size, created = append_leaves(frontier, size, leaves)
        levels = _by_level(created)
    _check_nodes(reader, levels)
    return frontier, size


def _by_level(created: list[tuple[int, int, bytes]]) -> Levels:
    levels: Levels = {}
    for level, index, digest in created:
        levels.setdefault(level, (index, []))[1].append(digest)
    return levels


def _append_page(frontier: list[bytes], size: int, leaves: list[bytes]) -> Levels:
    """Appends a full page (``CHUNK`` leaves starting at a multiple of ``CHUNK``)
    to the frontier, level by level, and returns every perfect subtree it
    completes: what ``append_leaves`` returns, with far less work per leaf."""
    levels: Levels = {0: (size, leaves)}
    level, row = 0, leaves
    while len(row) > 1:
        row = [_sha256(b"\x01" + row[i] + row[i + 1]).digest() for i in range(0, len(row), 2)]
        level += 1
        levels[level] = (size >> level, row)
    h = row[0]
    end = size + len(leaves)
    while size >> level & 1:
        h = _sha256(b"\x01" + frontier.pop() + h).digest()
        level += 1
        levels[level] = ((end >> level) - 1, [h])
    frontier.append(h)
    return levels


def _check_nodes(reader: _Reader, levels: Levels) -> None:
    """The stored perfect subtree hashes equal the recomputed ones (one read per level)."""
    for level, (lo, digests) in levels.items():
        found = reader.rows(_NODES, level, lo, lo + len(digests) - 1)
        expected = [d.hex() for d in digests]
        # Fast path: every node present, in order, with the expected hash.
        if len(found) == len(expected) and [h for _, h in found] == expected:
            continue
        stored = dict(found)
        for index, digest in enumerate(expected, start=lo):
            if stored.get(index) != digest:
                first = index << level
                raise AuditChainBroken(
                    f"the stored subtree ({level}, {index}) does not match entries "
                    f"{first}..{first + (1 << level) - 1}",
                    index=first,
                )
