"""Whole-page checks of the audit log, for ``audit.verify`` (no broker imports).

A *page* is ``2**k`` consecutive entries starting at a multiple of ``2**k``:
one perfect subtree of the Merkle tree. ``PageChecker.check`` reads a page in
one query and makes, over whole columns at once (C-level maps and tuple
comparisons instead of Python code per entry), the checks ``audit.verify``
makes entry by entry: every entry's bytes hash to its stored hash and name their
position and the previous entry's hash, the indexed columns agree with the
entry, and the page's leaf hashes and every perfect subtree inside the page
equal the stored subtree hashes. It returns the page's first ``prev_hash``, last
entry hash and subtree root, so pages can be checked in any order, in other
processes, and linked afterwards.

A check answers only "clean" or "not clean" (None) and is deliberately strict:
anything unusual (an entry time stamp spelt differently from how the writer
spells it, a stored hash that is not text, a page with a missing or extra row)
makes a page "not clean". ``audit.verify`` checks a page that is not clean, and
everything after it, entry by entry, which names the first broken entry exactly
as it always has. Every page passed here passes the entry-by-entry check too, so
the verifier's verdicts and messages do not depend on this module.

Worker processes (``Workers``) run only this module (the standard library,
orjson and the database driver), so they start quickly.
"""

from __future__ import annotations

import gc
import hashlib
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from operator import itemgetter, methodcaller
from pathlib import Path
from typing import Any

import orjson

__all__ = [
    "PageChecker",
    "PageResult",
    "Target",
    "WorkerFailed",
    "Workers",
    "column_time",
    "entry_time",
]

# ("sqlite", database file) or ("postgresql", libpq connection string)
Target = tuple[str, str]

_sha256 = hashlib.sha256
_hexdigest = methodcaller("hexdigest")
_digest = methodcaller("digest")
_loads = orjson.loads
# The entry members the check compares, and the columns they must equal (in order).
_FIELDS = ("seq", "prev", "kind", "exchange_id", "subject", "element", "outcome", "ts")
_fields = itemgetter(*_FIELDS)


def entry_time(value: object) -> datetime | None:
    """An entry's ``ts`` as a datetime (None if it is not an ISO 8601 time)."""
    try:
        return datetime.fromisoformat(str(value))
    except ValueError:
        return None


