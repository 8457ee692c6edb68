"""Officer accounts of the review web page: passwords, the second factor,
lockout and server-side sessions.

This is the embedded default sign-in: local accounts with argon2id password
hashes and a TOTP second factor (RFC 6238; the secret sealed at rest, see
``broker.review.sealing``). In production an OpenID Connect provider takes its
place (``broker.review.oidc``): it resolves the signed-in person to an account
here (by issuer and subject, or made from a role claim) and opens the same
server-side session; the pages only ever see the ``Officer``.

Every sign-in, failed or not, every sign-out and every account change is an
audit entry naming the account id (never the username, a password or a code);
a failed sign-in with an unknown username is audited without an account id.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import os
import re
import secrets
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol, cast

import structlog
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import Table, select
from sqlalchemy.exc import IntegrityError

from audit.log import AuditRecord, AuditWriter, RowUpdate
from broker.core.clock import Clock, system_clock
from broker.core.errors import (
    AuthenticationFailed,
    Conflict,
    InvalidRequest,
    NotFound,
    TooManyAttempts,
)
from broker.db.session import Database
from broker.review import totp
from broker.review.models import OfficerAccount, OfficerSession
from broker.review.sealing import SecretBox

log = structlog.get_logger("review.accounts")

_ACCOUNTS = cast(Table, OfficerAccount.__table__)
_SESSIONS = cast(Table, OfficerSession.__table__)
USERNAME = re.compile(r"[a-z][a-z0-9._-]{2,63}")
OIN = re.compile(r"[0-9]{20}")
MIN_PASSWORD_LENGTH = 12
MAX_FAILURES = 5  # consecutive failures before the account locks
LOCK_DURATION = timedelta(minutes=15)
SESSION_LIFETIME = timedelta(hours=8)
SESSION_IDLE = timedelta(minutes=30)
# Failed sign-ins per client address within the window before it is refused.
ADDRESS_MAX_FAILURES = 20
ADDRESS_WINDOW_SECONDS = 900.0

# argon2id (RFC 9106 second recommended option: 64 MiB, 3 passes, 4 lanes).
_hasher = PasswordHasher(time_cost=3, memory_cost=64 * 1024, parallelism=4)
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def check_password(stored_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(stored_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


@dataclass(frozen=True, slots=True)
class Officer:
    """A signed-in privacy officer: the account id and the agencies in scope
    (``agencies is None``: the broker's own officer, every agency)."""

    account_id: int
    username: str
    agencies: frozenset[str] | None

    @property
    def reviewer(self) -> str:
        """How reviews and audit entries name this officer."""
        return f"officer:{self.account_id}"

    def sees(self, *oins: str | None) -> bool:
        return self.agencies is None or any(o in self.agencies for o in oins if o)


@dataclass(frozen=True, slots=True)
class SignedIn:
    officer: Officer
    cookie: str
    csrf_token: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class SessionView:
    officer: Officer
    session_id: str
    csrf_token: str


@dataclass(frozen=True, slots=True)
class AccountView:
    id: int
    username: str
    agencies: list[str]
    broker_officer: bool
    active: bool
    locked_until: datetime | None
    created_at: datetime
    last_login_at: datetime | None
    oidc_issuer: str | None = None
    oidc_subject: str | None = None


@dataclass(frozen=True, slots=True)
class Scope:
    """The agencies an officer reviews, or every agency (``broker_officer``)."""

    agencies: tuple[str, ...]
    broker_officer: bool


@dataclass(frozen=True, slots=True)
class NewSecret:
    account: AccountView
    totp_secret: str
    otpauth_uri: str


class OfficerAuthenticator(Protocol):
    """What the pages ask of the sign-in: the officer a session cookie names.
    ``AccountService`` answers for sessions opened by both sign-ins (password +
    TOTP, and OpenID Connect through ``broker.review.oidc``)."""

    async def resolve(self, cookie: str | None) -> SessionView | None: ...


def load_or_create_session_key(keys_dir: Path) -> bytes:
    """The HMAC key that signs session cookies (``review-session.key``, mode 0600)."""
    path = keys_dir / "review-session.key"
    if not path.exists():
        keys_dir.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w", encoding="ascii") as fh:
                fh.write(secrets.token_bytes(32).hex())
    return bytes.fromhex(path.read_text(encoding="ascii").strip())


def _view(row: OfficerAccount) -> AccountView:
    return AccountView(
        id=row.id,
        username=row.username,
        agencies=list(row.agencies),
        broker_officer=row.broker_officer,
        active=row.active,
        locked_until=row.locked_until,
        created_at=row.created_at,
        last_login_at=row.last_login_at,
        oidc_issuer=row.oidc_issuer,
        oidc_subject=row.oidc_subject,
    )


def _officer(row: OfficerAccount) -> Officer:
    return Officer(
        account_id=row.id,
        username=row.username,
        agencies=None if row.broker_officer else frozenset(row.agencies),
    )


class _AddressLimiter:
    """Failed sign-ins per client address in a sliding window (this process)."""

    def __init__(self, max_failures: int, window: float) -> None:
        self._max = max_failures
        self._window = window
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, address: str) -> deque[float]:
        now = time.monotonic()
        q = self._failures.setdefault(address, deque())
        while q and now - q[0] > self._window:
            q.popleft()
        return q

    def blocked(self, address: str) -> bool:
        return len(self._recent(address)) >= self._max

    def failed(self, address: str) -> None:
        self._recent(address).append(time.monotonic())
        if len(self._failures) > 10_000:  # bound the memory under a spray of addresses
            self._failures = {a: q for a, q in self._failures.items() if q}


