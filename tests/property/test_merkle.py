"""RFC 9162 Merkle tree: the stored-subtree arithmetic (audit.merkle) against an
independent, naive recursive implementation of the RFC's definitions, and the
stand-alone verifier (audit.verifier) against both."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audit import merkle, verifier
from audit.verifier import VerificationError

# ---------------------------------------------------------------- naive RFC 9162


def _h(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _k(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def naive_mth(d: list[bytes]) -> bytes:
    """MTH(D[n]) straight from RFC 9162 section 2.1.1."""
    if not d:
        return _h(b"")
    if len(d) == 1:
        return _h(b"\x00" + d[0])
    k = _k(len(d))
    return _h(b"\x01" + naive_mth(d[:k]) + naive_mth(d[k:]))


def naive_path(m: int, d: list[bytes]) -> list[bytes]:
    """PATH(m, D[n]) (section 2.1.3.1)."""
    if len(d) == 1:
        return []
    k = _k(len(d))
    if m < k:
        return [*naive_path(m, d[:k]), naive_mth(d[k:])]
    return [*naive_path(m - k, d[k:]), naive_mth(d[:k])]


def naive_subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    """SUBPROOF(m, D[n], b) (section 2.1.4.1)."""
    n = len(d)
    if m == n:
        return [] if b else [naive_mth(d)]
    k = _k(n)
    if m <= k:
        return [*naive_subproof(m, d[:k], b), naive_mth(d[k:])]
    return [*naive_subproof(m - k, d[k:], False), naive_mth(d[:k])]


def naive_proof(m: int, d: list[bytes]) -> list[bytes]:
    return naive_subproof(m, d, True) if 0 < m < len(d) else []


# ---------------------------------------------------------------- stored-subtree side


def build(entries: list[bytes]) -> tuple[dict[merkle.Key, bytes], list[bytes]]:
    frontier, size, created = merkle.append_leaves([], 0, [merkle.leaf_hash(e) for e in entries])
    assert size == len(entries)
    return {(lv, i): h for lv, i, h in created}, frontier


def stored_path(nodes: dict[merkle.Key, bytes], index: int, size: int) -> list[bytes]:
    return [merkle.range_hash(lo, hi, nodes) for lo, hi in merkle.inclusion_ranges(index, size)]


def stored_proof(nodes: dict[merkle.Key, bytes], old: int, new: int) -> list[bytes]:
    return [merkle.range_hash(lo, hi, nodes) for lo, hi in merkle.consistency_ranges(old, new)]


def stored_root(nodes: dict[merkle.Key, bytes], size: int) -> bytes:
    return merkle.range_hash(0, size, nodes) if size else merkle.EMPTY_ROOT


# The leaves of the RFC 6962 test vectors used by the Certificate Transparency
# implementations, with their roots: an external check of the naive code too.
CT_LEAVES = [
    bytes.fromhex(x)
    for x in [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
]
CT_ROOTS = {
    1: "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    2: "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    3: "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    4: "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    5: "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    6: "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    7: "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    8: "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
}


def test_known_answer_roots() -> None:
    nodes, _ = build(CT_LEAVES)
    assert naive_mth([]).hex() == merkle.EMPTY_ROOT.hex()
    for size, root in CT_ROOTS.items():
        assert naive_mth(CT_LEAVES[:size]).hex() == root
        assert stored_root(nodes, size).hex() == root


def test_known_answer_proofs_over_small_trees() -> None:
    """Every root, inclusion path and consistency proof of every tree up to 33
    leaves equals the naive RFC computation, and verifies."""
    entries = [f"entry-{i}".encode() for i in range(33)]
    nodes, _ = build(entries)
    for n in range(1, len(entries) + 1):
        d = entries[:n]
        root = naive_mth(d)
        assert stored_root(nodes, n) == root
        _, frontier = build(d)
        assert merkle.fold(frontier) == root
        for m in range(n):
            path = naive_path(m, d)
            assert stored_path(nodes, m, n) == path
            verifier.verify_inclusion(merkle.leaf_hash(d[m]), m, n, path, root)
        for m in range(n + 1):
            proof = naive_proof(m, d)
            assert stored_proof(nodes, m, n) == proof
            verifier.verify_consistency(m, n, naive_mth(d[:m]), root, proof)


def test_a_hand_checked_proof() -> None:
    """Tree of 7 (RFC 9162 figure): PATH(3) = [d2, (0..1), (4..6)]."""
    d = [bytes([i]) for i in range(7)]
    nodes, _ = build(d)
    leaf = [merkle.leaf_hash(x) for x in d]
    n45 = merkle.node_hash(leaf[4], leaf[5])
    assert stored_path(nodes, 3, 7) == [
        leaf[2],
        merkle.node_hash(leaf[0], leaf[1]),
        merkle.node_hash(n45, leaf[6]),
    ]
    # PROOF(3, D[7]) = [c, d, g, l] in the RFC's example naming.
    assert stored_proof(nodes, 3, 7) == [
        leaf[2],
        leaf[3],
        merkle.node_hash(leaf[0], leaf[1]),
        merkle.node_hash(n45, leaf[6]),
    ]


def _flip(h: bytes, bit: int) -> bytes:
    i = bit % (len(h) * 8)
    return h[: i // 8] + bytes([h[i // 8] ^ (1 << (i % 8))]) + h[i // 8 + 1 :]


@st.composite
def tree_and_index(draw: st.DrawFn) -> tuple[list[bytes], int]:
    n = draw(st.integers(min_value=1, max_value=300))
    return [f"e{i}".encode() for i in range(n)], draw(st.integers(0, n - 1))


@settings(max_examples=200, deadline=None)
@given(case=tree_and_index(), which=st.integers(0, 10_000), bit=st.integers(0, 255))
def test_every_inclusion_proof_verifies_and_a_tampered_one_fails(
    case: tuple[list[bytes], int], which: int, bit: int
) -> None:
    entries, index = case
    n = len(entries)
    nodes, frontier = build(entries)
    root = merkle.fold(frontier)
    leaf = merkle.leaf_hash(entries[index])
    path = stored_path(nodes, index, n)
    verifier.verify_inclusion(leaf, index, n, path, root)
    with pytest.raises(VerificationError):
        verifier.verify_inclusion(_flip(leaf, bit), index, n, path, root)
    with pytest.raises(VerificationError):
        verifier.verify_inclusion(leaf, index, n, path, _flip(root, bit))
    if path:
        k = which % len(path)
        tampered = [*path[:k], _flip(path[k], bit), *path[k + 1 :]]
        with pytest.raises(VerificationError):
            verifier.verify_inclusion(leaf, index, n, tampered, root)
        with pytest.raises(VerificationError):
            verifier.verify_inclusion(leaf, index, n, path[:-1], root)
    with pytest.raises(VerificationError):
        verifier.verify_inclusion(leaf, index, n, [*path, root], root)


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(min_value=1, max_value=300),
    m_frac=st.floats(0, 1),
    which=st.integers(0, 10_000),
    bit=st.integers(0, 255),
)
def test_consistency_proofs_between_any_sizes_verify(
    n: int, m_frac: float, which: int, bit: int
) -> None:
    entries = [f"c{i}".encode() for i in range(n)]
    m = round(m_frac * n)
    nodes, _ = build(entries)
    old_root, new_root = stored_root(nodes, m), stored_root(nodes, n)
    proof = stored_proof(nodes, m, n)
    verifier.verify_consistency(m, n, old_root, new_root, proof)
    if 0 < m < n:
        k = which % len(proof)
        tampered = [*proof[:k], _flip(proof[k], bit), *proof[k + 1 :]]
        with pytest.raises(VerificationError):
            verifier.verify_consistency(m, n, old_root, new_root, tampered)
        with pytest.raises(VerificationError):
            verifier.verify_consistency(m, n, _flip(old_root, bit), new_root, proof)
        with pytest.raises(VerificationError):
            verifier.verify_consistency(m, n, old_root, _flip(new_root, bit), proof)


@settings(max_examples=100, deadline=None)
@given(chunks=st.lists(st.integers(0, 40), min_size=1, max_size=12))
def test_appends_in_any_batches_give_the_same_tree(chunks: list[int]) -> None:
    """Appending in batches (as the writer does across commits) stores exactly
    the perfect subtrees of one big append, and the frontier folds to the root."""
    total = sum(chunks)
    entries = [f"b{i}".encode() for i in range(total)]
    frontier: list[bytes] = []
    size = 0
    nodes: dict[merkle.Key, bytes] = {}
    for c in chunks:
        leaves = [merkle.leaf_hash(e) for e in entries[size : size + c]]
        frontier, size, created = merkle.append_leaves(
            merkle.decode_frontier(merkle.encode_frontier(frontier)), size, leaves
        )
        for lv, i, h in created:
            assert (lv, i) not in nodes
            nodes[(lv, i)] = h
    whole, _ = build(entries)
    assert nodes == whole
    assert merkle.fold(frontier) == naive_mth(entries)


def per_leaf_append(
    frontier: list[bytes], size: int, leaves: list[bytes]
) -> tuple[list[bytes], int, set[tuple[int, int, bytes]]]:
    """The textbook append, a leaf at a time (a binary counter over subtrees)."""
    frontier = list(frontier)
    created: set[tuple[int, int, bytes]] = set()
    for leaf in leaves:
        h, level = leaf, 0
        created.add((0, size, h))
        while size >> level & 1:
            h = merkle.node_hash(frontier.pop(), h)
            level += 1
            created.add((level, ((size + 1) >> level) - 1, h))
        frontier.append(h)
        size += 1
    return frontier, size, created


@settings(max_examples=200, deadline=None)
@given(before=st.integers(0, 300), count=st.integers(0, 300))
def test_level_by_level_append_equals_the_per_leaf_append(before: int, count: int) -> None:
    leaves = [merkle.leaf_hash(f"e{i}".encode()) for i in range(before + count)]
    frontier, size, _ = per_leaf_append([], 0, leaves[:before])
    expected = per_leaf_append(frontier, size, leaves[before:])
    got_frontier, got_size, created = merkle.append_leaves(frontier, size, leaves[before:])
    assert (got_frontier, got_size, set(created)) == expected
    assert len(created) == len(expected[2])
    # Level by level, left to right.
    assert created == sorted(created, key=lambda node: (node[0], node[1]))


def test_append_refuses_a_frontier_that_does_not_match_the_size() -> None:
    with pytest.raises(ValueError, match="frontier"):
        merkle.append_leaves([b"x" * 32], 3, [b"y" * 32])  # size 3: two subtrees
