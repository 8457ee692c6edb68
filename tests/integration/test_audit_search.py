"""The privacy officers' audit search and export (audit.search, ``broker audit
search`` / ``broker audit export``) on SQLite and PostgreSQL: every filter
selects exactly the decision entries a plain reading of the log selects, the
subject and agency filters read their indexes, the CLI
prints and exports them (CSV, JSON lines, LDV), audits itself and never shows
a BSN."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text

from audit.models import AuditEntry
from audit.search import DecisionFilter, decision_select, iter_decisions, search_decisions
from broker.core.errors import InvalidRequest
from broker.crypto.keys import Pseudonymizer, load_or_create_pseudonym_key
from broker.db.session import Database
from broker.settings import PROJECT_ROOT
from tests.conftest import AGENCIES
from tests.integration.conftest import PRIVACY_OFFICER, Timed
from tests.integration.test_subject_access import KINDCHECK, P01, P10, P13, SUSPECT_HISTORY


def _matches(body: dict[str, Any], flt: DecisionFilter) -> bool:
    """The oracle: the filter read literally from the entry's JSON."""
    agreement = body.get("agreement") or {}
    return (
        (flt.subject is None or body.get("subject") == flt.subject)
        and (flt.agency is None or flt.agency in (body.get("requester"), body.get("provider")))
        and (flt.purpose is None or body.get("purpose") == flt.purpose)
        and (flt.agreement is None or agreement.get("id") == flt.agreement)
        and (flt.outcome is None or body.get("outcome") == flt.outcome)
        and (flt.reason is None or body.get("reason") == flt.reason)
    )


async def _decisions(db: Database) -> list[tuple[AuditEntry, dict[str, Any]]]:
    async with db.session() as session:
        rows = (
            await session.scalars(
                select(AuditEntry).where(AuditEntry.kind == "decision").order_by(AuditEntry.seq)
            )
        ).all()
    return [(r, json.loads(r.entry)) for r in rows]


async def _plan(db: Database, flt: DecisionFilter) -> str:
    stmt = decision_select(flt, sqlite=db.is_sqlite)
    compiled = stmt.compile(db.engine.sync_engine, compile_kwargs={"literal_binds": True})
    prefix = "EXPLAIN QUERY PLAN " if db.is_sqlite else "EXPLAIN "
    async with db.engine.connect() as conn:
        if not db.is_sqlite:
            await conn.execute(text("SET enable_seqscan = off"))
        rows = (await conn.execute(text(prefix + str(compiled)))).all()
    return "\n".join(str(r[-1]) for r in rows)


async def test_filters_select_what_the_log_holds(timed: Timed) -> None:
    await timed.exchange("veilig_thuis", SUSPECT_HISTORY)
    await timed.exchange("ggz", KINDCHECK)
    db = timed.harness.broker.services.db
    pseudo = Pseudonymizer(load_or_create_pseudonym_key(timed.harness.broker.settings.keys_dir))
    decisions = await _decisions(db)
    assert len(decisions) >= 7
    first = min(r.created_at for r, _ in decisions)
    filters = [
        DecisionFilter(),
        DecisionFilter(subject=pseudo.person(P01)),
        DecisionFilter(subject=pseudo.person(P10)),
        DecisionFilter(agency=AGENCIES["politie"]),
        DecisionFilter(agency=AGENCIES["ggz"]),
        DecisionFilter(purpose=KINDCHECK["purpose_id"]),
        DecisionFilter(agreement="agr-vt-politie-hg"),
        DecisionFilter(agreement="agr-vt-politie-hg", purpose=SUSPECT_HISTORY["purpose_id"]),
        DecisionFilter(outcome="deny"),
        DecisionFilter(outcome="allow", agency=AGENCIES["veilig_thuis"]),
        DecisionFilter(reason="deny_element_not_allowed"),
        DecisionFilter(reason="allow_statutory_basis", subject=pseudo.person(P01)),
        DecisionFilter(agency="0" * 20),
        DecisionFilter(since=first + timedelta(days=1)),
        DecisionFilter(until=first),
        DecisionFilter(since=first, until=first + timedelta(days=1)),
    ]
    for flt in filters:
        expected = [
            r.seq
            for r, body in decisions
            if _matches(body, flt)
            and (flt.since is None or r.created_at >= flt.since)
            and (flt.until is None or r.created_at < flt.until)
        ]
        found = await search_decisions(db, flt, limit=1000)
        assert [e.seq for e in found] == expected[::-1], flt
        assert [e.seq async for e in iter_decisions(db, flt, page=2)] == expected, flt
        assert [e.seq async for e in iter_decisions(db, flt, limit=3, page=2)] == expected[:3]
    some = await search_decisions(db, DecisionFilter(subject=pseudo.person(P13)), limit=10)
    assert some and all(e.requester == AGENCIES["ggz"] for e in some)
    assert all(e.provider == AGENCIES["veilig_thuis"] for e in some)
    assert {e.agreement for e in some} == {"agr-ggz-vt-kindcheck"}
    assert all(e.agreement_version for e in some)

    # Officers of some agencies: only the exchanges those agencies took part in.
    scoped = await search_decisions(
        db, DecisionFilter(scope=frozenset({AGENCIES["ggz"]})), limit=1000
    )
    assert scoped and {e.requester for e in scoped} == {AGENCIES["ggz"]}


