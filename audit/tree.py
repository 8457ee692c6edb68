"""Reads the audit log's Merkle tree: roots and RFC 9162 proofs for any size.

Everything is computed from stored perfect subtree hashes (``audit_nodes``) in
one indexed read of at most ~2·log2(n) rows; nothing rehashes the log. Stored
subtrees never change once written, and are committed with the head that
covers them, so a size read from the head is always fully backed by nodes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import and_, or_, select

from audit.merkle import (
    EMPTY_ROOT,
    Key,
    Range,
    consistency_ranges,
    inclusion_ranges,
    range_hash,
    range_keys,
)
from audit.models import AuditHead, AuditNode
from broker.core.errors import AuditChainBroken, InvalidRequest
from broker.db.session import Database

# Per statement: stays well under every driver's bound-parameter limit.
_KEYS_PER_QUERY = 200


@dataclass(frozen=True, slots=True)
class TreeHead:
    size: int
    root_hash: bytes


@dataclass(frozen=True, slots=True)
class InclusionProof:
    index: int
    size: int
    leaf_hash: bytes
    root_hash: bytes
    hashes: list[bytes]


@dataclass(frozen=True, slots=True)
class ConsistencyProof:
    old_size: int
    new_size: int
    old_root: bytes
    new_root: bytes
    hashes: list[bytes]


async def tree_head(db: Database) -> TreeHead:
    async with db.session() as session:
        head = await session.get(AuditHead, 1)
    if head is None or head.size == 0:
        return TreeHead(size=0, root_hash=EMPTY_ROOT)
    return TreeHead(size=head.size, root_hash=bytes.fromhex(head.root_hash))


async def _nodes(db: Database, keys: Iterable[Key]) -> dict[Key, bytes]:
    wanted = sorted(set(keys))
    found: dict[Key, bytes] = {}
    async with db.session() as session:
        for start in range(0, len(wanted), _KEYS_PER_QUERY):
            chunk = wanted[start : start + _KEYS_PER_QUERY]
            rows = await session.execute(
                select(AuditNode.level, AuditNode.index, AuditNode.hash).where(
                    or_(*(and_(AuditNode.level == lv, AuditNode.index == i) for lv, i in chunk))
                )
            )
            for level, index, digest in rows:
                found[(int(level), int(index))] = bytes.fromhex(digest)
    missing = [k for k in wanted if k not in found]
    if missing:
        level, index = missing[0]
        raise AuditChainBroken(
            f"the audit tree lacks subtree ({level}, {index})", index=index << level
        )
    return found


async def _hashes(db: Database, ranges: list[Range]) -> list[bytes]:
    nodes = await _nodes(db, (k for lo, hi in ranges for k in range_keys(lo, hi)))
    return [range_hash(lo, hi, nodes) for lo, hi in ranges]


async def _checked_size(db: Database, size: int, field: str) -> None:
    current = (await tree_head(db)).size
    if size > current:
        raise InvalidRequest(f"the log holds {current} entries; {field} is larger", field=field)


async def root_at(db: Database, size: int) -> bytes:
    """The RFC 9162 root of the first ``size`` entries."""
    if size == 0:
        return EMPTY_ROOT
    await _checked_size(db, size, "size")
    return (await _hashes(db, [(0, size)]))[0]


async def inclusion_proof(db: Database, index: int, size: int) -> InclusionProof:
    """PATH(index, D[0:size]) with the leaf hash and the root it leads to."""
    if not 0 <= index < size:
        raise InvalidRequest("index must be smaller than size", field="index")
    await _checked_size(db, size, "size")
    ranges = inclusion_ranges(index, size)
    hashes = await _hashes(db, [(index, index + 1), (0, size), *ranges])
    return InclusionProof(
        index=index, size=size, leaf_hash=hashes[0], root_hash=hashes[1], hashes=hashes[2:]
    )


async def consistency_proof(db: Database, old_size: int, new_size: int) -> ConsistencyProof:
    """PROOF(old_size, D[0:new_size]) with both roots."""
    if not 0 <= old_size <= new_size:
        raise InvalidRequest("from must not be larger than to", field="from")
    await _checked_size(db, new_size, "to")
    ranges = consistency_ranges(old_size, new_size)
    wanted = [r for r in [(0, old_size), (0, new_size)] if r[1] > 0]
    hashes = await _hashes(db, [*wanted, *ranges])
    roots = hashes[: len(wanted)]
    old_root = roots[0] if old_size else EMPTY_ROOT
    new_root = roots[-1] if new_size else EMPTY_ROOT
    return ConsistencyProof(
        old_size=old_size,
        new_size=new_size,
        old_root=old_root,
        new_root=new_root,
        hashes=hashes[len(wanted) :],
    )
