"""Audit log benchmarks: durable appends, full verification, proof latency.

    PYTHONPATH=. python bench/audit_log.py append [--backend sqlite|postgresql|both]
        [--appenders 64] [--unit 5] [--seconds 20]
    PYTHONPATH=. python bench/audit_log.py verify [--backend ...] [--entries 1000000]
        [--proofs 2000] [--workers N]

Every run uses a fresh, migrated database (SQLite file under /tmp, or a new
PostgreSQL database on 127.0.0.1:5432 that is dropped afterwards).

``append``: N concurrent tasks each append exchange-sized units (``--unit``
decision-shaped entries) through the real ``AuditWriter`` (group commit, one
durable transaction per batch: SQLite WAL + synchronous=FULL, PostgreSQL
defaults; hash chain and Merkle tree maintained in the same transaction) while a
checkpoint signer signs the head every second; prints entries/s and the
append latency p50/p99.

``verify``: fills the log through the writer's own commit code in large batches
(a valid chain, tree and head, no shortcuts in what is stored), then times
``verify_log`` (chain and tree in one read: what ``broker audit verify`` runs;
whole pages checked by worker processes, ``--workers``)
and, on the same log, RFC 9162 inclusion proofs (random leaf, full size) and
consistency proofs (random old size) as the transparency routes serve them
(``audit.tree``), p50/p99, checking a sample with the stand-alone verifier.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import psycopg

from audit import verifier
from audit.log import AuditRecord, AuditWriter, CommitUnit
from audit.tree import consistency_proof, inclusion_proof, tree_head
from audit.verify import verify_chain, verify_log, verify_tree
from broker.crypto.keys import BrokerKeyring
from broker.db.migrate import upgrade
from broker.db.session import Database
from broker.transparency.checkpoint import CheckpointSigner

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
ORIGIN = "bench.broker.example/audit"


_ELEMENTS = ("police.suspect_history_dv", "health.diagnosis", "household.composition")
# What every decision entry of the benchmark shares; record() adds the rest.
_DECISION = {
    "requester": "00000001003214345000",
    "recipient_party": "veilig_thuis",
    "provider": "00000001001589623000",
    "provider_party": "politie",
    "purpose": "informatie_voor_veiligheidsbeoordeling",
    "agreement": {
        "id": "agr-vt-politie-hg",
        "version": "3.0",
        "hash": "sha256:" + "a" * 64,
    },
    "bundle": "sha256:" + "b" * 64,
    "engine": "regopy",
    "subject_kind": "person",
    "consent_id": None,
    "acute_declaration_id": None,
}
_ALLOW = {"outcome": "allow", "reason": "allow_statutory_basis", "legal_basis": ["wpg_20"]}
_DENY = {"outcome": "deny", "reason": "deny_element_not_allowed", "legal_basis": []}


def record(n: int) -> AuditRecord:
    """A decision entry shaped as an exchange writes it (pseudonyms only)."""
    exchange = n // 5
    digits = f"{exchange + 1:032x}"  # str(uuid.UUID(int=exchange + 1)), without the UUID object
    exchange_id = f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"
    subject = f"psn:{n % 100_003:040x}"
    element = _ELEMENTS[n % 3]
    allow = n % 3 != 1
    verdict = _ALLOW if allow else _DENY
    return AuditRecord(
        kind="decision",
        body={
            **_DECISION,
            **verdict,
            "request_id": f"req-{exchange}",
            "trace_id": f"{exchange:032x}",
            "exchange_id": exchange_id,
            "decision_id": exchange_id,
            "subject": subject,
            "element": element,
        },
        exchange_id=exchange_id,
        subject_key=subject,
        element=element,
        outcome="allow" if allow else "deny",
    )


@contextlib.asynccontextmanager
async def fresh_database(backend: str) -> AsyncIterator[Database]:
    if backend == "sqlite":
        with tempfile.TemporaryDirectory(prefix="audit-bench-") as tmp:
            url = f"sqlite:///{Path(tmp) / 'audit.db'}"
            upgrade(url)
            db = Database("sqlite+aiosqlite:///" + url.removeprefix("sqlite:///"))
            try:
                yield db
            finally:
                await db.dispose()
        return
    name = f"audit_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    try:
        upgrade(url)
        db = Database(url)
        try:
            yield db
        finally:
            await db.dispose()
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


# ----------------------------------------------------------------- append
async def bench_append(backend: str, appenders: int, unit: int, seconds: float) -> None:
    async with fresh_database(backend) as db:
        writer = AuditWriter(db)
        await writer.start()
        with tempfile.TemporaryDirectory(prefix="audit-bench-keys-") as keys:
            signer = CheckpointSigner(db, BrokerKeyring.load_or_create(Path(keys)), ORIGIN)
            stop = time.perf_counter() + seconds
            latencies: list[float] = []
            checkpoints = 0

            async def appender(i: int) -> None:
                n = i * 10_000_000
                while time.perf_counter() < stop:
                    t0 = time.perf_counter()
                    await writer.append([record(n + k) for k in range(unit)])
                    latencies.append(time.perf_counter() - t0)
                    n += unit

            async def checkpointer() -> None:
                nonlocal checkpoints
                while time.perf_counter() < stop:
                    await signer.latest()
                    checkpoints += 1
                    await asyncio.sleep(1.0)

            t0 = time.perf_counter()
            await asyncio.gather(checkpointer(), *(appender(i) for i in range(appenders)))
            elapsed = time.perf_counter() - t0
        await writer.stop()
        size = (await tree_head(db)).size
        t1 = time.perf_counter()
        await verify_chain(db)
        await verify_tree(db)
        checked = time.perf_counter() - t1
    print(
        f"[{backend}] append: {size:,} entries in {elapsed:.1f} s = {size / elapsed:,.0f} "
        f"durable entries/s ({len(latencies) / elapsed:,.0f} units of {unit}/s, {appenders} "
        f"appenders); append latency p50 {statistics.median(latencies) * 1000:.1f} ms, "
        f"p99 {_pct(latencies, 0.99) * 1000:.1f} ms; {checkpoints} checkpoints signed; "
        f"log verified in {checked:.1f} s"
    )


# ----------------------------------------------------------------- fill
async def fill(db: Database, entries: int, batch: int = 20_000) -> float:
    """``entries`` entries through the writer's own commit code, ``batch`` per commit."""
    writer = AuditWriter(db)
    await writer.start()
    t0 = time.perf_counter()
    try:
        loop = asyncio.get_running_loop()
        done = 0
        while done < entries:
            count = min(batch, entries - done)
            unit = CommitUnit(
                records=[record(done + k) for k in range(count)], future=loop.create_future()
            )
            await asyncio.to_thread(writer._commit, [unit])  # the writer's commit, in bulk
            done += count
    finally:
        await writer.stop()
    return time.perf_counter() - t0