def column_time(value: Any) -> datetime | None:
    """The ``created_at`` column as an aware datetime (naive values are UTC)."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    moment = entry_time(value)
    return moment.replace(tzinfo=UTC) if moment is not None and not moment.tzinfo else moment


def _writer_time(value: Any) -> str | None:
    """How the writer spells a ``created_at`` column's time in the entry's
    ``ts`` (UTC, microseconds); None if the value is not a time."""
    moment = column_time(value)
    if moment is None or moment.utcoffset() is None:
        return None
    spelt = moment.astimezone(UTC).isoformat(timespec="microseconds")
    # An entry whose ts equals this text must denote the column's time.
    return spelt if entry_time(spelt) == moment else None


@dataclass(frozen=True, slots=True)
class PageResult:
    """A clean page: its first entry's ``prev_hash`` and last entry's hash (both
    "" when the chain was not checked) and its subtree root (None when the tree
    was not checked)."""

    first_prev: str
    last_hash: str
    root: bytes | None


# The same rows audit.verify's entry-by-entry check reads (the entry as its
# UTF-8 bytes, exactly what was hashed). PostgreSQL sorts a page of ~1 KB rows
# on disk unless it has statistics to prefer the index; the rows come nearly in
# order anyway, and sorting them here costs next to nothing.
_ENTRIES = (
    "SELECT seq, created_at, kind, exchange_id, subject_key, element, outcome, {bytes}, "
    "prev_hash, entry_hash FROM audit_entries WHERE seq >= {p} AND seq < {p}{order}"
)
_seq = itemgetter(0)


# Per level of a page: the count of its stored subtrees, their hashes joined by
# commas and how many are text, read as audit.verify reads them (by level and
# index range, in index order). SQLite 3.40 has no ORDER BY inside an aggregate:
# the rows come ordered from a subquery (had the order not held, the joined
# hashes would differ and the page would merely not be clean).
_NODES = (
    "SELECT {level}, count(*), {joined}, {text} FROM (SELECT hash FROM audit_nodes "
    'WHERE level = {p} AND "index" >= {p} AND "index" <= {p} ORDER BY "index") l{level}'
)


def _nodes_sql(sqlite: bool, levels: int) -> str:
    return " UNION ALL ".join(
        _NODES.format(
            level=level,
            p="?" if sqlite else "%s",
            joined="group_concat(hash, ',')" if sqlite else "string_agg(hash, ',')",
            text="total(typeof(hash) = 'text')" if sqlite else "count(*)",
        )
        for level in range(levels)
    )


class PageChecker:
    """Checks pages on one DB-API connection (sqlite3, or psycopg in binary mode)."""

    def __init__(self, connection: Any, sqlite: bool) -> None:
        self._sqlite = sqlite
        # psycopg in binary mode: bytea and timestamps without text parsing.
        self._cursor = connection.cursor() if sqlite else connection.cursor(binary=True)
        self._entries = _ENTRIES.format(
            p="?" if sqlite else "%s",
            bytes="CAST(entry AS BLOB)" if sqlite else "convert_to(entry, 'UTF8')",
            order=" ORDER BY seq" if sqlite else "",
        )
        self._nodes: dict[int, str] = {}

    @classmethod
    def connect(cls, target: Target) -> PageChecker:
        kind, where = target
        if kind == "sqlite":
            return cls(sqlite3.connect(where, check_same_thread=False), sqlite=True)
        import psycopg  # noqa: PLC0415 - only PostgreSQL workers load the driver

        return cls(psycopg.connect(where, autocommit=True), sqlite=False)

    def check(self, start: int, size: int, *, chain: bool, tree: bool) -> PageResult | None:
        """Checks entries [start, start + size) (size a power of two dividing
        start); None unless the page is clean."""
        self._cursor.execute(self._entries, (start, start + size))
        rows = self._cursor.fetchall()
        if len(rows) != size:
            return None
        if not self._sqlite:
            rows.sort(key=_seq)
        # One tuple per column, each value as the entry-by-entry check sees it.
        columns: list[tuple[Any, ...]] = list(zip(*rows, strict=True))
        del rows
        if columns[0] != tuple(range(start, start + size)):
            return None
        entries: tuple[bytes, ...] = columns[7]
        first_prev = last_hash = ""
        if chain:
            if not self._chain(columns):
                return None
            first_prev, last_hash = columns[8][0], columns[9][-1]
        root = None
        if tree:
            root = self._tree(start, entries)
            if root is None:
                return None
        return PageResult(first_prev, last_hash, root)

    @classmethod
    def _chain(cls, columns: list[tuple[Any, ...]]) -> bool:
        seqs, times, kinds, exchanges, subjects, elements, outcomes = columns[:7]
        entries, prevs, hashes = columns[7:]
        # Each entry hashes to its stored hash and names its predecessor's (the
        # first one's predecessor is the caller's to check).
        if tuple(map(_hexdigest, map(_sha256, entries))) != hashes or prevs[1:] != hashes[:-1]:
            return False
        spelt: dict[Any, str] = {}
        for moment in set(times):  # one per commit, mostly
            writer = _writer_time(moment)
            if writer is None:
                return False
            spelt[moment] = writer
        expected = list(
            zip(
                seqs,
                prevs,
                kinds,
                exchanges,
                subjects,
                elements,
                outcomes,
                map(spelt.__getitem__, times),
                strict=True,
            )
        )
        return cls._members(entries) == expected

    @staticmethod
    def _members(entries: tuple[bytes, ...]) -> list[tuple[Any, ...]] | None:
        """Each entry's compared members (None: an entry is not a JSON object)."""
        try:
            try:
                return list(map(_fields, map(_loads, entries)))
            except (KeyError, TypeError):  # a member is absent (None), or not an object
                found = []
                for entry in map(_loads, entries):
                    if not isinstance(entry, dict):
                        return None
                    found.append(tuple(map(entry.get, _FIELDS)))
                return found
        except orjson.JSONDecodeError:
            return None

    def _tree(self, start: int, entries: tuple[bytes, ...]) -> bytes | None:
        row: list[bytes] = list(map(_digest, map(_sha256, map(b"\x00".__add__, entries))))
        levels = [row]
        while len(row) > 1:
            pairs = map(bytes.__add__, row[0::2], row[1::2])
            row = list(map(_digest, map(_sha256, map(b"\x01".__add__, pairs))))
            levels.append(row)
        sql = self._nodes.get(len(levels))
        if sql is None:
            sql = self._nodes[len(levels)] = _nodes_sql(self._sqlite, len(levels))
        params: list[int] = []
        for level, hashes in enumerate(levels):
            lo = start >> level
            params += [level, lo, lo + len(hashes) - 1]
        self._cursor.execute(sql, params)
        stored = {level: (count, text, typed) for level, count, text, typed in self._cursor}
        for level, hashes in enumerate(levels):
            count, text, typed = stored.get(level, (0, None, 0))
            if count != len(hashes) or typed != count or text != ",".join(map(bytes.hex, hashes)):
                return None
        return row[0]


