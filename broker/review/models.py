"""Tables of the review web page: officer accounts, their sessions, and the
audit-log verification runs started from the page.

An account names the agencies (OINs) its officer reviews, or is the broker's own
officer (``broker_officer``: every agency). Passwords are argon2id hashes; the
TOTP secret of the second factor is sealed (AES-256-GCM, ``broker.review.sealing``)
under a data key in ``officer_secret_keys`` that the broker's KEK wraps. An
account signs in with a password and TOTP, or through OpenID Connect (``oidc_issuer``
and ``oidc_subject``; no password, no TOTP secret). A session row is keyed by the SHA-256
of the cookie's random token, so the database never holds a usable cookie."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, BigInteger, Boolean, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from broker.db.base import Base, UTCDateTime


class OfficerAccount(Base):
    __tablename__ = "officer_accounts"
    __table_args__ = (UniqueConstraint("oidc_issuer", "oidc_subject"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str | None] = mapped_column(String(255), nullable=True)
    # "tk1:<key id>:<AES-256-GCM ciphertext>" (never the secret in clear).
    totp_secret: Mapped[str | None] = mapped_column(String(255), nullable=True)
    agencies: Mapped[list[str]] = mapped_column(JSON)
    broker_officer: Mapped[bool] = mapped_column(Boolean, default=False)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # The last TOTP time step accepted: a code is never accepted twice.
    last_totp_step: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # OpenID Connect: the provider's issuer and the officer's subject there.
    oidc_issuer: Mapped[str | None] = mapped_column(String(255), nullable=True)
    oidc_subject: Mapped[str | None] = mapped_column(String(255), nullable=True)
    # Made at a first OIDC sign-in from the role claim: the scope follows that
    # claim at every sign-in (else the scope is the account's own).
    scope_from_claim: Mapped[bool] = mapped_column(Boolean, default=False)


class OfficerSecretKey(Base):
    """The data key that seals officer TOTP secrets, wrapped by the broker's KEK."""

    __tablename__ = "officer_secret_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kek_id: Mapped[str] = mapped_column(String(16))
    wrapped: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class OfficerSession(Base):
    __tablename__ = "officer_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # SHA-256 of the token
    account_id: Mapped[int] = mapped_column(Integer, index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    idle_expires_at: Mapped[datetime] = mapped_column(UTCDateTime())


class VerificationRun(Base):
    __tablename__ = "audit_verification_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    finished_at: Mapped[datetime] = mapped_column(UTCDateTime())
    ok: Mapped[bool] = mapped_column(Boolean)
    size: Mapped[int] = mapped_column(BigInteger)
    root_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    message: Mapped[str | None] = mapped_column(String(500), nullable=True)
    account_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
