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
    on the way as ``(level, index, hash)`` (leaves are level 0)."""
    frontier = list(frontier)
    created: list[tuple[int, int, bytes]] = []
    for leaf in leaves:
        h = leaf
        created.append((0, size, h))
        level = 0
        while size >> level & 1:
            h = node_hash(frontier.pop(), h)
            level += 1
            created.append((level, ((size + 1) >> level) - 1, h))
        frontier.append(h)
        size += 1
    return frontier, size, created


def encode_frontier(frontier: Sequence[bytes]) -> str:
    return ",".join(h.hex() for h in frontier)


def decode_frontier(text: str | None) -> list[bytes]:
    return [bytes.fromhex(part) for part in text.split(",")] if text else []
