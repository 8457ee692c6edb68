"""Recomputes the audit hash chain (and the Merkle root) and names the first broken entry.

Verification raises; a clean log returns a summary.

Both checks run in a worker thread on a plain blocking connection of their own
(the event loop stays free) and read the log in pages of ``CHUNK`` entries by
``seq``. They check the log up to the size the head names when they start, so
entries appended meanwhile do not disturb them; entries beyond the head that no
append accounts for are reported.

Whole pages are first checked a page at a time (audit.pages: whole columns at
once, no Python code per entry), by worker processes when the log is large; the
pages are then linked in order (each page's first entry names the previous
page's last hash; the subtrees above a page are folded and checked here). From
the first page that is not clean on, and for the last, partial page, entries are
checked one by one, which is what names the first broken entry: the result
(summary, or error message and index) is the one the entry-by-entry check alone
gives.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import queue
import threading
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from typing import Any

import orjson
import structlog
from sqlalchemy import create_engine, make_url
from sqlalchemy.exc import SQLAlchemyError

from audit.log import GENESIS
from audit.merkle import EMPTY_ROOT, append_leaves, fold
from audit.pages import (
    PageChecker,
    PageResult,
    Target,
    WorkerFailed,
    Workers,
    column_time,
    entry_time,
)
from audit.tree import root_at
from broker.core.errors import AuditChainBroken, StorageUnavailable
from broker.db.session import Database

CHUNK = 1 << 14  # a power of two: a full page is one perfect subtree
# Worker processes check the pages of logs of at least this many full pages
# (below that, starting them costs more than they save).
PARALLEL_PAGES = 4
MAX_WORKERS = 4
_sha256 = hashlib.sha256

log = structlog.get_logger("audit")

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

    def __init__(self, connection: Any, cursor: Any, sqlite: bool) -> None:
        self.connection = connection
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
                yield _Reader(dbapi, cursor, db.is_sqlite)
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


async def verify_chain(db: Database, *, workers: int | None = None) -> ChainSummary:
    """Checks every entry: its bytes hash to the stored hash, it names the
    previous entry's hash and its own position, and the indexed columns agree
    with the entry; the head row must match the last entry.

    ``workers``: processes that check pages (None: one per CPU, up to
    MAX_WORKERS, for logs of PARALLEL_PAGES pages or more; 0: none)."""
    chain, _ = await asyncio.to_thread(_verify, db, chain=True, tree=False, workers=workers)
    assert chain is not None
    return chain


async def verify_tree(db: Database, *, workers: int | None = None) -> TreeSummary:
    """Recomputes the RFC 9162 root from every entry (the leaves) and checks it
    equals the root in the head row and the root built from the stored subtree
    hashes that proofs are served from."""
    _, tree = await asyncio.to_thread(_verify, db, chain=False, tree=True, workers=workers)
    assert tree is not None
    await _check_root(db, tree)
    return tree


async def verify_log(
    db: Database, *, workers: int | None = None
) -> tuple[ChainSummary, TreeSummary]:
    """``verify_chain`` and ``verify_tree`` in one read of the log."""
    chain, tree = await asyncio.to_thread(_verify, db, chain=True, tree=True, workers=workers)
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


def _pages(
    db: Database, out: queue.Queue[Any], stop: threading.Event, *, start: int, size: int, page: int
) -> None:
    """Reads entries [start, size) page by page on a connection of its own (the
    database reads overlap the hashing in the caller's thread)."""
    try:
        with _reader(db) as reader:
            while start < size and not stop.is_set():
                rows = reader.rows(_ENTRIES, start, min(size, start + page))
                out.put(rows)
                if not rows:
                    return
                start = int(rows[-1][0]) + 1
    except Exception as exc:  # noqa: BLE001 - handed to the verifying thread, raised there
        out.put(exc)
    finally:
        out.put(_DONE)


@dataclass(slots=True)
class _Progress:
    """How far the log checked out: ``seq`` entries (the chain; for the tree
    ``leaves`` with their ``frontier``), the last one's hash ``prev``."""

    seq: int = 0
    prev: str = GENESIS
    leaves: int = 0
    frontier: list[bytes] = dataclass_field(default_factory=list)


def _verify(
    db: Database,
    *,
    chain: bool,
    tree: bool,
    workers: int | None = None,
    page: int = CHUNK,
    batch: bool = True,
) -> tuple[ChainSummary | None, TreeSummary | None]:
    """``page``: entries per page (a power of two); ``batch``: False checks
    every entry one by one (the reference the page checks must agree with)."""
    if page < 1 or page & (page - 1):
        raise ValueError("the page size is a power of two")
    with _reader(db) as reader:
        size, head_hash, head_root = reader.head()
        done = _Progress()
        if batch:
            _verify_pages(db, reader, done, size, page, chain=chain, tree=tree, workers=workers)
        _verify_entries(db, reader, done, size, page, chain=chain, tree=tree)
        chain_summary = tree_summary = None
        if chain:
            chain_summary = _chain_summary(size, head_hash, done.seq, done.prev)
        if tree:
            tree_summary = _tree_summary(reader, size, head_root, done.leaves, done.frontier)
        _check_beyond(reader, size)
    return chain_summary, tree_summary


def _verify_entries(
    db: Database, reader: _Reader, done: _Progress, size: int, page: int, *, chain: bool, tree: bool
) -> None:
    """Checks entries one by one from where ``done`` stands."""
    start = done.seq if chain else done.leaves
    if start >= size:
        return
    pages: queue.Queue[Any] = queue.Queue(maxsize=2)
    stop = threading.Event()
    fetcher = threading.Thread(
        target=_pages,
        args=(db, pages, stop),
        kwargs={"start": start, "size": size, "page": page},
        daemon=True,
    )
    fetcher.start()
    try:
        times: tuple[Any, Any] = (None, None)  # the last (column, "ts") pair that agreed
        while True:
            rows = pages.get()
            if rows is _DONE or not rows:
                break
            if isinstance(rows, BaseException):
                raise rows
            if chain:
                for row in rows:
                    times = _check(row, done.seq, done.prev, times)
                    done.prev = row[9]
                    done.seq += 1
            if tree:
                done.frontier, done.leaves = _tree_page(
                    reader, done.frontier, done.leaves, rows, page
                )
    finally:
        stop.set()
        while fetcher.is_alive():  # let the reader finish if we stopped early
            with contextlib.suppress(queue.Empty):
                pages.get(timeout=0.1)
        fetcher.join()


def _verify_pages(
    db: Database,
    reader: _Reader,
    done: _Progress,
    size: int,
    page: int,
    *,
    chain: bool,
    tree: bool,
    workers: int | None,
) -> None:
    """Checks whole pages from the first on, as long as they are clean, and
    links them: each page's first entry must name the previous page's last hash,
    and the subtrees a page completes above itself must match. A clean page
    moves ``done`` on by a page; the first page that is not clean is left to
    the entry-by-entry check (which finds what is wrong, or that nothing is)."""
    pages = size // page
    if pages == 0:
        return
    if workers is None:
        workers = _cpus() if pages >= PARALLEL_PAGES else 0
    results = _page_results(db, reader, pages, page, chain=chain, tree=tree, workers=workers)
    with contextlib.closing(results):
        for result in results:
            if result is None or (chain and result.first_prev != done.prev):
                return
            if tree:
                assert result.root is not None
                # Levels up to the page's own root matched in the page check; the
                # entry-by-entry check would find the same here (same order).
                _check_nodes(reader, _fold_page(done.frontier, done.leaves, page, result.root))
            done.seq += page
            done.leaves += page
            if chain:
                done.prev = result.last_hash


def _cpus() -> int:
    try:
        count = len(os.sched_getaffinity(0))
    except AttributeError:  # not on every platform
        count = os.cpu_count() or 1
    return min(count, MAX_WORKERS) if count > 1 else 0


def _target(db: Database) -> Target | None:
    """Where worker processes find the log (None: only this process can)."""
    url = make_url(db.url)
    if db.is_sqlite:
        path = url.database
        if not path or path == ":memory:" or path.startswith("file:"):
            return None
        return ("sqlite", path)
    return ("postgresql", url.set(drivername="postgresql").render_as_string(hide_password=False))


def _page_results(
    db: Database,
    reader: _Reader,
    pages: int,
    page: int,
    *,
    chain: bool,
    tree: bool,
    workers: int,
) -> Generator[PageResult | None, None, None]:
    """The page checks' results in page order (None: not clean)."""
    target = _target(db) if workers > 0 else None
    if target is None:
        checker = PageChecker(reader.connection, reader.sqlite)
        for number in range(pages):
            yield checker.check(number * page, page, chain=chain, tree=tree)
        return
    try:
        with Workers(target, workers) as pool:
            yield from pool.results(pages, page, chain=chain, tree=tree)
    except (WorkerFailed, OSError) as exc:
        # The entry-by-entry check takes over from the first page without a result.
        log.warning("audit.verify_pages_failed", error=str(exc))
        yield None


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
    same_time = (created_at, ts) == times or column_time(created_at) == entry_time(ts)
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
    reader: _Reader, frontier: list[bytes], size: int, rows: list[tuple[Any, ...]], page: int
) -> tuple[list[bytes], int]:
    """Appends a page of entries to the tree and checks the subtrees it completes."""
    if rows[0][0] != size:
        raise AuditChainBroken(f"entry {size} is missing", index=size)
    leaves = [_sha256(b"\x00" + bytes(row[7])).digest() for row in rows]
    if size % page == 0 and len(rows) == page and rows[-1][0] == size + page - 1:
        levels = _append_page(frontier, size, leaves)
        size += page
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
    """Appends a full page (``2**k`` leaves starting at a multiple of ``2**k``)
    to the frontier, level by level, and returns every perfect subtree it
    completes: what ``append_leaves`` returns, with far less work per leaf."""
    levels: Levels = {0: (size, leaves)}
    level, row = 0, leaves
    while len(row) > 1:
        row = [_sha256(b"\x01" + row[i] + row[i + 1]).digest() for i in range(0, len(row), 2)]
        level += 1
        levels[level] = (size >> level, row)
    levels.update(_fold_page(frontier, size, len(leaves), row[0]))
    return levels


def _fold_page(frontier: list[bytes], size: int, page: int, root: bytes) -> Levels:
    """Appends the root of a full page (``page`` leaves from ``size``, a
    multiple of ``page``) to the frontier; returns the subtrees it completes
    above the page."""
    levels: Levels = {}
    level = page.bit_length() - 1
    end = size + page
    h = root
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
