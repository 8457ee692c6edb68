"""Officer TOTP secrets are encrypted at rest (AES-256-GCM under a data key the
broker's KEK wraps): the database holds no secret in clear, sign-in works, a
ciphertext moved to another account does not open, and migration 0013 seals
the secrets stored in clear before it (and a downgrade opens them again)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from sqlalchemy import create_engine, select, text

from broker.db.migrate import downgrade, upgrade
from broker.review import totp
from broker.review.accounts import hash_password
from broker.review.models import OfficerAccount, OfficerSecretKey
from tests.conftest import AGENCIES, PG_ADMIN, broker_settings, serve_broker
from tests.integration.conftest import Clock
from tests.integration.test_breakglass import DECLARED_AT
from tests.integration.test_review_ui import PASSWORD, csrf_of

NO_SIMULATORS: dict[str, Any] = {"brp": "http://127.0.0.1:9", "parties": {}}


async def _sign_in(base: str, username: str, code: str) -> int:
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        form = await http.get("/review/login")
        response = await http.post(
            "/review/login",
            data={
                "username": username,
                "password": PASSWORD,
                "code": code,
                "csrf": csrf_of(form.text),
            },
        )
        return response.status_code


async def test_secrets_are_sealed_and_sign_in_works(database_url: str, tmp_path: Path) -> None:
    clock = Clock(DECLARED_AT)
    settings = broker_settings(database_url, NO_SIMULATORS, tmp_path)
    async with serve_broker(settings, clock) as broker:
        accounts = broker.services.review.accounts
        anna = await accounts.add(
            username="anna", password=PASSWORD, agencies=[AGENCIES["ggz"]], broker_officer=False
        )
        bob = await accounts.add(
            username="bob", password=PASSWORD, agencies=[AGENCIES["ggz"]], broker_officer=False
        )
        async with broker.services.db.session() as session:
            rows = {r.username: r for r in (await session.scalars(select(OfficerAccount))).all()}
            key = await session.get(OfficerSecretKey, "officer-totp-1")
        assert key is not None and len(key.wrapped) > 40
        for name, new in (("anna", anna), ("bob", bob)):
            stored = rows[name].totp_secret
            assert stored is not None and stored.startswith("tk1:officer-totp-1:")
            assert new.totp_secret not in stored and new.totp_secret.lower() not in stored
        assert (
            await _sign_in(
                broker.base_url, "anna", totp.totp(anna.totp_secret, clock().timestamp())
            )
            == 303
        )

        # A reset seals the new secret too; the old codes stop working.
        clock.advance(seconds=totp.PERIOD)
        reset = await accounts.reset_totp("anna")
        async with broker.services.db.session() as session:
            row = await session.get(OfficerAccount, anna.account.id)
        assert row is not None and row.totp_secret is not None
        assert row.totp_secret.startswith("tk1:") and reset.totp_secret not in row.totp_secret
        assert (
            await _sign_in(
                broker.base_url, "anna", totp.totp(anna.totp_secret, clock().timestamp())
            )
            == 401
        )
        assert (
            await _sign_in(
                broker.base_url, "anna", totp.totp(reset.totp_secret, clock().timestamp())
            )
            == 303
        )

        # Anna's ciphertext copied onto Bob's account does not open there.
        async with broker.services.db.session() as session:
            bob_row = await session.get(OfficerAccount, bob.account.id)
            assert bob_row is not None
            bob_row.totp_secret = row.totp_secret
            await session.commit()
        clock.advance(seconds=totp.PERIOD)
        async with httpx.AsyncClient(base_url=broker.base_url, timeout=30) as http:
            form = await http.get("/review/login")
            moved = await http.post(
                "/review/login",
                data={
                    "username": "bob",
                    "password": PASSWORD,
                    "code": totp.totp(reset.totp_secret, clock().timestamp()),
                    "csrf": csrf_of(form.text),
                },
            )
        assert moved.status_code == 500 and moved.json()["code"] == "key_error"


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of its own (migrations are run by the test)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'migrated.db'}"
        return
    name = f"broker_m_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield f"{PG_ADMIN.rpartition('/')[0]}/{name}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _sync(url: str) -> str:
    return url.replace("postgresql://", "postgresql+psycopg://")


def _stored(url: str) -> str:
    engine = create_engine(_sync(url))
    with engine.connect() as conn:
        value = conn.execute(
            text("SELECT totp_secret FROM officer_accounts WHERE username = 'legacy'")
        ).scalar_one()
    engine.dispose()
    return str(value)


async def test_migration_seals_secrets_stored_in_clear(
    fresh_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    upgrade(_sync(fresh_url), "0012")
    secret = totp.new_secret()
    engine = create_engine(_sync(fresh_url))
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO officer_accounts (username, password_hash, totp_secret, agencies, "
                "broker_officer, active, failed_logins, created_at) VALUES ('legacy', :pw, "
                ":secret, :agencies, false, true, 0, :now)"
            ),
            {
                "pw": hash_password(PASSWORD),
                "secret": secret,
                "agencies": f'["{AGENCIES["ggz"]}"]',
                "now": datetime.now(UTC),
            },
        )
    engine.dispose()
    # The migration reads the KEK as the broker does (here: the keys folder).
    monkeypatch.setenv("BROKER_KEYS_DIR", str(tmp_path / "keys"))
    upgrade(_sync(fresh_url))
    sealed = _stored(fresh_url)
    assert sealed.startswith("tk1:") and secret not in sealed

    downgrade(_sync(fresh_url), "0012")
    assert _stored(fresh_url) == secret
    upgrade(_sync(fresh_url))
    assert _stored(fresh_url).startswith("tk1:")

    clock = Clock(DECLARED_AT)
    settings = broker_settings(fresh_url, NO_SIMULATORS, tmp_path)
    assert settings.keys_dir == tmp_path / "keys"
    async with serve_broker(settings, clock) as broker:
        code = totp.totp(secret, clock().timestamp())
        assert await _sign_in(broker.base_url, "legacy", code) == 303
