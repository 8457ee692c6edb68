"""RFC 9162 Merkle tree arithmetic over stored perfect subtrees (pure, no I/O).

A *perfect subtree* ``(level, index)`` covers the leaves
``[index * 2**level, (index + 1) * 2**level)``; the writer stores the hash of
each one the moment it becomes complete (``audit_nodes``). Every tree hash an
RFC 9162 root, inclusion proof or consistency proof needs is the hash of a leaf
range ``[lo, hi)`` whose ``lo`` is a multiple of a power of two at least
``hi - lo``; such a range splits into the perfect subtrees named by the bits of
``hi - lo`` (largest first), so it costs a handful of stored hashes, never a
rehash of the log.

The *frontier* of a tree of size n is the hashes of the perfect subtrees of
``[0, n)``, largest first (one per set bit of n); the head row keeps it so an
append costs O(log n).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from itertools import repeat

from broker.core.canonical import leaf_hash, node_hash

EMPTY_ROOT = hashlib.sha256(b"").digest()

Key = tuple[int, int]  # (level, index) of a perfect subtree
Range = tuple[int, int]  # leaves [lo, hi)

__all__ = [
    "EMPTY_ROOT",
    "Key",
    "Range",
    "append_leaves",
    "consistency_ranges",
    "fold",
    "inclusion_ranges",
    "largest_power_below",
    "leaf_hash",
    "node_hash",
    "range_hash",
    "range_keys",
]


def largest_power_below(n: int) -> int:
    """The largest power of two strictly smaller than ``n`` (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


def range_keys(lo: int, hi: int) -> list[Key]:
    """The perfect subtrees, left to right, that make up the aligned range [lo, hi)."""
    keys: list[Key] = []
    start = lo
    size = hi - lo
    for level in range(size.bit_length() - 1, -1, -1):
        if size >> level & 1:
            if start % (1 << level):
                raise ValueError(f"range [{lo}, {hi}) is not aligned")
            keys.append((level, start >> level))
            start += 1 << level
    return keys


def fold(hashes: Sequence[bytes]) -> bytes:
    """The root over perfect subtree hashes given largest (leftmost) first."""
    if not hashes:
        return EMPTY_ROOT
    root = hashes[-1]
    for h in reversed(hashes[:-1]):
        root = node_hash(h, root)
    return root


def range_hash(lo: int, hi: int, nodes: Mapping[Key, bytes]) -> bytes:
    """MTH(D[lo:hi]) from stored perfect subtree hashes."""
    return fold([nodes[key] for key in range_keys(lo, hi)])


def inclusion_ranges(index: int, size: int) -> list[Range]:
    """The ranges whose hashes form PATH(index, D[0:size]) (RFC 9162 2.1.3.1), in order."""
    if not 0 <= index < size:
        raise ValueError("index out of range")
    out: list[Range] = []
    lo, hi = 0, size
    while hi - lo > 1:
        k = largest_power_below(hi - lo)
        if index < lo + k:
            out.append((lo + k, hi))
            hi = lo + k
        else:
            out.append((lo, lo + k))
            lo += k
    out.reverse()  # PATH lists the deepest sibling first
    return out


def consistency_ranges(old: int, new: int) -> list[Range]:
    """The ranges whose hashes form PROOF(old, D[0:new]) (RFC 9162 2.1.4.1), in order.

    Empty when ``old`` is 0 or equals ``new``."""
    if not 0 <= old <= new:
        raise ValueError("sizes out of range")
    if old in (0, new):
        return []
    out: list[Range] = []
    lo, hi, m, complete = 0, new, old, True
    while True:
        n = hi - lo
        if m == n:
            if not complete:
                out.append((lo, hi))
            break
        k = largest_power_below(n)
        if m <= k:
            out.append((lo + k, hi))
            hi = lo + k
        else:
            out.append((lo, lo + k))
            lo += k
            m -= k
            complete = False
    out.reverse()  # SUBPROOF lists the deepest node first
    return out


def append_leaves(
    frontier: list[bytes], size: int, leaves: Iterable[bytes]
) -> tuple[list[bytes], int, list[tuple[int, int, bytes]]]:
    """Appends leaf hashes to a tree given by its frontier and size.

    Returns the new frontier, the new size and every perfect subtree completed
    on the way as ``(level, index, hash)`` (leaves are level 0), level by level
    and left to right. Works a level at a time: the new nodes of one level are
    hashed in pairs, the first one with the old frontier's subtree of that level
    when it starts at an odd index, the last one left over when it ends at an
    odd index (it joins the new frontier)."""
    row = list(leaves)
    end = size + len(row)
    # The old frontier by level: one subtree per set bit of size, largest first.
    levels = [lv for lv in range(size.bit_length() - 1, -1, -1) if size >> lv & 1]
    if len(levels) != len(frontier):
        raise ValueError("the frontier does not match the size")
    old = dict(zip(levels, frontier, strict=True))
    new: dict[int, bytes] = {}
    created: list[tuple[int, int, bytes]] = []
    level, lo = 0, size  # row holds the new nodes [lo, lo + len(row)) of this level
    while row:
        created.extend(zip(repeat(level), range(lo, lo + len(row)), row))
        if lo & 1:  # the old frontier's subtree at this level is the left sibling
            row.insert(0, old.pop(level))
            lo -= 1
        if len(row) & 1:  # the last node has no right sibling yet
            new[level] = row.pop()
        row = list(map(node_hash, row[0::2], row[1::2]))
        level += 1
        lo >>= 1
    # What the new nodes did not reach stays (the size's higher bits are unchanged).
    new.update(old)
    return [new[lv] for lv in sorted(new, reverse=True)], end, created


def encode_frontier(frontier: Sequence[bytes]) -> str:
    return ",".join(h.hex() for h in frontier)


def decode_frontier(text: str | None) -> list[bytes]:
    return [bytes.fromhex(part) for part in text.split(",")] if text else []