class Workers:
    """Worker processes (``python -m audit.pages``) that check pages; page ``i``
    goes to worker ``i mod n``, and the results come back in page order.

    Requests and results are JSON lines on the workers' stdin and stdout. The
    workers are started afresh: they import only this module, not the caller's
    ``__main__`` (as multiprocessing's spawn would)."""

    def __init__(self, target: Target, count: int) -> None:
        root = str(Path(__file__).resolve().parent.parent)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        self._target = target
        self._procs: list[subprocess.Popen[bytes]] = []
        try:
            for _ in range(count):
                self._procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "audit.pages"],
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                        env=env,
                    )
                )
        except BaseException:
            self.close()
            raise

    def results(
        self, pages: int, size: int, *, chain: bool, tree: bool
    ) -> Iterator[PageResult | None]:
        """Checks pages 0 .. pages-1 of ``size`` entries; yields their results in
        order. Raises WorkerFailed if a worker fails."""
        count = len(self._procs)
        for number, proc in enumerate(self._procs):
            assert proc.stdin is not None
            request = {
                "target": list(self._target),
                "starts": [i * size for i in range(number, pages, count)],
                "size": size,
                "chain": chain,
                "tree": tree,
            }
            try:
                proc.stdin.write(orjson.dumps(request) + b"\n")
                proc.stdin.close()
            except OSError as exc:
                raise WorkerFailed("a worker did not take its pages") from exc
        for number in range(pages):
            stdout = self._procs[number % count].stdout
            assert stdout is not None
            line = stdout.readline()
            if not line:
                raise WorkerFailed("a worker stopped")
            reply = orjson.loads(line)
            if isinstance(reply, dict):
                raise WorkerFailed(str(reply.get("error", "unknown error")))
            yield None if reply is None else PageResult(reply[0], reply[1], _root(reply[2]))

    def close(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            for stream in (proc.stdin, proc.stdout):
                if stream is not None:
                    stream.close()
        self._procs = []

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class WorkerFailed(Exception):
    """A worker process failed (its database error, or it died)."""


def _root(value: str | None) -> bytes | None:
    return None if value is None else bytes.fromhex(value)


def _serve() -> None:
    """A worker: reads one request, writes one result line per page."""
    gc.disable()  # pages allocate many short-lived objects and no reference cycles
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything else printed goes to stderr, not into the replies
    request = orjson.loads(sys.stdin.buffer.readline())
    try:
        for reply in _replies(request):
            out.write(orjson.dumps(reply) + b"\n")
            out.flush()
    except BrokenPipeError:  # the parent stopped reading: nothing left to do
        return


def _replies(request: dict[str, Any]) -> Iterator[Any]:
    try:
        checker = PageChecker.connect((request["target"][0], request["target"][1]))
        for start in request["starts"]:
            result = checker.check(
                start, request["size"], chain=request["chain"], tree=request["tree"]
            )
            if result is None:
                yield None
            else:
                root = None if result.root is None else result.root.hex()
                yield [result.first_prev, result.last_hash, root]
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which checks on alone
        yield {"error": f"{type(exc).__name__}: {exc}"}


if __name__ == "__main__":
    _serve()
