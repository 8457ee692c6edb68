"""Generated logs on a real SQLite database, written by the real AuditWriter:
every appended log verifies (chain and Merkle tree, with the root an independent
RFC 9162 implementation computes); flipping any bit of any stored leaf, deleting
an entry or swapping two entries is always found; a history rewritten into a
self-consistent log with a new root is always caught by a checkpoint taken
before the rewrite (its root, and the consistency proof to the new head); and
the page checks (in this process and in worker processes) give exactly the
entry-by-entry check's result whatever was changed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from sqlalchemy import select, text

from audit import merkle, verifier
from audit.log import GENESIS, AuditRecord, AuditWriter
from audit.models import AuditEntry
from audit.tree import consistency_proof, inclusion_proof, root_at, tree_head
from audit.verify import _verify, verify_chain, verify_log, verify_tree
from broker.core.canonical import canonical_json_plain, sha256_hex
from broker.core.errors import AuditChainBroken
from broker.db.session import Database
from broker.settings import Settings
from tests.conftest import clean
from tests.property.test_merkle import naive_mth

SETTINGS = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

ascii_text = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=10)
values = st.none() | st.booleans() | st.integers(-1000, 1000) | ascii_text
records = st.builds(
    lambda kind, fields, subject: AuditRecord(
        kind=kind,
        body={
            **{f"f{k}": v for k, v in fields.items()},
            **({"subject": subject} if subject else {}),
        },
        subject_key=subject,
    ),
    st.sampled_from(["decision", "release", "consent_recorded"]),
    st.dictionaries(st.integers(0, 5), values, max_size=4),
    st.none() | st.sampled_from(["psn:" + "a" * 40, "psn:" + "b" * 40, "hh:" + "c" * 40]),
)
units = st.lists(st.lists(records, min_size=1, max_size=4), min_size=1, max_size=6)


@asynccontextmanager
async def written(url: str, batches: list[list[AuditRecord]]) -> AsyncIterator[Database]:
    """A clean database holding ``batches``, appended concurrently (group commit)."""
    clean(url)
    db = Database(Settings(database_url=url).async_database_url)
    try:
        writer = AuditWriter(db)
        await writer.start()
        try:
            await asyncio.gather(*(writer.append(u) for u in batches))
        finally:
            await writer.stop()
        yield db
    finally:
        await db.dispose()


async def entries(db: Database) -> list[bytes]:
    async with db.session() as session:
        rows = (await session.scalars(select(AuditEntry.entry).order_by(AuditEntry.seq))).all()
    return [r.encode("utf-8") for r in rows]


async def sql(db: Database, statement: str, **params: object) -> None:
    async with db.engine.begin() as conn:
        await conn.execute(text(statement), params)


async def broken(db: Database) -> None:
    """Every verification path reports the log as broken."""
    for check in (verify_chain, verify_log):
        with pytest.raises(AuditChainBroken):
            await check(db)


@SETTINGS
@given(batches=units, data=st.data())
async def test_appended_logs_verify_and_match_the_rfc_root(
    sqlite_url: str, batches: list[list[AuditRecord]], data: st.DataObject
) -> None:
    async with written(sqlite_url, batches) as db:
        chain, tree = await verify_log(db)
        total = sum(len(u) for u in batches)
        assert chain.size == tree.size == total
        assert (await verify_tree(db)).root_hash == tree.root_hash
        stored = await entries(db)
        assert tree.root_hash == naive_mth(stored)
        index = data.draw(st.integers(0, total - 1), label="index")
        proof = await inclusion_proof(db, index, total)
        verifier.verify_inclusion(proof.leaf_hash, index, total, proof.hashes, tree.root_hash)


@SETTINGS
@given(batches=units, data=st.data())
async def test_flipping_any_bit_of_any_leaf_is_found(
    sqlite_url: str, batches: list[list[AuditRecord]], data: st.DataObject
) -> None:
    async with written(sqlite_url, batches) as db:
        stored = await entries(db)
        seq = data.draw(st.integers(0, len(stored) - 1), label="seq")
        pos = data.draw(st.integers(0, len(stored[seq]) - 1), label="byte")
        bit = data.draw(st.integers(0, 6), label="bit")  # stays ASCII: storable as text
        changed = bytearray(stored[seq])
        changed[pos] ^= 1 << bit
        assume(changed[pos] != 0)
        await sql(
            db,
            "UPDATE audit_entries SET entry = :e WHERE seq = :s",
            e=changed.decode("utf-8"),
            s=seq,
        )
        with pytest.raises(AuditChainBroken) as info:
            await verify_chain(db)
        assert info.value.index == seq
        with pytest.raises(AuditChainBroken):
            await verify_tree(db)  # the leaf no longer hashes to the stored tree


@SETTINGS
@given(batches=units, data=st.data())
async def test_deleting_or_swapping_entries_is_found(
    sqlite_url: str, batches: list[list[AuditRecord]], data: st.DataObject
) -> None:
    async with written(sqlite_url, batches) as db:
        total = sum(len(u) for u in batches)
        a = data.draw(st.integers(0, total - 1), label="a")
        if total > 1 and data.draw(st.booleans(), label="swap"):
            b = data.draw(st.integers(0, total - 1).filter(lambda x: x != a), label="b")
            # Swap the two rows' positions (through a free seq: the key stays unique).
            await sql(db, "UPDATE audit_entries SET seq = -1 WHERE seq = :a", a=a)
            await sql(db, "UPDATE audit_entries SET seq = :a WHERE seq = :b", a=a, b=b)
            await sql(db, "UPDATE audit_entries SET seq = :b WHERE seq = -1", b=b)
            with pytest.raises(AuditChainBroken) as info:
                await verify_chain(db)
            assert info.value.index == min(a, b)
        else:
            await sql(db, "DELETE FROM audit_entries WHERE seq = :a", a=a)
            with pytest.raises(AuditChainBroken) as info:
                await verify_chain(db)
            assert info.value.index == a
        await broken(db)


async def forge(db: Database, target: int) -> None:
    """Rewrites entry ``target`` and rebuilds everything after it as a forger
    with write access would: the chain from there on, every stored subtree and
    the head. The result is internally consistent: only the roots differ."""
    async with db.engine.begin() as conn:
        rows = (
            await conn.execute(
                text("SELECT seq, entry, entry_hash FROM audit_entries ORDER BY seq")
            )
        ).all()
        prev = rows[target - 1].entry_hash if target else GENESIS
        data = [r.entry.encode("utf-8") for r in rows]
        for row in rows[target:]:
            body = orjson.loads(row.entry)
            if row.seq == target:
                body["forged"] = True
            body["prev"] = prev
            data[row.seq] = canonical_json_plain(body)
            digest = sha256_hex(data[row.seq])
            await conn.execute(
                text(
                    "UPDATE audit_entries SET entry = :e, prev_hash = :p, entry_hash = :h "
                    "WHERE seq = :s"
                ),
                {"e": data[row.seq].decode("utf-8"), "p": prev, "h": digest, "s": row.seq},
            )
            prev = digest
        frontier, size, nodes = merkle.append_leaves([], 0, [merkle.leaf_hash(d) for d in data])
        await conn.execute(text("DELETE FROM audit_nodes"))
        await conn.execute(
            text('INSERT INTO audit_nodes (level, "index", hash) VALUES (:l, :i, :h)'),
            [{"l": lv, "i": i, "h": h.hex()} for lv, i, h in nodes],
        )
        await conn.execute(
            text("UPDATE audit_head SET size = :n, head_hash = :h, root_hash = :r, frontier = :f"),
            {
                "n": size,
                "h": prev,
                "r": merkle.fold(frontier).hex(),
                "f": merkle.encode_frontier(frontier),
            },
        )


@SETTINGS
@given(batches=units, data=st.data())
async def test_rewritten_history_with_a_new_root_is_caught_by_a_checkpoint(
    sqlite_url: str, batches: list[list[AuditRecord]], data: st.DataObject
) -> None:
    total = sum(len(u) for u in batches)
    target = data.draw(st.integers(0, total - 1), label="rewritten entry")
    checkpoint_size = data.draw(st.integers(target + 1, total), label="checkpoint size")
    async with written(sqlite_url, batches) as db:
        before = await tree_head(db)
        saved_root = await root_at(db, checkpoint_size)  # what a witness or a receipt holds
        untouched = await root_at(db, target) if target else None
        await forge(db, target)

        chain, tree = await verify_log(db)  # the forgery is self-consistent ...
        assert chain.size == tree.size == total
        assert tree.root_hash != before.root_hash
        if untouched is not None:
            assert await root_at(db, target) == untouched  # ... the prefix is unchanged ...
        # ... but the checkpoint taken before the rewrite no longer matches the log.
        assert await root_at(db, checkpoint_size) != saved_root
        if checkpoint_size < total:
            proof = await consistency_proof(db, checkpoint_size, total)
            with pytest.raises(verifier.VerificationError):
                verifier.verify_consistency(
                    checkpoint_size, total, saved_root, tree.root_hash, proof.hashes
                )


# ------------------------------------------- page checks and worker processes
# audit.verify checks whole pages at once (in this process or in worker
# processes) and falls back to entry-by-entry checking from the first page that
# is not clean. Whatever was changed, every way of verifying must give the
# entry-by-entry check's result: the same summary, or the same error and index.

Outcome = tuple[Any, ...]
MODES = [(True, False), (False, True), (True, True)]  # (chain, tree)


def verify_sync(db: Database, **options: Any) -> dict[tuple[bool, bool], Outcome]:
    out: dict[tuple[bool, bool], Outcome] = {}
    for chain, tree in MODES:
        try:
            out[(chain, tree)] = ("ok", *_verify(db, chain=chain, tree=tree, **options))
        except AuditChainBroken as exc:
            out[(chain, tree)] = ("broken", str(exc), exc.index)
    return out


async def tamper(db: Database, data: st.DataObject, total: int) -> str:
    """Changes the stored log in one of the ways an operator could; returns how."""
    how = data.draw(
        st.sampled_from(
            ["none", "bit", "delete", "swap", "column", "node", "node_gone", "head", "forge"]
        ),
        label="tampering",
    )
    seq = data.draw(st.integers(0, total - 1), label="seq")
    if how == "bit":
        stored = (await entries(db))[seq]
        pos = data.draw(st.integers(0, len(stored) - 1), label="byte")
        changed = bytearray(stored)
        changed[pos] ^= 1 << data.draw(st.integers(0, 6), label="bit")
        assume(changed[pos] != 0)
        await sql(
            db, "UPDATE audit_entries SET entry = :e WHERE seq = :s", e=changed.decode(), s=seq
        )
    elif how == "delete":
        await sql(db, "DELETE FROM audit_entries WHERE seq = :s", s=seq)
    elif how == "swap":
        if total == 1:
            return "none"
        other = data.draw(st.integers(0, total - 1).filter(lambda x: x != seq), label="other")
        await sql(db, "UPDATE audit_entries SET seq = -1 WHERE seq = :a", a=seq)
        await sql(db, "UPDATE audit_entries SET seq = :a WHERE seq = :b", a=seq, b=other)
        await sql(db, "UPDATE audit_entries SET seq = :b WHERE seq = -1", b=other)
    elif how == "column":
        column, value = data.draw(
            st.sampled_from(
                [
                    ("kind", "'release'"),
                    ("subject_key", "NULL"),
                    ("subject_key", "'psn:" + "d" * 40 + "'"),
                    ("element", "'x\ny'"),  # a newline in a value
                    ("exchange_id", "'n'"),
                    ("outcome", "NULL"),
                    ("prev_hash", "upper(prev_hash)"),
                    ("entry_hash", "'" + "0" * 64 + "'"),
                    # the same instant, spelt as the entry spells it
                    ("created_at", "replace(created_at, ' ', 'T') || '+00:00'"),
                    ("created_at", "'2020-01-01 00:00:00.000000'"),
                    ("created_at", "'not a time'"),
                ]
            ),
            label="column",
        )
        await sql(db, f"UPDATE audit_entries SET {column} = {value} WHERE seq = :s", s=seq)
    elif how in ("node", "node_gone"):
        level = data.draw(st.integers(0, max(total.bit_length() - 1, 0)), label="level")
        index = data.draw(st.integers(0, max((total >> level) - 1, 0)), label="index")
        if how == "node":
            await sql(
                db,
                'UPDATE audit_nodes SET hash = :h WHERE level = :l AND "index" = :i',
                h=data.draw(st.sampled_from(["0" * 64, "A" * 64, ""]), label="hash"),
                l=level,
                i=index,
            )
        else:
            await sql(
                db, 'DELETE FROM audit_nodes WHERE level = :l AND "index" = :i', l=level, i=index
            )
    elif how == "head":
        await sql(db, "UPDATE audit_head SET size = size - 1")
    elif how == "forge":
        await forge(db, seq)
    return how


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    batches=st.lists(st.lists(records, min_size=1, max_size=4), min_size=1, max_size=10),
    page=st.sampled_from([1, 2, 4, 8]),
    data=st.data(),
)
async def test_page_checks_find_what_the_entry_by_entry_check_finds(
    sqlite_url: str,
    batches: list[list[AuditRecord]],
    page: int,
    data: st.DataObject,
) -> None:
    total = sum(len(u) for u in batches)
    async with written(sqlite_url, batches) as db:
        how = await tamper(db, data, total)
        reference = await asyncio.to_thread(verify_sync, db, page=page, batch=False)
        if how == "none":
            assert all(o[0] == "ok" for o in reference.values())
        elif how not in ("column", "forge"):  # some column changes are harmless, and
            # a consistent rewrite verifies (a checkpoint catches it, see above)
            assert any(o[0] == "broken" for o in reference.values()), how
        assert await asyncio.to_thread(verify_sync, db, page=page, workers=0) == reference
        # Worker processes: the whole log's pages checked elsewhere, linked here.
        try:
            chain, tree = await asyncio.to_thread(
                _verify, db, chain=True, tree=True, page=page, workers=2
            )
            parallel: Outcome = ("ok", chain, tree)
        except AuditChainBroken as exc:
            parallel = ("broken", str(exc), exc.index)
        assert parallel == reference[(True, True)]
