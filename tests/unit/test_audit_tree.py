"""The audit log's Merkle tree on real SQLite and PostgreSQL: concurrent appends
through the AuditWriter keep ``audit_nodes`` and the head's root equal to a
naive recomputation; proofs read from storage verify with the stand-alone
verifier; checkpoints are C2SP signed notes whose signature breaks on any change."""

from __future__ import annotations

import asyncio
import base64
import random
from pathlib import Path

import pytest
from sqlalchemy import select

from audit import merkle, verifier
from audit.log import AuditWriter
from audit.models import AuditEntry, AuditHead, AuditNode
from audit.tree import consistency_proof, inclusion_proof, root_at, tree_head
from audit.verify import verify_tree
from broker.core.errors import AuditChainBroken, InvalidRequest
from broker.crypto.keys import BrokerKeyring, generate_jwk
from broker.db.session import Database
from broker.transparency.checkpoint import (
    CheckpointSigner,
    note_key_id,
    sign_checkpoint,
    verifier_key,
)
from tests.property.test_merkle import naive_mth, naive_path, naive_proof
from tests.unit.test_audit_log import record, sql


async def stored(db: Database) -> tuple[list[bytes], dict[tuple[int, int], str], AuditHead]:
    async with db.session() as session:
        entries = (await session.scalars(select(AuditEntry.entry).order_by(AuditEntry.seq))).all()
        nodes = {
            (n.level, n.index): n.hash for n in (await session.scalars(select(AuditNode))).all()
        }
        head = await session.get(AuditHead, 1)
    assert head is not None
    return [e.encode() for e in entries], nodes, head


