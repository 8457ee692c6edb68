"""Fail closed: with the database gone, nothing leaves the broker."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg

from tests.conftest import (
    PG_ADMIN,
    Harness,
    broker_settings,
    clean,
    register_partners,
    serve_broker,
)
from tests.integration.test_exchange import SUSPECT_HISTORY


def _set_connections(dbname: str, allowed: bool) -> None:
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS {str(allowed).lower()}')
        if not allowed:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (dbname,),
            )


async def test_database_unavailable_releases_nothing(
    pg_url: str, simulators: dict[str, Any], tmp_path: Path
) -> None:
    clean(pg_url)
    settings = broker_settings(pg_url, simulators, tmp_path)
    partners = await register_partners(settings, simulators)
    dbname = pg_url.rsplit("/", 1)[1]
    async with serve_broker(settings) as broker:
        harness = Harness(broker, partners)
        client = harness.client("veilig_thuis")
        try:
            ok = await client.exchange(SUSPECT_HISTORY)  # also caches the token
            assert ok.status_code == 200
            _set_connections(dbname, False)
            try:
                down = await client.exchange(SUSPECT_HISTORY)
            finally:
                _set_connections(dbname, True)
            assert down.status_code == 503
            problem = down.json()
            assert problem["code"] in {"audit_unavailable", "storage_unavailable"}
            assert "payload" not in problem
            assert down.headers["content-type"].startswith("application/problem+json")
            # Once the database is back, the broker recovers by itself.
            again = await client.exchange(SUSPECT_HISTORY)
            assert again.status_code == 200
        finally:
            await client.aclose()
