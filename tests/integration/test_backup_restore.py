"""Backup and restore of the PostgreSQL database, checked as the operations
runbook says: exchanges run over loopback HTTP, a witness agency cosigns the
checkpoint it keeps, ``pg_dump`` backs the database up, ``pg_restore`` restores
it into a fresh database, and the real ``broker audit verify`` (a subprocess)
verifies the restored log against the witness's checkpoint. A restore from a
backup taken before the last exchanges has lost the log's tail; the same
command then fails and says so."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from audit import verifier
from broker.transparency.checkpoint import checkpoint_body
from tests.conftest import PG_ADMIN, Harness, _pg_url
from tests.integration.test_exchange import SUSPECT_HISTORY
from tests.integration.test_witnesses import cosign

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.parametrize("database_url", ["postgresql"], indirect=True),
    pytest.mark.skipif(
        shutil.which("pg_dump") is None or shutil.which("pg_restore") is None,
        reason="pg_dump and pg_restore are needed",
    ),
]

WITNESS = "politie"
BROKER = Path(sys.executable).with_name("broker")


def pg_dump(url: str, out: Path) -> None:
    subprocess.run(
        ["pg_dump", "--format=custom", "--no-owner", "--no-privileges", "--file", str(out), url],
        check=True,
        capture_output=True,
        timeout=120,
    )


@pytest.fixture
def fresh_databases() -> Iterator[list[str]]:
    """Empty databases to restore into (each test asks for one per restore)."""
    created: list[str] = []
    yield created
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        for name in created:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def restore(dump: Path, created: list[str]) -> str:
    name = f"broker_r_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    created.append(name)
    url = _pg_url(name)
    subprocess.run(
        ["pg_restore", "--no-owner", "--no-privileges", "--exit-on-error", "--dbname", url, dump],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return url


def audit_verify(harness: Harness, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The real CLI, as an operator runs it after a restore."""
    settings = harness.broker.settings
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("BROKER_") or key == "BROKER_TEST_POSTGRES_URL"
    }
    env.update(
        BROKER_DATABASE_URL=url,
        BROKER_KEYS_DIR=str(settings.keys_dir),
        BROKER_LOG_ORIGIN=settings.log_origin,
        BROKER_LOG_LEVEL="WARNING",
    )
    return subprocess.run(
        [str(BROKER), "audit", "verify", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def exchanges(harness: Harness, count: int) -> None:
    client = harness.client("veilig_thuis")
    try:
        for _ in range(count):
            response = await client.exchange(SUSPECT_HISTORY)
            assert response.status_code == 200, response.text
    finally:
        await client.aclose()


async def checkpoint(harness: Harness) -> verifier.Checkpoint:
    """The latest signed checkpoint, checked as an agency would."""
    await asyncio.sleep(1.05)  # the served checkpoint is at most a second old
    async with httpx.AsyncClient(base_url=harness.broker.base_url) as http:
        note = (await http.get("/v1/audit/checkpoint")).text
    return verifier.verify_checkpoint(
        note,
        key_name=harness.broker.settings.log_origin,
        public_key=harness.broker.services.keyring.public_key_raw(),
    )


async def test_restored_backup_verifies_and_a_lost_tail_is_named(
    harness: Harness, database_url: str, tmp_path: Path, fresh_databases: list[str]
) -> None:
    origin = harness.broker.settings.log_origin
    broker_key = harness.broker.services.keyring.public_key_raw()

    await exchanges(harness, 2)
    early = await checkpoint(harness)
    early_dump = tmp_path / "early.dump"
    await asyncio.to_thread(pg_dump, database_url, early_dump)

    # The tail: more exchanges after that backup.
    await exchanges(harness, 3)
    late = await checkpoint(harness)
    assert late.size > early.size

    # The witness cosigns the later checkpoint and keeps the cosigned note.
    r = await cosign(harness, WITNESS, checkpoint_body(origin, late.size, late.root_hash))
    assert r.status_code == 201, r.text
    async with httpx.AsyncClient(base_url=harness.broker.base_url) as http:
        r = await http.get("/v1/audit/checkpoint/cosigned", params={"witnesses": 1})
    assert r.status_code == 200, r.text
    kept = tmp_path / "witness-checkpoint.txt"
    kept.write_text(r.text, encoding="utf-8")
    assert verifier.verify_checkpoint(r.text, key_name=origin, public_key=broker_key) == late

    full_dump = tmp_path / "full.dump"
    await asyncio.to_thread(pg_dump, database_url, full_dump)

    # A full restore verifies: the chain, the Merkle root, the witness's
    # checkpoint and the witness's cosignature.
    restored = await asyncio.to_thread(restore, full_dump, fresh_databases)
    ok = await asyncio.to_thread(
        audit_verify, harness, restored, "--checkpoint", str(kept), "--require-witnesses", "1"
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "audit log verified" in ok.stdout
    assert f"checkpoint at size {late.size} verified against the log" in ok.stdout
    assert "witnesses verified: 1 agencies" in ok.stdout

    # A restore from the earlier backup lost the tail: the chain it holds is
    # intact, but the witness's checkpoint commits to entries it does not have.
    lost = await asyncio.to_thread(restore, early_dump, fresh_databases)
    alone = await asyncio.to_thread(audit_verify, harness, lost)
    assert alone.returncode == 0, alone.stdout + alone.stderr
    fail = await asyncio.to_thread(audit_verify, harness, lost, "--checkpoint", str(kept))
    assert fail.returncode != 0, fail.stdout
    message = fail.stderr
    assert "the log lost its tail" in message, message
    size = int(alone.stdout.split("audit log verified: ", 1)[1].split(" ", 1)[0])
    assert early.size <= size < late.size
    assert f"it holds {size} entries" in message
    assert f"checkpoint at size {late.size}" in message
    assert f"entries {size} to {late.size - 1} are missing" in message
    # Without the later checkpoint, witnesses are missing too.
    fail = await asyncio.to_thread(audit_verify, harness, lost, "--require-witnesses", "1")
    assert fail.returncode != 0
    assert "only 0 of the 1 required witnesses" in fail.stderr
