"""TOTP (RFC 6238 vectors), argon2id password hashes, and ``broker officer``
add|list|disable|reset-totp on a fresh SQLite file."""

from __future__ import annotations

import asyncio
import base64
import json
import re

import pytest
from sqlalchemy import select

from audit.models import AuditEntry
from audit.verify import verify_chain
from broker.db.session import Database
from broker.review import totp
from broker.review.accounts import check_password, hash_password
from broker.settings import Settings
from tests.unit.test_cli import Broker, broker  # noqa: F401 - the fixture

RFC_SECRET = base64.b32encode(b"12345678901234567890").decode()
PASSWORD = "correct horse battery staple"


@pytest.mark.parametrize(
    ("unix", "code"),
    [
        (59, "94287082"),
        (1111111109, "07081804"),
        (1111111111, "14050471"),
        (1234567890, "89005924"),
        (2000000000, "69279037"),
        (20000000000, "65353130"),
    ],
)
def test_rfc6238_sha1_vectors(unix: int, code: str) -> None:
    assert totp.hotp(RFC_SECRET, totp.step_at(unix), digits=8) == code


def test_verify_accepts_one_step_of_drift_only() -> None:
    secret = totp.new_secret()
    now = 1_800_000_000.0
    step = totp.step_at(now)
    assert totp.verify(secret, totp.totp(secret, now), now) == step
    assert totp.verify(secret, totp.totp(secret, now - 30), now) == step - 1
    assert totp.verify(secret, totp.totp(secret, now + 30), now) == step + 1
    assert totp.verify(secret, totp.totp(secret, now - 90), now) is None
    assert totp.verify(secret, "12345", now) is None
    assert totp.verify(secret, "abcdef", now) is None


def test_provisioning_uri() -> None:
    uri = totp.provisioning_uri("JBSWY3DPEHPK3PXP", "anna")
    assert uri.startswith("otpauth://totp/Chain%20broker:anna?")
    assert "secret=JBSWY3DPEHPK3PXP" in uri and "issuer=Chain%20broker" in uri
    assert "digits=6" in uri and "period=30" in uri


def test_argon2id_hashes() -> None:
    stored = hash_password(PASSWORD)
    assert stored.startswith("$argon2id$")
    assert check_password(stored, PASSWORD)
    assert not check_password(stored, PASSWORD + "!")
    assert not check_password("not a hash", PASSWORD)


def test_officer_commands(broker: Broker) -> None:  # noqa: F811
    added = broker(
        "officer",
        "add",
        "--username",
        "anna",
        "--agency",
        "00000001800006185000",
        "--password",
        PASSWORD,
    ).output
    secret = re.search(r"TOTP secret: ([A-Z2-7]+)", added)
    assert secret and f"secret={secret.group(1)}" in added
    assert "otpauth://totp/" in added
    chief = broker(
        "officer", "add", "--username", "chief", "--broker-officer", "--password", PASSWORD
    ).output
    assert "account 2 (chief)" in chief

    broker(
        "officer", "add", "--username", "anna", "--broker-officer", "--password", PASSWORD, code=1
    )
    short = broker(
        "officer", "add", "--username", "bob", "--broker-officer", "--password", "short", code=1
    )
    assert "at least 12 characters" in short.output
    broker("officer", "add", "--username", "bob", "--password", PASSWORD, code=1)  # no scope

    listed = broker("officer", "list").output.splitlines()
    assert re.match(r"1\s+anna\s+active\s+last sign-in never\s+00000001800006185000", listed[0])
    assert "ALL (broker officer)" in listed[1]

    reset = broker("officer", "reset-totp", "anna").output
    new_secret = re.search(r"TOTP secret: ([A-Z2-7]+)", reset)
    assert new_secret and secret and new_secret.group(1) != secret.group(1)
    assert "disabled" in broker("officer", "disable", "anna").output
    assert "disabled" in broker("officer", "list").output.splitlines()[0]
    broker("officer", "disable", "nobody", code=1)

    async def audited() -> list[dict[str, object]]:
        settings = Settings(database_url=f"sqlite:///{broker.tmp / 'cli.db'}")
        db = Database(settings.async_database_url)
        try:
            await verify_chain(db)
            async with db.session() as session:
                rows = (await session.scalars(select(AuditEntry.entry))).all()
        finally:
            await db.dispose()
        return [json.loads(r) for r in rows]

    entries = asyncio.run(audited())
    assert [e["kind"] for e in entries] == [
        "officer_account_added",
        "officer_account_added",
        "officer_totp_reset",
        "officer_account_disabled",
    ]
    assert entries[0]["account_id"] == 1 and entries[1]["broker_officer"] is True
    for e in entries:
        assert "anna" not in json.dumps(e) and PASSWORD not in json.dumps(e)
