"""The migrations and the models agree, on SQLite and PostgreSQL: a database
migrated to head differs in nothing from the models (what autogenerate would
write is empty). And migration 0014 moves a consent record's wilsonbekwaam
statement out of the ``givers`` JSON into its own column, and back on downgrade."""

from __future__ import annotations

import uuid
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from broker.db.migrate import downgrade, upgrade
from broker.db.models import Base
from tests.conftest import PG_ADMIN, _pg_url

# Expression indexes over audit entries, created in SQL by migration 0010 (the
# models cannot declare them portably).
EXPRESSION_INDEXES = frozenset({"ix_audit_decision_requester", "ix_audit_decision_provider"})


def _sync(url: str) -> str:
    return url.replace("postgresql://", "postgresql+psycopg://")


def _include(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
    return not (type_ == "index" and name in EXPRESSION_INDEXES)


def test_models_match_the_migrations(database_url: str) -> None:
    engine = sa.create_engine(_sync(database_url))
    try:
        with engine.connect() as conn, warnings.catch_warnings():
            # SQLite: "Skipped unsupported reflection of expression-based index".
            warnings.simplefilter("ignore", sa.exc.SAWarning)
            context = MigrationContext.configure(
                conn, opts={"compare_type": True, "include_object": _include}
            )
            differences = compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()
    assert differences == []


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A new, empty database of its own (migrated by the test)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'migrations.db'}"
        return
    yield from _empty_postgresql()


@pytest.fixture
def empty_pg_url() -> Iterator[str]:
    """A new, empty PostgreSQL database of its own."""
    yield from _empty_postgresql()


def _empty_postgresql() -> Iterator[str]:
    name = f"broker_m_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _sync(_pg_url(name))
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


STATEMENT = {
    "established_by": "ggz:behandelaar:4711",
    "established_at": "2026-06-18T11:00:00+02:00",
    "evidence_ref": "ggz-dms:WOB-2026-007",
}
HOLDERS = [
    {"key": "pk-father", "capacity": "authority_holder"},
    {"key": "pk-mother", "capacity": "authority_holder"},
]
CHILD = [{"key": "pk-child", "capacity": "child"}]
MARKER = {"key": "pk-child", "capacity": "represented", **STATEMENT}


def _insert(conn: sa.Connection, record_id: str, givers: list[dict[str, Any]]) -> None:
    at = datetime(2026, 6, 19, 13, 0, tzinfo=UTC)
    conn.execute(
        sa.text(
            "INSERT INTO consent_records (id, subject_key, givers, agreement_id, purpose_id,"
            " given_at, evidence_ref, recorded_by_oin, recorded_at) VALUES (:id, 'pk-child',"
            " :givers, 'agr-zvh-mdaplusplus', 'zorginformatie_casusoverleg', :at, 'ref:1',"
            " '00000003812345670000', :at)"
        ).bindparams(sa.bindparam("givers", type_=sa.JSON())),
        {"id": record_id, "givers": givers, "at": at},
    )


def _records(conn: sa.Connection, *, with_statement: bool) -> dict[str, tuple[Any, ...]]:
    table = sa.table(
        "consent_records",
        sa.column("id", sa.String()),
        sa.column("givers", sa.JSON()),
        *([sa.column("wilsonbekwaam", sa.JSON())] if with_statement else []),
    )
    return {row[0]: tuple(row[1:]) for row in conn.execute(sa.select(table))}


def _columns(engine: sa.Engine) -> set[str]:
    return {c["name"] for c in sa.inspect(engine).get_columns("consent_records")}


def _indexes(engine: sa.Engine) -> set[str]:
    return {str(i["name"]) for i in sa.inspect(engine).get_indexes("exchanges")}


def test_0014_moves_the_statement_to_its_column_and_back(empty_url: str) -> None:
    upgrade(empty_url, "0013")
    engine = sa.create_engine(empty_url)
    try:
        with engine.begin() as conn:
            _insert(conn, "CNS-FLAGGED", [*HOLDERS, MARKER])
            _insert(conn, "CNS-PLAIN", [*CHILD, *HOLDERS])
        assert "wilsonbekwaam" not in _columns(engine)
        assert "ix_exchanges_requester_scope" not in _indexes(engine)

        upgrade(empty_url, "0014")
        engine.dispose()
        with engine.connect() as conn:
            records = _records(conn, with_statement=True)
        assert records == {
            "CNS-FLAGGED": (HOLDERS, STATEMENT),
            "CNS-PLAIN": ([*CHILD, *HOLDERS], None),
        }
        assert "ix_exchanges_requester_scope" in _indexes(engine)

        downgrade(empty_url, "0013")
        engine.dispose()
        assert "wilsonbekwaam" not in _columns(engine)
        assert "ix_exchanges_requester_scope" not in _indexes(engine)
        with engine.connect() as conn:
            records = _records(conn, with_statement=False)
        assert records == {
            "CNS-FLAGGED": ([*HOLDERS, MARKER],),
            "CNS-PLAIN": ([*CHILD, *HOLDERS],),
        }
    finally:
        engine.dispose()


def _parallel_field_count(url: str) -> int:
    """Counts audit_entry_field over a table scan that PostgreSQL is told to run in parallel."""
    with psycopg.connect(
        url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True
    ) as conn:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS parallel_probe AS"
            ' SELECT \'{"a": "x"}\'::text AS entry FROM generate_series(1, 5000)'
        )
        conn.execute("ANALYZE parallel_probe")
        for setting in (
            "parallel_setup_cost = 0",
            "parallel_tuple_cost = 0",
            "min_parallel_table_scan_size = 0",
        ):
            conn.execute(f"SET {setting}")
        try:
            conn.execute("SET debug_parallel_query = on")  # PostgreSQL 16 and later
        except psycopg.errors.UndefinedObject:
            conn.execute("SET force_parallel_mode = on")  # PostgreSQL 15
        row = conn.execute(
            "SELECT count(audit_entry_field(entry, '{a}')) FROM parallel_probe"
        ).fetchone()
        assert row is not None
        return int(row[0])


def test_audit_field_function_runs_in_plans_the_planner_would_parallelise(
    empty_pg_url: str,
) -> None:
    """The PostgreSQL function behind the audit search indexes (SQLite has none)."""
    empty_url = empty_pg_url
    upgrade(empty_url, "0014")
    with pytest.raises(psycopg.errors.InvalidTransactionState):  # 0010 declared it parallel safe
        _parallel_field_count(empty_url)
    upgrade(empty_url)
    assert _parallel_field_count(empty_url) == 5000