async def bench_verify(backend: str, entries: int, proofs: int, workers: int | None) -> None:
    async with fresh_database(backend) as db:
        filled = await fill(db, entries)
        print(f"[{backend}] filled {entries:,} entries in {filled:.0f} s", flush=True)
        t0 = time.perf_counter()
        chain, tree = await verify_log(db, workers=workers)
        elapsed = time.perf_counter() - t0
        assert chain.size == tree.size == entries
        print(
            f"[{backend}] verify: {entries:,} entries (chain and Merkle tree, one pass) in "
            f"{elapsed:.1f} s ({entries / elapsed:,.0f} entries/s)",
            flush=True,
        )
        if proofs:
            await bench_proofs(db, backend, proofs)


async def bench_proofs(db: Database, backend: str, proofs: int) -> None:
    head = await tree_head(db)
    entries = head.size
    rng = random.Random(3)
    inclusion: list[float] = []
    consistency: list[float] = []
    for i in range(proofs):
        index = rng.randrange(head.size)
        t0 = time.perf_counter()
        proof = await inclusion_proof(db, index, head.size)
        inclusion.append(time.perf_counter() - t0)
        if i % 50 == 0:
            verifier.verify_inclusion(
                proof.leaf_hash, index, head.size, proof.hashes, head.root_hash
            )
        old = rng.randrange(1, head.size)
        t0 = time.perf_counter()
        cproof = await consistency_proof(db, old, head.size)
        consistency.append(time.perf_counter() - t0)
        if i % 50 == 0:
            verifier.verify_consistency(
                old, head.size, cproof.old_root, head.root_hash, cproof.hashes
            )
    for name, values in (("inclusion", inclusion), ("consistency", consistency)):
        print(
            f"[{backend}] {name} proofs at size {entries:,}: "
            f"{len(values)} proofs, p50 {statistics.median(values) * 1000:.2f} ms, "
            f"p99 {_pct(values, 0.99) * 1000:.2f} ms"
        )


def _backends(choice: str) -> Iterator[str]:
    yield from (["sqlite", "postgresql"] if choice == "both" else [choice])


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("append", "verify"):
        p = sub.add_parser(name)
        p.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
        if name == "append":
            p.add_argument("--appenders", type=int, default=64)
            p.add_argument("--unit", type=int, default=5)
            p.add_argument("--seconds", type=float, default=20)
        else:
            p.add_argument("--entries", type=int, default=1_000_000)
            p.add_argument("--proofs", type=int, default=2000, help="0: no proof timings")
            p.add_argument(
                "--workers",
                type=int,
                default=None,
                help="processes that check pages (default: one per CPU; 0: none)",
            )
    args: Any = parser.parse_args()
    for backend in _backends(args.backend):
        if args.command == "append":
            asyncio.run(bench_append(backend, args.appenders, args.unit, args.seconds))
        else:
            asyncio.run(bench_verify(backend, args.entries, args.proofs, args.workers))


if __name__ == "__main__":
    main()
