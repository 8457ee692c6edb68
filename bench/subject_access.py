"""Subject-access report latency on a large audit log (SQLite).

Fills a fresh, migrated SQLite database with N audit entries (default 1,000,000)
for many synthetic subjects: exchanges of three decision entries (two person
elements and one household element) and one release entry. The rows are written
with bulk Core inserts and BYPASS THE HASH CHAIN AND THE MERKLE TREE (fake
``prev_hash``/``entry_hash``, no ``audit_nodes``, a head with a fake root): the log does
not verify, it only has the size and the indexes of a real one. Then times
``SubjectAccessService.report`` (the log head, the indexed ``subject_key``
lookup, the release entries by ``exchange_id``, JSON parsing and report
building) for random subjects, with an in-memory register, and prints p50/p99
in ms; and the PDF rendering of every tenth report.

    PYTHONPATH=. python bench/subject_access.py [--entries 1000000] [--lookups 1000]
        [--db /tmp/subject-access-bench.db] [--reuse]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import orjson
from sqlalchemy import Table, create_engine, event, func, insert, select

from audit.log import AuditWriter
from audit.models import AuditEntry, AuditHead
from broker.core.protocols import PersonRecord
from broker.crypto.keys import Pseudonymizer
from broker.db.migrate import upgrade
from broker.db.session import Database
from broker.reference import ReferenceData
from broker.settings import PROJECT_ROOT
from broker.subject_access.pdf import render_pdf
from broker.subject_access.service import SubjectAccessService

PERSON_ELEMENTS = ("police.suspect_history_dv", "health.diagnosis", "school.attendance_absence")
HOUSEHOLD_ELEMENT = "household.composition"
REQUESTER, PROVIDER = "00000001003214345000", "00000001001589623000"
ENTRIES_PER_EXCHANGE = 4  # three decisions and one release
HOUSEHOLD_SIZE = 3
CHUNK = 50_000


def valid_bsns(count: int, start: int = 10_000_000) -> list[str]:
    """``count`` nine-digit numbers that pass the elfproef."""
    out: list[str] = []
    prefix = start
    weights = (9, 8, 7, 6, 5, 4, 3, 2)
    while len(out) < count:
        digits = f"{prefix:08d}"
        last = sum(int(d) * w for d, w in zip(digits, weights, strict=True)) % 11
        if last <= 9:
            out.append(digits + str(last))
        prefix += 1
    return out


class MemoryRegister:
    def __init__(self, households: dict[str, str]) -> None:
        self._households = households

    async def lookup(self, bsns: Sequence[str]) -> dict[str, PersonRecord]:
        return {
            b: PersonRecord(bsn=b, birth_date=None, household_id=self._households.get(b))
            for b in bsns
        }

    async def aclose(self) -> None:
        return None


def _decision(
    seq: int, at: datetime, exchange_id: str, key: str, element: str, allow: bool
) -> dict[str, Any]:
    body = {
        "v": 1,
        "seq": seq,
        "prev": "0" * 64,
        "ts": at.isoformat(timespec="microseconds"),
        "kind": "decision",
        "exchange_id": exchange_id,
        "requester": REQUESTER,
        "provider": PROVIDER,
        "purpose": "informatie_voor_veiligheidsbeoordeling",
        "agreement": {"id": "agr-vt-politie-hg", "version": "3.0", "hash": "sha256:" + "0" * 64},
        "subject": key,
        "element": element,
        "outcome": "allow" if allow else "deny",
        "reason": "allow_statutory_basis" if allow else "deny_element_not_allowed",
        "legal_basis": ["wpg_20"] if allow else [],
        "consent_id": None,
        "acute_declaration_id": None,
    }
    return {
        "seq": seq,
        "created_at": at,
        "kind": "decision",
        "exchange_id": exchange_id,
        "subject_key": key,
        "element": element,
        "outcome": body["outcome"],
        "entry": orjson.dumps(body).decode(),
        "prev_hash": "0" * 64,
        "entry_hash": "0" * 64,
    }


def fill(path: Path, entries: int, bsns: list[str], households: dict[str, str]) -> None:
    pseudo = Pseudonymizer(b"bench-pseudonym-key-0123456789ab")
    person_keys = [pseudo.person(b) for b in bsns]
    household_keys = {h: pseudo.household(h) for h in set(households.values())}
    url = f"sqlite:///{path}"
    upgrade(url)
    engine = create_engine(url)

    @event.listens_for(engine, "connect")
    def _fast(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=OFF")
        cursor.execute("PRAGMA synchronous=OFF")
        cursor.close()

    table = cast(Table, AuditEntry.__table__)
    rng = random.Random(1)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    rows: list[dict[str, Any]] = []
    seq = 0
    with engine.begin() as conn:
        while seq < entries:
            i = rng.randrange(len(bsns))
            key = person_keys[i]
            hh_key = household_keys[households[bsns[i]]]
            exchange_id = f"{seq:036d}"
            at = start + timedelta(seconds=seq)
            released = []
            for element, subject, allow in (
                (PERSON_ELEMENTS[0], key, True),
                (PERSON_ELEMENTS[rng.randrange(1, 3)], key, False),
                (HOUSEHOLD_ELEMENT, hh_key, True),
            ):
                if seq >= entries:
                    break
                rows.append(_decision(seq, at, exchange_id, subject, element, allow))
                if allow:
                    released.append({"subject": subject, "element": element, "status": "released"})
                seq += 1
            if seq < entries and released:
                body = {"kind": "release", "exchange_id": exchange_id, "items": released}
                rows.append(
                    {
                        "seq": seq,
                        "created_at": at,
                        "kind": "release",
                        "exchange_id": exchange_id,
                        "subject_key": None,
                        "element": None,
                        "outcome": None,
                        "entry": orjson.dumps(body).decode(),
                        "prev_hash": "0" * 64,
                        "entry_hash": "0" * 64,
                    }
                )
                seq += 1
            if len(rows) >= CHUNK:
                conn.execute(insert(table), rows)
                rows = []
        if rows:
            conn.execute(insert(table), rows)
        # A head naming the size (reports read the entries below it); a fake root.
        conn.execute(
            insert(cast(Table, AuditHead.__table__)),
            {"id": 1, "size": seq, "head_hash": "0" * 64, "root_hash": "0" * 64, "frontier": ""},
        )
        conn.exec_driver_sql("ANALYZE")
    engine.dispose()


async def measure(path: Path, lookups: int, bsns: list[str], households: dict[str, str]) -> None:
    db = Database(f"sqlite+aiosqlite:///{path}")
    reference = ReferenceData.load(PROJECT_ROOT / "policies")
    service = SubjectAccessService(
        db=db,
        audit=AuditWriter(db),  # never started: report() does not write
        pseudonymizer=Pseudonymizer(b"bench-pseudonym-key-0123456789ab"),
        register=MemoryRegister(households),
        reference=lambda: reference,
        privacy_officers=frozenset(),
    )
    async with db.session() as session:
        size = await session.scalar(select(func.count()).select_from(AuditEntry))
    rng = random.Random(2)
    for bsn in rng.sample(bsns, min(20, len(bsns))):  # warm up
        await service.report(bsn)
    timings: list[float] = []
    pdf_timings: list[float] = []
    counts: list[int] = []
    for i in range(lookups):
        bsn = rng.choice(bsns)
        t0 = time.perf_counter()
        report = await service.report(bsn)
        timings.append((time.perf_counter() - t0) * 1000)
        counts.append(report.entry_count)
        if i % 10 == 0:  # the printable PDF of every tenth report
            t0 = time.perf_counter()
            render_pdf(report)
            pdf_timings.append((time.perf_counter() - t0) * 1000)
    await db.dispose()
    timings.sort()
    p50 = statistics.median(timings)
    p99 = timings[min(len(timings) - 1, int(len(timings) * 0.99))]
    print(
        f"{size:,} audit entries, {len(bsns):,} subjects; {lookups} reports "
        f"(mean {statistics.mean(counts):.1f} entries each): p50 {p50:.2f} ms, p99 {p99:.2f} ms"
    )
    pdf_timings.sort()
    print(
        f"PDF of {len(pdf_timings)} of those reports: p50 {statistics.median(pdf_timings):.1f} ms, "
        f"p99 {pdf_timings[min(len(pdf_timings) - 1, int(len(pdf_timings) * 0.99))]:.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--subjects", type=int, default=None, help="default: entries / 20")
    parser.add_argument("--lookups", type=int, default=1000)
    parser.add_argument("--db", type=Path, default=Path("/tmp/subject-access-bench.db"))
    parser.add_argument("--reuse", action="store_true", help="Time an existing database")
    args = parser.parse_args()
    subjects = args.subjects or max(1, args.entries // 20)
    bsns = valid_bsns(subjects)
    households = {b: f"HH-{i // HOUSEHOLD_SIZE}" for i, b in enumerate(bsns)}
    if not args.reuse:
        if args.db.exists():
            os.remove(args.db)
        t0 = time.perf_counter()
        fill(args.db, args.entries, bsns, households)
        print(f"filled {args.entries:,} entries in {time.perf_counter() - t0:.1f} s")
    asyncio.run(measure(args.db, args.lookups, bsns, households))


if __name__ == "__main__":
    main()