class AccountService:
    def __init__(
        self,
        *,
        db: Database,
        audit: AuditWriter,
        session_key: bytes,
        box: SecretBox,
        clock: Clock = system_clock,
        unix_time: Callable[[], float] | None = None,
    ) -> None:
        self._db = db
        self._audit = audit
        self._box = box
        self._session_key = session_key
        self._clock = clock
        # TOTP codes follow the broker's clock, so a test clock moves them too.
        self._unix_time = unix_time or (lambda: self._clock().timestamp())
        self._addresses = _AddressLimiter(ADDRESS_MAX_FAILURES, ADDRESS_WINDOW_SECONDS)

    # ------------------------------------------------------------ accounts
    @staticmethod
    def _check_new(username: str, agencies: list[str], broker_officer: bool) -> None:
        if not USERNAME.fullmatch(username):
            raise InvalidRequest(
                "A username is 3-64 characters: a-z first, then a-z, 0-9, '.', '_' or '-'",
                field="username",
            )
        if any(not OIN.fullmatch(o) for o in agencies):
            raise InvalidRequest("Agencies are 20-digit OINs", field="agency")
        if not agencies and not broker_officer:
            raise InvalidRequest(
                "Name the agencies (--agency) or make a broker officer", field="agency"
            )

    async def _insert(self, row: OfficerAccount, *, secret: str | None, via: str) -> OfficerAccount:
        """Stores a new account (its TOTP secret sealed to its id) and audits it."""
        if secret is not None:
            await self._box.prepare()  # the data key first: not inside the insert's transaction
        async with self._db.session() as session:
            session.add(row)
            try:
                await session.flush()
                if secret is not None:
                    row.totp_secret = await self._box.seal(row.id, secret)
                await session.commit()
            except IntegrityError as exc:
                raise Conflict(
                    "An account with this username or identity exists", field="username"
                ) from exc
        try:
            await self._audit.append(
                [
                    AuditRecord(
                        kind="officer_account_added",
                        body={
                            "account_id": row.id,
                            "agencies": row.agencies,
                            "broker_officer": row.broker_officer,
                            "via": via,
                        },
                    )
                ]
            )
        except Exception:
            async with self._db.session() as session:
                await session.delete(await session.get(OfficerAccount, row.id))
                await session.commit()
            raise
        log.info("review.account_added", account_id=row.id, via=via)
        return row

    def _new_row(
        self, username: str, agencies: list[str], broker_officer: bool, **sign_in: Any
    ) -> OfficerAccount:
        """A new, active account; ``sign_in`` holds its password hash or OpenID
        Connect identity (the TOTP secret is stored sealed by ``_insert``)."""
        values: dict[str, Any] = {"password_hash": None, "scope_from_claim": False, **sign_in}
        return OfficerAccount(
            username=username,
            totp_secret=None,
            agencies=sorted(set(agencies)),
            broker_officer=broker_officer,
            active=True,
            failed_logins=0,
            created_at=self._clock(),
            **values,
        )

    async def add(
        self, *, username: str, password: str, agencies: list[str], broker_officer: bool
    ) -> NewSecret:
        self._check_new(username, agencies, broker_officer)
        if len(password) < MIN_PASSWORD_LENGTH:
            raise InvalidRequest(
                f"A password has at least {MIN_PASSWORD_LENGTH} characters", field="password"
            )
        secret = totp.new_secret()
        password_hash = await asyncio.to_thread(hash_password, password)
        row = self._new_row(username, agencies, broker_officer, password_hash=password_hash)
        row = await self._insert(row, secret=secret, via="local")
        return NewSecret(_view(row), secret, totp.provisioning_uri(secret, username))

    async def add_oidc(
        self,
        *,
        username: str,
        issuer: str,
        subject: str,
        agencies: list[str],
        broker_officer: bool,
        scope_from_claim: bool = False,
    ) -> AccountView:
        """An account that signs in through OpenID Connect only (no password, no
        TOTP): the person the provider ``issuer`` names ``subject``."""
        self._check_new(username, agencies, broker_officer or scope_from_claim)
        if not issuer or len(issuer) > 255 or not subject or len(subject) > 255:
            raise InvalidRequest(
                "Give the issuer and the subject (at most 255 characters)", field="subject"
            )
        row = self._new_row(
            username,
            agencies,
            broker_officer,
            oidc_issuer=issuer,
            oidc_subject=subject,
            scope_from_claim=scope_from_claim,
        )
        row = await self._insert(row, secret=None, via="oidc_claim" if scope_from_claim else "oidc")
        return _view(row)

    async def list(self) -> list[AccountView]:
        async with self._db.session() as session:
            rows = (await session.scalars(select(OfficerAccount).order_by(OfficerAccount.id))).all()
        return [_view(r) for r in rows]

    async def _by_username(self, username: str) -> OfficerAccount:
        async with self._db.session() as session:
            row = await session.scalar(
                select(OfficerAccount).where(OfficerAccount.username == username)
            )
        if row is None:
            raise NotFound("No such officer account", field="username")
        return row

    async def disable(self, username: str) -> AccountView:
        """Disables the account and ends its sessions."""
        row = await self._by_username(username)
        now = self._clock()
        async with self._db.session() as session:
            sessions = (
                await session.scalars(
                    select(OfficerSession.id).where(
                        OfficerSession.account_id == row.id, OfficerSession.expires_at > now
                    )
                )
            ).all()
        updates = [RowUpdate(_ACCOUNTS, where={"id": row.id}, values={"active": False})]
        updates += [
            RowUpdate(_SESSIONS, where={"id": sid}, values={"expires_at": now}) for sid in sessions
        ]
        await self._audit.append(
            [AuditRecord(kind="officer_account_disabled", body={"account_id": row.id})],
            updates=updates,
        )
        row.active = False
        return _view(row)

    async def reset_totp(self, username: str) -> NewSecret:
        """A new TOTP secret (the old one stops working) and the lockout lifted."""
        row = await self._by_username(username)
        if row.password_hash is None:
            raise InvalidRequest(
                "This account signs in through OpenID Connect: it has no TOTP secret",
                field="username",
            )
        secret = totp.new_secret()
        values: dict[str, Any] = {
            "totp_secret": await self._box.seal(row.id, secret),
            "last_totp_step": None,
            "failed_logins": 0,
            "locked_until": None,
        }
        await self._audit.append(
            [AuditRecord(kind="officer_totp_reset", body={"account_id": row.id})],
            updates=[RowUpdate(_ACCOUNTS, where={"id": row.id}, values=values)],
        )
        for name, value in values.items():
            setattr(row, name, value)
        return NewSecret(_view(row), secret, totp.provisioning_uri(secret, row.username))

    # ------------------------------------------------------------ sign-in
    async def _login_failed(
        self,
        *,
        account: OfficerAccount | None,
        reason: str,
        address: str,
        request_id: str | None,
        locked: bool = False,
    ) -> None:
        self._addresses.failed(address)
        updates: list[RowUpdate] = []
        if account is not None and reason in ("bad_password", "bad_totp", "totp_reused"):
            failures = account.failed_logins + 1
            values: dict[str, Any] = {"failed_logins": failures}
            if failures >= MAX_FAILURES:
                values = {"failed_logins": 0, "locked_until": self._clock() + LOCK_DURATION}
                locked = True
            updates.append(
                RowUpdate(
                    _ACCOUNTS,
                    where={"id": account.id, "failed_logins": account.failed_logins},
                    values=values,
                )
            )
        body = {
            "request_id": request_id,
            "account_id": account.id if account is not None else None,
            "result": "failure",
            "reason": reason,
            "locked": locked,
            "method": "password_totp",
        }
        try:
            await self._audit.append(
                [AuditRecord(kind="officer_login", body=body)], updates=updates
            )
        except Conflict:
            # A concurrent attempt moved the counter: record the failure without it.
            await self._audit.append([AuditRecord(kind="officer_login", body=body)])
        log.info("review.login_failed", reason=reason, locked=locked)

    async def login(
        self,
        *,
        username: str,
        password: str,
        code: str,
        address: str,
        request_id: str | None = None,
    ) -> SignedIn:
        """Checks password and TOTP code; raises AuthenticationFailed (one message,
        whatever failed) or TooManyAttempts (account locked, address throttled)."""
        if self._addresses.blocked(address):
            await self._login_failed(
                account=None, reason="address_throttled", address=address, request_id=request_id
            )
            raise TooManyAttempts()
        async with self._db.session() as session:
            account = await session.scalar(
                select(OfficerAccount).where(OfficerAccount.username == username.strip().lower())
            )
        if account is None or account.password_hash is None or account.totp_secret is None:
            # Unknown, or an OpenID Connect account (no password): the same answer.
            await asyncio.to_thread(check_password, _DUMMY_HASH, password)  # same time
            await self._login_failed(
                account=None,
                reason="unknown_account" if account is None else "not_local",
                address=address,
                request_id=request_id,
            )
            raise AuthenticationFailed()
        now = self._clock()
        if account.locked_until is not None and account.locked_until > now:
            await self._login_failed(
                account=account,
                reason="locked",
                address=address,
                request_id=request_id,
                locked=True,
            )
            raise TooManyAttempts()
        password_ok = await asyncio.to_thread(check_password, account.password_hash, password)
        secret = await self._box.open(account.id, account.totp_secret)
        step = totp.verify(secret, code, self._unix_time())
        reason: str | None = None
        if not account.active:
            reason = "disabled"
        elif not password_ok:
            reason = "bad_password"
        elif step is None:
            reason = "bad_totp"
        elif account.last_totp_step is not None and step <= account.last_totp_step:
            reason = "totp_reused"
        if reason is not None:
            failures_left = MAX_FAILURES - account.failed_logins - 1
            await self._login_failed(
                account=account, reason=reason, address=address, request_id=request_id
            )
            if reason != "disabled" and failures_left <= 0:
                raise TooManyAttempts()
            raise AuthenticationFailed()

        token = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(32)
        expires = now + SESSION_LIFETIME
        values: dict[str, Any] = {
            "failed_logins": 0,
            "locked_until": None,
            "last_totp_step": step,
            "last_login_at": now,
        }
        if _hasher.check_needs_rehash(account.password_hash):
            values["password_hash"] = await asyncio.to_thread(hash_password, password)
        try:
            await self._commit_login(
                account,
                token=token,
                csrf=csrf,
                now=now,
                expires=expires,
                values=values,
                request_id=request_id,
                where={"id": account.id, "last_totp_step": account.last_totp_step},
                method="password_totp",
            )
        except Conflict as exc:
            # A concurrent sign-in with the same code won the race: this one is a replay.
            raise AuthenticationFailed() from exc
        log.info("review.login", account_id=account.id)
        return SignedIn(_officer(account), self._sign(token), csrf, expires)

    # ------------------------------------------------------------ OpenID Connect
    def address_blocked(self, address: str) -> bool:
        return self._addresses.blocked(address)

    async def external_failed(
        self,
        *,
        method: str,
        reason: str,
        address: str,
        request_id: str | None,
        account_id: int | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        """Audits a refused sign-in through an external provider (no counter:
        those accounts have no password to guess)."""
        self._addresses.failed(address)
        body: dict[str, Any] = {
            "request_id": request_id,
            "account_id": account_id,
            "result": "failure",
            "reason": reason,
            "locked": False,
            "method": method,
            **(detail or {}),
        }
        await self._audit.append([AuditRecord(kind="officer_login", body=body)])
        log.info("review.login_failed", reason=reason, method=method)

    async def external_login(
        self,
        *,
        issuer: str,
        subject: str,
        claim_scope: Scope | None,
        address: str,
        request_id: str | None,
        method: str = "oidc",
    ) -> SignedIn:
        """Opens a session for the account the provider ``issuer`` names
        ``subject`` (its identity checked by the caller). ``claim_scope`` is the
        scope the provider's role claim grants (None: no role claim configured;
        an empty scope: the claim grants nothing). A known account keeps its own
        scope unless it was made from the claim; an unknown subject gets in only
        with a role claim that grants a scope (an account is made and audited).
        Raises AuthenticationFailed (audited) otherwise."""
        ref = hashlib.sha256(f"{issuer}\x00{subject}".encode()).hexdigest()[:32]
        detail = {"subject_ref": ref}
        if self._addresses.blocked(address):
            await self.external_failed(
                method=method,
                reason="address_throttled",
                address=address,
                request_id=request_id,
                detail=detail,
            )
            raise TooManyAttempts()
        granted = claim_scope is not None and (
            claim_scope.broker_officer or bool(claim_scope.agencies)
        )
        async with self._db.session() as session:
            account = await session.scalar(
                select(OfficerAccount).where(
                    OfficerAccount.oidc_issuer == issuer, OfficerAccount.oidc_subject == subject
                )
            )
        if account is None:
            if not granted or claim_scope is None:
                await self.external_failed(
                    method=method,
                    reason="unknown_subject",
                    address=address,
                    request_id=request_id,
                    detail=detail,
                )
                raise AuthenticationFailed()
            with contextlib.suppress(Conflict):  # a concurrent first sign-in made it
                await self.add_oidc(
                    username=f"oidc-{ref[:20]}",
                    issuer=issuer,
                    subject=subject,
                    agencies=list(claim_scope.agencies),
                    broker_officer=claim_scope.broker_officer,
                    scope_from_claim=True,
                )
            async with self._db.session() as session:
                account = await session.scalar(
                    select(OfficerAccount).where(
                        OfficerAccount.oidc_issuer == issuer,
                        OfficerAccount.oidc_subject == subject,
                    )
                )
            if account is None:
                raise AuthenticationFailed()
        now = self._clock()
        reason: str | None = None
        if not account.active:
            reason = "disabled"
        elif account.locked_until is not None and account.locked_until > now:
            reason = "locked"
        elif account.scope_from_claim and not granted:
            reason = "no_officer_role"
        if reason is not None:
            await self.external_failed(
                method=method,
                reason=reason,
                address=address,
                request_id=request_id,
                account_id=account.id,
                detail=detail,
            )
            raise TooManyAttempts() if reason == "locked" else AuthenticationFailed()
        values: dict[str, Any] = {"last_login_at": now}
        records: list[AuditRecord] = []
        if account.scope_from_claim and claim_scope is not None:
            agencies = sorted(set(claim_scope.agencies))
            if (agencies, claim_scope.broker_officer) != (
                sorted(account.agencies),
                account.broker_officer,
            ):
                values.update(agencies=agencies, broker_officer=claim_scope.broker_officer)
                records.append(
                    AuditRecord(
                        kind="officer_scope_changed",
                        body={
                            "account_id": account.id,
                            "agencies": agencies,
                            "broker_officer": claim_scope.broker_officer,
                            "via": "oidc_claim",
                        },
                    )
                )
                account.agencies = agencies
                account.broker_officer = claim_scope.broker_officer
        token = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(32)
        expires = now + SESSION_LIFETIME
        await self._commit_login(
            account,
            token=token,
            csrf=csrf,
            now=now,
            expires=expires,
            values=values,
            request_id=request_id,
            where={"id": account.id},
            method=method,
            extra=records,
        )
        log.info("review.login", account_id=account.id, method=method)
        return SignedIn(_officer(account), self._sign(token), csrf, expires)

    async def _commit_login(
        self,
        account: OfficerAccount,
        *,
        token: str,
        csrf: str,
        now: datetime,
        expires: datetime,
        values: dict[str, Any],
        request_id: str | None,
        where: dict[str, Any],
        method: str,
        extra: Sequence[AuditRecord] = (),
    ) -> None:
        """The success entry, the session row and the account's update: one commit."""
        await self._audit.append(
            [
                *extra,
                AuditRecord(
                    kind="officer_login",
                    body={
                        "request_id": request_id,
                        "account_id": account.id,
                        "result": "success",
                        "reason": None,
                        "locked": False,
                        "method": method,
                    },
                ),
            ],
            rows=[
                (
                    _SESSIONS,
                    {
                        "id": hashlib.sha256(token.encode()).hexdigest(),
                        "account_id": account.id,
                        "csrf_token": csrf,
                        "created_at": now,
                        "expires_at": expires,
                        "idle_expires_at": min(expires, now + SESSION_IDLE),
                    },
                )
            ],
            updates=[RowUpdate(_ACCOUNTS, where=where, values=values)],
        )

    # ------------------------------------------------------------ sessions
    def _mac(self, token: str) -> str:
        digest = hmac.new(self._session_key, token.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")

    def _sign(self, token: str) -> str:
        return f"{token}.{self._mac(token)}"

    def _unsign(self, cookie: str | None) -> str | None:
        if not cookie or cookie.count(".") != 1 or len(cookie) > 200:
            return None
        token, mac = cookie.split(".")
        return token if hmac.compare_digest(mac, self._mac(token)) else None

    async def resolve(self, cookie: str | None) -> SessionView | None:
        """The live session a cookie names (its idle expiry moved on), or None."""
        token = self._unsign(cookie)
        if token is None:
            return None
        session_id = hashlib.sha256(token.encode()).hexdigest()
        now = self._clock()
        async with self._db.session() as session:
            row = await session.get(OfficerSession, session_id)
            if row is None or row.expires_at <= now or row.idle_expires_at <= now:
                return None
            account = await session.get(OfficerAccount, row.account_id)
            if account is None or not account.active:
                return None
            idle = min(row.expires_at, now + SESSION_IDLE)
            if idle - row.idle_expires_at > timedelta(minutes=1):
                row.idle_expires_at = idle
                await session.commit()
            return SessionView(_officer(account), session_id, row.csrf_token)

    async def logout(self, view: SessionView, *, request_id: str | None = None) -> None:
        now = self._clock()
        await self._audit.append(
            [
                AuditRecord(
                    kind="officer_logout",
                    body={"request_id": request_id, "account_id": view.officer.account_id},
                )
            ],
            updates=[
                RowUpdate(
                    _SESSIONS,
                    where={"id": view.session_id},
                    values={"expires_at": now, "idle_expires_at": now},
                )
            ],
        )
        log.info("review.logout", account_id=view.officer.account_id)

    def login_csrf(self) -> tuple[str, str]:
        """A token for the sign-in form and its signed cookie (double submit)."""
        token = secrets.token_urlsafe(32)
        return token, self._sign(token)

    def check_login_csrf(self, cookie: str | None, token: str | None) -> bool:
        expected = self._unsign(cookie)
        return bool(expected and token and hmac.compare_digest(expected, token))
