"""Settings: production refuses placeholders, OPA needs a URL, database URLs are
derived for the async and sync drivers."""

from __future__ import annotations

import os
from typing import Any

import pytest
from pydantic import ValidationError

from broker.settings import EngineKind, Environment, Settings

PG = "postgresql://broker@db.internal:5432/broker"
KEY = "k" * 32


def settings(**values: Any) -> Settings:
    return Settings(**values)


@pytest.fixture(autouse=True)
def _no_broker_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("BROKER_"):
            monkeypatch.delenv(name)


def test_development_defaults() -> None:
    s = settings()
    assert s.environment is Environment.DEVELOPMENT
    assert s.policy_engine is EngineKind.EMBEDDED
    assert s.database_url.startswith("sqlite:///")
    assert s.pseudonym_key is None
    assert s.token_endpoint == "http://127.0.0.1:8080/oauth/token"


def test_production_accepts_a_complete_configuration() -> None:
    s = settings(environment="production", pseudonym_key=KEY, database_url=PG)
    assert s.environment is Environment.PRODUCTION
    assert s.pseudonym_key is not None
    assert s.pseudonym_key.get_secret_value() == KEY
    assert KEY not in repr(s)  # a SecretStr is never printed


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"database_url": PG}, "BROKER_PSEUDONYM_KEY"),
        ({"database_url": PG, "pseudonym_key": "k" * 31}, "BROKER_PSEUDONYM_KEY"),
        ({"database_url": PG, "pseudonym_key": ""}, "BROKER_PSEUDONYM_KEY"),
        ({"pseudonym_key": KEY}, "production needs PostgreSQL"),
        ({"pseudonym_key": KEY, "database_url": "sqlite:///var/x.db"}, "PostgreSQL"),
    ],
)
def test_production_refuses_placeholders(values: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        settings(environment="production", **values)


def test_production_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BROKER_ENVIRONMENT", "production")
    monkeypatch.setenv("BROKER_DATABASE_URL", PG)
    with pytest.raises(ValidationError, match="BROKER_PSEUDONYM_KEY"):
        Settings()
    monkeypatch.setenv("BROKER_PSEUDONYM_KEY", KEY)
    assert Settings().database_url == PG


def test_opa_engine_requires_a_url() -> None:
    with pytest.raises(ValidationError, match="BROKER_OPA_URL"):
        settings(policy_engine="opa")
    with pytest.raises(ValidationError, match="BROKER_OPA_URL"):
        settings(policy_engine="opa", opa_url="")
    s = settings(policy_engine="opa", opa_url="http://127.0.0.1:8181")
    assert s.policy_engine is EngineKind.OPA


def test_unknown_enum_values_are_refused() -> None:
    with pytest.raises(ValidationError):
        settings(environment="staging")
    with pytest.raises(ValidationError):
        settings(policy_engine="wasm")


@pytest.mark.parametrize(
    ("url", "async_url", "sync_url"),
    [
        ("sqlite:///var/broker.db", "sqlite+aiosqlite:///var/broker.db", "sqlite:///var/broker.db"),
        ("sqlite:////abs/path.db", "sqlite+aiosqlite:////abs/path.db", "sqlite:////abs/path.db"),
        (PG, "postgresql+psycopg://broker@db.internal:5432/broker", "postgresql+psycopg://broker@db.internal:5432/broker"),
        (
            "postgresql://u:p%40ss@h/db?sslmode=require",
            "postgresql+psycopg://u:p%40ss@h/db?sslmode=require",
            "postgresql+psycopg://u:p%40ss@h/db?sslmode=require",
        ),
        # Explicit drivers are left alone.
        ("sqlite+aiosqlite:///x.db", "sqlite+aiosqlite:///x.db", "sqlite+aiosqlite:///x.db"),
        ("postgresql+psycopg://h/db", "postgresql+psycopg://h/db", "postgresql+psycopg://h/db"),
    ],
)  # fmt: skip
def test_database_url_derivation(url: str, async_url: str, sync_url: str) -> None:
    s = settings(database_url=url)
    assert s.async_database_url == async_url
    assert s.sync_database_url == sync_url


def test_token_endpoint_ignores_a_trailing_slash() -> None:
    s = settings(public_url="https://broker.example/")
    assert s.token_endpoint == "https://broker.example/oauth/token"


def test_agreement_admins_are_comma_separated_oins(monkeypatch: pytest.MonkeyPatch) -> None:
    assert settings().agreement_admins == []
    monkeypatch.setenv("BROKER_AGREEMENT_ADMINS", "00000001800006185000, 00000001800006185001,")
    assert Settings().agreement_admins == ["00000001800006185000", "00000001800006185001"]
    assert settings(agreement_admins=["00000001800006185000"]).agreement_admins == [
        "00000001800006185000"
    ]
    monkeypatch.setenv("BROKER_AGREEMENT_ADMINS", "00000001800006185000,not-an-oin")
    with pytest.raises(ValidationError, match="BROKER_AGREEMENT_ADMINS"):
        Settings()


def test_pkcs11_backend_needs_module_token_and_pin() -> None:
    with pytest.raises(ValidationError, match="BROKER_PKCS11_MODULE"):
        settings(key_backend="pkcs11", pkcs11_module="/usr/lib/softhsm/libsofthsm2.so")
    configured = settings(
        key_backend="pkcs11",
        pkcs11_module="/usr/lib/softhsm/libsofthsm2.so",
        pkcs11_token_label="broker",
        pkcs11_pin="1234",
    )
    assert configured.key_backend == "pkcs11"
    assert configured.pkcs11_key_label == "broker-signing"
    assert "1234" not in repr(configured)  # the PIN is a secret
    with pytest.raises(ValidationError):
        settings(pkcs11_key_label="a/b")  # "/" separates the label from the key's time
    assert settings().key_backend == "file"


def test_policy_threads_must_not_be_negative() -> None:
    assert settings(policy_threads=0).policy_threads == 0
    with pytest.raises(ValidationError, match="policy_threads"):
        settings(policy_threads=-1)
