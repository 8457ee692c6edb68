"""Retention by crypto-shredding, end to end on SQLite and PostgreSQL: exchanges
made last month are sealed under that month's retention key; `broker retention
run` destroys the key once its retention has ended; the sealed fields no longer
open, replay reports them as shredded, and the audit log (chain, signed
checkpoint, and inclusion and consistency proofs taken before) still verifies."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from audit import verifier
from audit.log import AuditWriter
from audit.models import AuditEntry
from audit.tree import consistency_proof, inclusion_proof, tree_head
from broker.cli import main
from broker.core.errors import KeyError_, RecordShredded
from broker.db.session import Database
from broker.exchange.models import DecisionRecord, Exchange
from broker.retention.models import RetentionKey
from broker.retention.service import DESTROYED_KIND, RetentionService
from broker.retention.vault import RetentionVault
from tests.conftest import Harness, broker_settings, register_partners, serve_broker
from tests.integration.test_exchange import SUSPECT_HISTORY
from tests.integration.test_policy_replay import _draft

# A day in an earlier month than today's: that month's key can be destroyed now.
THEN = (datetime.now(UTC).replace(day=1) - timedelta(days=20)).replace(hour=12)


@pytest.fixture
async def past_harness(
    database_url: str, simulators: dict[str, Any], tmp_path: Path
) -> AsyncIterator[Harness]:
    """A broker whose clock says THEN (records belong to THEN's month)."""
    settings = broker_settings(database_url, simulators, tmp_path, retention_run_seconds=0)
    partners = await register_partners(settings, simulators)
    async with serve_broker(settings, clock=lambda: THEN) as broker:
        yield Harness(broker, partners)


def _cli(harness: Harness, *args: str) -> Any:
    settings = harness.broker.settings
    return CliRunner().invoke(
        main,
        list(args),
        env={
            "BROKER_DATABASE_URL": settings.database_url,
            "BROKER_KEYS_DIR": str(settings.keys_dir),
        },
    )


async def test_shredding_keeps_the_audit_log_and_its_proofs_valid(
    past_harness: Harness, tmp_path: Path
) -> None:
    harness = past_harness
    services = harness.broker.services
    db = services.db
    client = harness.client("veilig_thuis")
    try:
        bodies = []
        for _ in range(2):
            response = await client.exchange(SUSPECT_HISTORY)
            assert response.status_code == 200, response.text
            bodies.append(response.json())
    finally:
        await client.aclose()

    # Stored: no case reference, birth date or context in clear.
    async with db.session() as session:
        exchanges = (await session.scalars(select(Exchange))).all()
        decisions = (await session.scalars(select(DecisionRecord))).all()
        [key] = (await session.scalars(select(RetentionKey))).all()
    assert len(exchanges) == 2 and len(decisions) == 2
    assert key.period == f"{THEN.year:04d}-{THEN.month:02d}" and key.wrapped is not None
    for row in exchanges:
        assert row.case_reference is not None
        assert row.case_reference.startswith(f"rk1:{key.id}:")
        assert SUSPECT_HISTORY["case_reference"] not in row.case_reference
    for decision in decisions:
        stored = json.dumps(decision.input)
        assert "birth_date" not in stored and "vt_case_status" not in stored
        assert decision.input["sealed"]["kid"] == key.id
    reader = services.retention.vault.reader()
    for row in exchanges:
        assert await reader.case_reference(row.id, row.case_reference) == "VT-LB-2026-0042"
    full = await reader.decision_input(decisions[0].id, decisions[0].input)
    assert full["context"] == SUSPECT_HISTORY["context"]
    assert "birth_date" in full["subjects"][0]

    # Before shredding: a signed checkpoint and proofs for every leaf of the exchanges.
    checkpoint_text = await services.checkpoints.latest()
    public = services.keyring.public_key_raw()
    checkpoint = verifier.verify_checkpoint(
        checkpoint_text, key_name=harness.broker.settings.log_origin, public_key=public
    )
    indices = [i for body in bodies for i in body["audit_indices"]]
    proofs = {i: await inclusion_proof(db, i, checkpoint.size) for i in indices}
    saved = tmp_path / "checkpoint.txt"
    saved.write_text(checkpoint_text)

    # Not due yet: nothing destroyed.
    result = await asyncio.to_thread(_cli, harness, "retention", "run")
    assert result.exit_code == 0, result.output
    assert "destroyed 0 retention keys" in result.output

    at = (key.destroy_after + timedelta(seconds=1)).isoformat()
    result = await asyncio.to_thread(_cli, harness, "retention", "run", "--at", at)
    assert result.exit_code == 0, result.output
    assert f"destroyed 1 retention keys\n{key.id}" in result.output

    # The key is gone, its destruction audited without personal data.
    async with db.session() as session:
        row = await session.get(RetentionKey, key.id)
        destroyed = (
            await session.scalars(select(AuditEntry).where(AuditEntry.kind == DESTROYED_KIND))
        ).all()
        exchanges = (await session.scalars(select(Exchange))).all()
    assert row is not None and row.wrapped is None and row.destroyed_at is not None
    [entry] = destroyed
    assert row.destroyed_seq == entry.seq
    body = json.loads(entry.entry)
    assert body["key_id"] == key.id and body["period"] == key.period
    assert "VT-LB" not in entry.entry and "subject" not in body

    # The sealed fields read as shredded.
    reader = services.retention.vault.reader()
    with pytest.raises(RecordShredded):
        await reader.decision_input(decisions[0].id, decisions[0].input)
    with pytest.raises(RecordShredded):
        await reader.case_reference(exchanges[0].id, exchanges[0].case_reference)
    assert reader.is_shredded("exchanges", exchanges[0].case_reference)

    # The audit log: chain, Merkle tree and the saved checkpoint verify in full ...
    result = await asyncio.to_thread(_cli, harness, "audit", "verify", "--checkpoint", str(saved))
    assert result.exit_code == 0, result.output
    assert "audit log verified" in result.output
    # ... and the proofs taken before lead from the same leaf bytes to the same root.
    async with db.session() as session:
        entries = {
            e.seq: e.entry
            for e in (
                await session.scalars(select(AuditEntry).where(AuditEntry.seq.in_(indices)))
            ).all()
        }
    for index, proof in proofs.items():
        leaf = verifier.leaf_hash(entries[index].encode("utf-8"))
        assert leaf == proof.leaf_hash
        verifier.verify_inclusion(leaf, index, checkpoint.size, proof.hashes, checkpoint.root_hash)
    head = await tree_head(db)
    assert head.size > checkpoint.size  # the destruction entry came after
    consistency = await consistency_proof(db, checkpoint.size, head.size)
    verifier.verify_consistency(
        checkpoint.size, head.size, checkpoint.root_hash, head.root_hash, consistency.hashes
    )

    # Replay skips the shredded decisions and says so.
    from broker.policy.replay import replay

    draft = _draft(tmp_path / "draft", drop_house_ban=False)
    report = await replay(db, services.policy_set, draft, retention=services.retention.vault)
    assert (report.decisions, report.shredded) == (0, 2)
    result = await asyncio.to_thread(_cli, harness, "policy", "replay", "--draft", str(draft))
    assert result.exit_code == 0, result.output
    assert "skipped 2 decisions whose retention ended" in result.output

    # Subject access reads the audit log: every fact of both exchanges is still there.
    overview = await services.subject_access.report(SUSPECT_HISTORY["subjects"][0])
    decisions = [e for e in overview.entries if e.kind == "decision"]
    assert len(decisions) == 2 * len(SUSPECT_HISTORY["elements"])
    # and the AVG art. 14 duty each release created
    assert overview.entry_count == len(decisions) + 2

    # Running again destroys nothing more.
    result = await asyncio.to_thread(_cli, harness, "retention", "run", "--at", at)
    assert result.exit_code == 0, result.output
    assert "destroyed 0 retention keys" in result.output


async def test_keys_are_shared_between_instances_and_current_ones_never_destroyed(
    database: Database,
) -> None:
    kek = bytes(range(32))
    first, second = RetentionVault(database, kek), RetentionVault(database, kek)
    now = datetime.now(UTC)
    # Two instances ask for this month's key at once: one key is made, both use it.
    a, b = await asyncio.gather(first.write_key("P2Y", now), second.write_key("P2Y", now))
    assert a == b and a.kid == f"P2Y:{now.year:04d}-{now.month:02d}"

    rows: list[tuple[Any, dict[str, Any]]] = [
        (Exchange.__table__, {"id": "ex-1", "case_reference": "ZAAK-1"}),
        (DecisionRecord.__table__, {"id": "dc-1", "input": {"purpose": "p", "subjects": []}}),
    ]
    await first.seal_rows(rows, {"period": "P2Y"}, now)
    reader = second.reader()
    assert await reader.case_reference("ex-1", rows[0][1]["case_reference"]) == "ZAAK-1"
    assert (await reader.decision_input("dc-1", rows[1][1]["input"]))["purpose"] == "p"
    # Bound to its record: under another exchange id it does not open.
    with pytest.raises(KeyError_):
        await reader.case_reference("ex-2", rows[0][1]["case_reference"])
    # A vault with another key-encryption key opens nothing.
    with pytest.raises(KeyError_):
        await (
            RetentionVault(database, bytes(32)).reader().decision_input("dc-1", rows[1][1]["input"])
        )

    audit = AuditWriter(database)
    await audit.start()
    try:
        service = RetentionService(database, audit, first)
        # This month is not over: its key is not due, however late the time asked.
        assert await service.run(now + timedelta(days=365 * 200)) == []
    finally:
        await audit.stop()