def expected_nodes(entries: list[bytes]) -> dict[tuple[int, int], str]:
    """Every perfect subtree, naively: MTH over each aligned block of 2**level leaves."""
    out: dict[tuple[int, int], str] = {}
    level = 0
    while (1 << level) <= len(entries):
        width = 1 << level
        for index in range(len(entries) // width):
            out[(level, index)] = naive_mth(entries[index * width : (index + 1) * width]).hex()
        level += 1
    return out


@pytest.mark.parametrize("batch_max", [512, 3])
async def test_concurrent_appends_keep_the_tree_consistent(
    database: Database, batch_max: int
) -> None:
    writer = AuditWriter(database, batch_max=batch_max)
    await writer.start()
    rng = random.Random(batch_max)
    sizes = [rng.randint(1, 4) for _ in range(60)]
    try:
        await asyncio.gather(
            *(
                writer.append([record(100 * u + i) for i in range(size)])
                for u, size in enumerate(sizes)
            )
        )
        # A second wave on top of the first: the frontier carries across commits.
        await asyncio.gather(*(writer.append([record(10_000 + i)]) for i in range(17)))
    finally:
        await writer.stop()

    entries, nodes, head = await stored(database)
    assert len(entries) == sum(sizes) + 17 == head.size
    assert nodes == expected_nodes(entries)
    assert head.root_hash == naive_mth(entries).hex()
    assert (await tree_head(database)).root_hash.hex() == head.root_hash
    assert (await verify_tree(database)).root_hash.hex() == head.root_hash

    n = len(entries)
    for size in (1, 2, 3, 7, 8, 64, n - 1, n):
        assert await root_at(database, size) == naive_mth(entries[:size])
    for index, size in [(0, 1), (0, n), (n - 1, n), (5, 6), (37, 100), (99, n)]:
        proof = await inclusion_proof(database, index, size)
        assert proof.hashes == naive_path(index, entries[:size])
        assert proof.leaf_hash == merkle.leaf_hash(entries[index])
        verifier.verify_inclusion(proof.leaf_hash, index, size, proof.hashes, proof.root_hash)
    for old, new in [(0, n), (1, n), (7, 8), (8, n), (33, 100), (n, n)]:
        cproof = await consistency_proof(database, old, new)
        assert cproof.hashes == naive_proof(old, entries[:new])
        assert cproof.new_root == naive_mth(entries[:new])
        verifier.verify_consistency(old, new, cproof.old_root, cproof.new_root, cproof.hashes)


async def test_two_writers_on_one_database_share_one_tree(
    database: Database, database_url: str
) -> None:
    """Two writers with their own engines (as two broker processes) append
    concurrently; the head lock keeps one tree."""
    from broker.settings import Settings

    other_db = Database(Settings(database_url=database_url).async_database_url)
    writers = [AuditWriter(database, batch_max=4), AuditWriter(other_db, batch_max=4)]
    for w in writers:
        await w.start()
    try:
        await asyncio.gather(
            *(writers[i % 2].append([record(i), record(1000 + i)]) for i in range(40))
        )
    finally:
        for w in writers:
            await w.stop()
        await other_db.dispose()
    entries, nodes, head = await stored(database)
    assert len(entries) == head.size == 80
    assert nodes == expected_nodes(entries)
    assert head.root_hash == naive_mth(entries).hex()


async def test_out_of_range_proofs_are_refused(database: Database) -> None:
    writer = AuditWriter(database)
    await writer.start()
    try:
        await writer.append([record(i) for i in range(5)])
    finally:
        await writer.stop()
    with pytest.raises(InvalidRequest):
        await inclusion_proof(database, 5, 5)
    with pytest.raises(InvalidRequest):
        await inclusion_proof(database, 0, 6)
    with pytest.raises(InvalidRequest):
        await consistency_proof(database, 3, 2)
    with pytest.raises(InvalidRequest):
        await consistency_proof(database, 1, 6)
    with pytest.raises(InvalidRequest):
        await root_at(database, 6)


async def test_verify_tree_finds_a_changed_entry_or_node(database: Database) -> None:
    writer = AuditWriter(database)
    await writer.start()
    try:
        await writer.append([record(i) for i in range(6)])
    finally:
        await writer.stop()
    await verify_tree(database)
    await sql(
        database, 'UPDATE audit_nodes SET hash = :h WHERE level = 1 AND "index" = 0', h="00" * 32
    )
    with pytest.raises(AuditChainBroken):
        await verify_tree(database)


async def test_empty_tree(database: Database) -> None:
    writer = AuditWriter(database)
    await writer.start()
    await writer.stop()
    head = await tree_head(database)
    assert (head.size, head.root_hash) == (0, merkle.EMPTY_ROOT)
    assert (await verify_tree(database)).size == 0


# ----------------------------------------------------------------- checkpoints


def keyring() -> BrokerKeyring:
    return BrokerKeyring([generate_jwk("Ed25519", use="sig")])


def test_checkpoint_is_a_signed_note_that_the_verifier_accepts() -> None:
    ring = keyring()
    root = bytes(range(32))
    text = sign_checkpoint(ring, "broker.example/audit", 42, root)
    body, _, sig_line = text.partition("\n\n")
    assert body == "broker.example/audit\n42\n" + base64.b64encode(root).decode()
    assert sig_line.startswith("\u2014 broker.example/audit ") and sig_line.endswith("\n")
    blob = base64.b64decode(sig_line.split(" ")[2])
    assert len(blob) == 4 + 64
    assert blob[:4] == note_key_id("broker.example/audit", ring.public_key_raw())

    cp = verifier.verify_checkpoint(
        text, key_name="broker.example/audit", public_key=ring.public_key_raw()
    )
    assert (cp.origin, cp.size, cp.root_hash) == ("broker.example/audit", 42, root)
    name, raw = verifier.parse_verifier_key(
        verifier_key("broker.example/audit", ring.public_key_raw())
    )
    assert (name, raw) == ("broker.example/audit", ring.public_key_raw())

    data = text.encode()
    for position in range(len(data) - 1):  # every byte but the final newline
        changed = data[:position] + bytes([data[position] ^ 0x01]) + data[position + 1 :]
        with pytest.raises(verifier.VerificationError):
            verifier.verify_checkpoint(
                changed, key_name="broker.example/audit", public_key=ring.public_key_raw()
            )
    with pytest.raises(verifier.VerificationError):
        verifier.verify_checkpoint(
            text, key_name="broker.example/audit", public_key=keyring().public_key_raw()
        )


def test_key_id_follows_the_signed_note_spec() -> None:
    # SHA-256(name || 0x0A || 0x01 || key)[:4], computed here by hand.
    import hashlib

    key = bytes(32)
    expected = hashlib.sha256(b"example.com/log\n\x01" + key).digest()[:4]
    assert (
        note_key_id("example.com/log", key) == expected == verifier.key_id("example.com/log", key)
    )


async def test_checkpoint_signer_is_at_most_a_second_behind(database: Database) -> None:
    ring = keyring()
    writer = AuditWriter(database)
    await writer.start()
    signer = CheckpointSigner(database, ring, "broker.example/audit")
    try:
        first = verifier.verify_checkpoint(
            await signer.latest(), key_name="broker.example/audit", public_key=ring.public_key_raw()
        )
        await writer.append([record(i) for i in range(3)])
        await asyncio.sleep(1.05)
        second = verifier.verify_checkpoint(
            await signer.latest(), key_name="broker.example/audit", public_key=ring.public_key_raw()
        )
    finally:
        await writer.stop()
    assert second.size == first.size + 3
    proof = await consistency_proof(database, first.size, second.size)
    verifier.verify_consistency(
        first.size, second.size, first.root_hash, second.root_hash, proof.hashes
    )


def test_cli_verifies_the_root_and_checkpoints(tmp_path: Path) -> None:
    from tests.unit.test_cli import Broker

    cli = Broker(tmp_path)
    cli("db", "upgrade")
    ring = BrokerKeyring.load_or_create(tmp_path / "keys")
    lines = cli("audit", "verify").output.splitlines()
    assert lines[1] == (
        "merkle root verified: " + merkle.EMPTY_ROOT.hex() + " (checkpoint signature verifies)"
    )
    saved = tmp_path / "checkpoint.txt"
    saved.write_text(sign_checkpoint(ring, "broker.example/audit", 0, merkle.EMPTY_ROOT))
    out = cli("audit", "verify", "--checkpoint", str(saved)).output
    assert "checkpoint at size 0 verified against the log" in out
    # Signed correctly but for a tree this log is not: refused.
    saved.write_text(sign_checkpoint(ring, "broker.example/audit", 0, bytes(32)))
    assert "does not match" in cli("audit", "verify", "--checkpoint", str(saved), code=1).output
    # A one-byte change breaks the signature.
    saved.write_text(
        sign_checkpoint(ring, "broker.example/audit", 0, merkle.EMPTY_ROOT).replace(
            "\n0\n", "\n1\n"
        )
    )
    assert (
        "signature is invalid" in cli("audit", "verify", "--checkpoint", str(saved), code=1).output
    )
    # A checkpoint signed before a key rotation still verifies (ordered keyring).
    saved.write_text(sign_checkpoint(ring, "broker.example/audit", 0, merkle.EMPTY_ROOT))
    BrokerKeyring.rotate(tmp_path / "keys")
    out = cli("audit", "verify", "--checkpoint", str(saved)).output
    assert "checkpoint at size 0 verified against the log" in out


async def test_migration_0004_builds_the_tree_of_an_existing_log(
    database: Database, database_url: str
) -> None:
    """Downgrading to 0003 drops the tree; upgrading rebuilds it from the entries."""
    from broker.db.migrate import downgrade, upgrade

    writer = AuditWriter(database)
    await writer.start()
    try:
        await writer.append([record(i) for i in range(11)])
    finally:
        await writer.stop()
    _, nodes, head = await stored(database)
    await database.dispose()
    sync_url = database_url.replace("postgresql://", "postgresql+psycopg://")
    try:
        await asyncio.to_thread(downgrade, sync_url, "0003")
    finally:
        await asyncio.to_thread(upgrade, sync_url)
    entries, rebuilt, rebuilt_head = await stored(database)
    assert rebuilt == nodes == expected_nodes(entries)
    assert (rebuilt_head.root_hash, rebuilt_head.frontier) == (head.root_hash, head.frontier)
    assert (await verify_tree(database)).size == 11