@pytest.mark.parametrize(
    "flt",
    [
        DecisionFilter(agency="0" * 20),
        DecisionFilter(agency="0" * 20, reason="deny_consent_missing", outcome="deny"),
        DecisionFilter(scope=frozenset({"0" * 20, "1" * 20})),
        DecisionFilter(subject="psn:" + "0" * 40, agreement="agr-vt-politie-hg"),
    ],
    ids=["agency", "agency-and-reason", "scope", "subject"],
)
async def test_each_filter_reads_an_index(database: Database, flt: DecisionFilter) -> None:
    plan = await _plan(database, flt)
    assert "SCAN audit_entries" not in plan and "Seq Scan" not in plan, plan
    assert "ix_audit" in plan or "INDEX" in plan.upper(), plan


def test_invalid_filters_are_refused() -> None:
    for bad in (
        {"agency": "123"},
        {"subject": "999990007"},
        {"purpose": "x' OR 1=1 --"},
        {"outcome": "maybe"},
    ):
        with pytest.raises(InvalidRequest):
            DecisionFilter(**bad)


async def _cli(timed: Timed, *args: str) -> tuple[str, str]:
    settings = timed.harness.broker.settings
    env = dict(
        os.environ,
        BROKER_DATABASE_URL=settings.database_url,
        BROKER_KEYS_DIR=str(settings.keys_dir),
        BROKER_PRIVACY_OFFICERS=settings.privacy_officers,
        BROKER_LOG_ORIGIN=settings.log_origin,
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "broker.cli",
        "audit",
        *args,
        env=env,
        cwd=PROJECT_ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await proc.communicate()
    assert proc.returncode == 0, stderr.decode()
    return stdout.decode(), stderr.decode()


async def test_cli_search_and_exports(timed: Timed, tmp_path: Path) -> None:
    mine = await timed.exchange("veilig_thuis", SUSPECT_HISTORY)
    await timed.exchange("ggz", KINDCHECK)
    db = timed.harness.broker.services.db
    officer = AGENCIES[PRIVACY_OFFICER]
    ours = [r for r, _ in await _decisions(db) if r.exchange_id == mine["exchange_id"]]
    person = [r for r in ours if r.element != "household.composition"]

    out, err = await _cli(timed, "search", "--subject-bsn", P01, "--oin", officer)
    assert P01 not in out + err
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["seq", "time", "requester"]
    assert [int(line.split()[0]) for line in lines[2:]] == [r.seq for r in person][::-1]
    assert "deny_element_not_allowed" in out and AGENCIES["politie"] in out
    assert err.startswith(f"{len(person)} entries")

    out, _ = await _cli(
        timed, "search", "--agency", AGENCIES["politie"], "--outcome", "deny", "--limit", "1"
    )
    assert len(out.splitlines()) == 3 and "deny" in out.splitlines()[2]

    csv_path = tmp_path / "out.csv"
    _, err = await _cli(
        timed, "export", "--subject-bsn", P01, "--format", "csv", "--out", str(csv_path)
    )
    rows = list(csv.DictReader(io.StringIO(csv_path.read_text(encoding="utf-8"))))
    assert [int(r["seq"]) for r in rows] == [r.seq for r in person]
    assert {r["agreement"] for r in rows} == {"agr-vt-politie-hg"}
    assert all(r["agreement_version"] == mine["agreement"]["version"] for r in rows)

    out, _ = await _cli(timed, "export", "--agreement", "agr-vt-politie-hg", "--format", "jsonl")
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["seq"] for r in records] == [r.seq for r in ours]
    assert {r["subject"] for r in records} == {r.subject_key for r in ours}

    out, _ = await _cli(timed, "export", "--subject-bsn", P01, "--format", "ldv")
    ldv = [json.loads(line) for line in out.splitlines()]
    assert len(ldv) == len(person)
    settings = timed.harness.broker.settings
    for record, row in zip(ldv, person, strict=True):
        body = json.loads(row.entry)
        assert record["trace_id"] == body.get("trace_id")
        assert record["data_subject_id"] == row.subject_key
        assert record["data_subject_id_type"] == "pseudonym"
        assert record["processing_activity_id"] == (
            f"urn:broker:agreement:agr-vt-politie-hg:v{mine['agreement']['version']}"
            f":purpose:{SUSPECT_HISTORY['purpose_id']}"
        )
        assert record["foreign_operation"]["operation_id"] == mine["exchange_id"]
        assert record["foreign_operation"]["entity"] == f"urn:oin:{AGENCIES['veilig_thuis']}"
        assert record["attributes"]["audit.seq"] == row.seq
        assert record["attributes"]["log.origin"] == settings.log_origin
        assert len(record["operation_id"]) == 16

    # Every search and export is audited with the pseudonym, never the BSN.
    async with db.session() as session:
        audited = (
            await session.scalars(
                select(AuditEntry).where(AuditEntry.kind == "audit_search").order_by(AuditEntry.seq)
            )
        ).all()
    assert len(audited) == 5
    assert all(P01 not in a.entry for a in audited)
    first = json.loads(audited[0].entry)
    assert (first["action"], first["requested_by"], first["entries"]) == (
        "search",
        officer,
        len(person),
    )
    assert first["filter"]["subject"] == person[0].subject_key
    assert audited[0].subject_key == person[0].subject_key
    assert [json.loads(a.entry)["format"] for a in audited] == [
        "table",
        "table",
        "csv",
        "jsonl",
        "ldv",
    ]
