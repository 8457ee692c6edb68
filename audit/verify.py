"""Recomputes the audit hash chain (and the Merkle root) and names the first broken entry.

Verification raises; a clean log returns a summary."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from audit.log import GENESIS
from audit.merkle import EMPTY_ROOT, append_leaves, fold, leaf_hash
from audit.models import AuditEntry, AuditHead, AuditNode
from audit.tree import root_at
from broker.core.errors import AuditChainBroken
from broker.db.session import Database

CHUNK = 5000


@dataclass(frozen=True, slots=True)
class ChainSummary:
    size: int
    head_hash: str


async def verify_chain(db: Database) -> ChainSummary:
    """Checks every entry: its bytes hash to the stored hash, it names the
    previous entry's hash and its own position, and the indexed columns agree
    with the entry; the head row must match the last entry."""
    expected_seq = 0
    prev = GENESIS
    async with db.session() as session:
        while True:
            rows = (
                await session.scalars(
                    select(AuditEntry)
                    .where(AuditEntry.seq >= expected_seq)
                    .order_by(AuditEntry.seq)
                    .limit(CHUNK)
                )
            ).all()
            if not rows:
                break
            for row in rows:
                _check(row, expected_seq, prev)
                prev = row.entry_hash
                expected_seq += 1
        head = await session.get(AuditHead, 1)
    size = head.size if head else 0
    head_hash = head.head_hash if head else GENESIS
    if size != expected_seq:
        raise AuditChainBroken(
            f"the head (size {size}) does not match the log (size {expected_seq})",
            index=min(size, expected_seq),
        )
    if head_hash != prev:
        raise AuditChainBroken(
            f"entry {size - 1} does not match the recorded head hash", index=size - 1
        )
    return ChainSummary(size=expected_seq, head_hash=prev)


def _ts(value: object) -> datetime | None:
    try:
        return datetime.fromisoformat(str(value))
    except ValueError:
        return None


def _check(row: AuditEntry, seq: int, prev: str) -> None:
    if row.seq != seq:
        raise AuditChainBroken(f"entry {seq} is missing", index=seq)
    data = row.entry.encode("utf-8")
    if hashlib.sha256(data).hexdigest() != row.entry_hash:
        raise AuditChainBroken(f"entry {seq} was altered (hash mismatch)", index=seq)
    try:
        entry = json.loads(data)
    except ValueError as exc:
        raise AuditChainBroken(f"entry {seq} is not JSON", index=seq) from exc
    if entry.get("seq") != seq or entry.get("prev") != prev or row.prev_hash != prev:
        raise AuditChainBroken(f"entry {seq} does not follow entry {seq - 1}", index=seq)
    if (
        entry.get("kind") != row.kind
        or entry.get("subject") != row.subject_key
        or entry.get("element") != row.element
        or entry.get("exchange_id") != row.exchange_id
        or entry.get("outcome") != row.outcome
        or _ts(entry.get("ts")) != row.created_at
    ):
        raise AuditChainBroken(f"entry {seq}'s indexed columns were altered", index=seq)


@dataclass(frozen=True, slots=True)
class TreeSummary:
    size: int
    root_hash: bytes


async def verify_tree(db: Database) -> TreeSummary:
    """Recomputes the RFC 9162 root from every entry (the leaves) and checks it
    equals the root in the head row and the root built from the stored subtree
    hashes that proofs are served from."""
    frontier: list[bytes] = []
    size = 0
    async with db.session() as session:
        while True:
            rows = (
                await session.execute(
                    select(AuditEntry.seq, AuditEntry.entry)
                    .where(AuditEntry.seq >= size)
                    .order_by(AuditEntry.seq)
                    .limit(CHUNK)
                )
            ).all()
            if not rows:
                break
            if rows[0].seq != size:
                raise AuditChainBroken(f"entry {size} is missing", index=size)
            leaves = [leaf_hash(str(row.entry).encode("utf-8")) for row in rows]
            frontier, size, created = append_leaves(frontier, size, leaves)
            await _check_nodes(session, created)
        head = await session.get(AuditHead, 1)
        stored_count = int(await session.scalar(select(func.count()).select_from(AuditNode)) or 0)
    root = fold(frontier)
    stored = bytes.fromhex(head.root_hash) if head is not None and head.size else EMPTY_ROOT
    if (head.size if head else 0) != size or stored != root:
        raise AuditChainBroken(
            "the Merkle root in the head does not match the entries", index=max(size - 1, 0)
        )
    if stored_count != 2 * size - size.bit_count() or await root_at(db, size) != root:
        raise AuditChainBroken(
            "the stored subtree hashes do not match the entries", index=max(size - 1, 0)
        )
    return TreeSummary(size=size, root_hash=root)


async def _check_nodes(session: AsyncSession, created: list[tuple[int, int, bytes]]) -> None:
    """The stored perfect subtree hashes equal the recomputed ones (one read per level)."""
    by_level: dict[int, dict[int, bytes]] = {}
    for level, index, digest in created:
        by_level.setdefault(level, {})[index] = digest
    for level, expected in by_level.items():
        rows = await session.execute(
            select(AuditNode.index, AuditNode.hash).where(
                AuditNode.level == level,
                AuditNode.index >= min(expected),
                AuditNode.index <= max(expected),
            )
        )
        found = {int(index): digest for index, digest in rows}
        for index, digest in sorted(expected.items()):
            if found.get(index) != digest.hex():
                first = index << level
                raise AuditChainBroken(
                    f"the stored subtree ({level}, {index}) does not match entries "
                    f"{first}..{first + (1 << level) - 1}",
                    index=first,
                )
