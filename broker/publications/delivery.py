"""Webhook delivery of inbox messages: at least once, signed by the broker.

An agency with a registered webhook URL (``broker agency webhook``) gets each of
its inbox messages POSTed there as JSON (``WebhookDelivery``: the recipient, the
attempt number, the send time and the message as ``GET /v1/inbox`` shows it).
The header ``Broker-Signature`` holds a JWS (RFC 7515) with detached payload
(Appendix F): ``<protected header>..<signature>``, header
``{"alg": <the active key's, EdDSA>, "kid": <a key of /oauth/jwks>,
"typ": "broker-webhook+jws"}``,
signed over ``<protected header>.<base64url(request body)>``. A 2xx answer
acknowledges the message (audited, it leaves the inbox); anything else, or no
answer within the timeout, is retried with exponential backoff and jitter up
to a maximum number of attempts, after which the message simply stays in the
inbox for polling. Deliveries can repeat (a crash after the POST, a lost
answer): receivers de-duplicate by ``message.id``.

Work is claimed in a short write transaction: on PostgreSQL with
``SELECT ... FOR UPDATE SKIP LOCKED``, on SQLite inside a ``BEGIN IMMEDIATE``
transaction (the database's write lock serialises claimers); the claim sets
``claimed_by`` and a lease (``claimed_until``), so of several broker instances
exactly one makes each attempt, and a crashed instance's attempt is retried
when its lease ends. The HTTP call happens outside any transaction.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, cast
from urllib.parse import urlsplit

import httpx
import structlog
from sqlalchemy import Table, or_, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from audit.log import AuditWriter
from broker.agencies.models import Agency
from broker.core.canonical import canonical_json
from broker.core.clock import Clock, system_clock
from broker.core.errors import BrokerError, Conflict, InvalidRequest, NotFound
from broker.core.periodic import cancel
from broker.crypto.keys import BrokerKeyring
from broker.db.session import Database
from broker.publications.models import AgencyWebhook, InboxMessage
from broker.publications.schemas import WebhookDelivery, message_out
from broker.publications.service import ack_unit

log = structlog.get_logger("publications.delivery")

SIGNATURE_HEADER = "Broker-Signature"
SIGNATURE_TYPE = "broker-webhook+jws"
_random = secrets.SystemRandom()


def _b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


async def sign_detached(keyring: BrokerKeyring, body: bytes) -> str:
    """A compact JWS over ``body`` with the payload detached: ``header..signature``
    (signed off the event loop when the key is in an HSM)."""
    header = {"alg": keyring.active_alg, "kid": keyring.active_kid, "typ": SIGNATURE_TYPE}
    protected = _b64u(canonical_json(header))
    signature = await keyring.sign_async(f"{protected}.{_b64u(body)}".encode("ascii"))
    return f"{protected}..{_b64u(signature.value)}"


def backoff_seconds(attempts: int, base: float, cap: float) -> float:
    """Delay before the next attempt after ``attempts`` failed ones: exponential,
    capped, with "equal jitter" (half fixed, half random)."""
    ceiling = min(cap, base * 2.0 ** max(attempts - 1, 0))
    return ceiling / 2 + _random.uniform(0, ceiling / 2)


def validate_webhook_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname or len(url) > 500:
        raise InvalidRequest("A webhook URL is an absolute http(s) URL", field="url")
    if parts.username or parts.password:
        raise InvalidRequest("A webhook URL holds no credentials", field="url")
    return url


class WebhookRegistry:
    """Agencies' webhook URLs (one per agency). Used by the CLI."""

    def __init__(self, db: Database, clock: Clock = system_clock) -> None:
        self._db = db
        self._clock = clock

    async def set(self, oin: str, url: str | None) -> str | None:
        """Registers (or with ``None`` removes) the agency's webhook; returns it.
        Registering re-arms the messages a previous endpoint gave up on."""
        now = self._clock()
        async with self._db.session() as session:
            if await session.get(Agency, oin) is None:
                raise NotFound("No such agency")
            row = await session.get(AgencyWebhook, oin)
            if url is None:
                if row is not None:
                    await session.delete(row)
            elif row is None:
                session.add(
                    AgencyWebhook(
                        agency_oin=oin,
                        url=validate_webhook_url(url),
                        created_at=now,
                        updated_at=now,
                    )
                )
            else:
                row.url = validate_webhook_url(url)
                row.updated_at = now
            if url is not None:
                # Messages the old endpoint gave up on get a fresh series of attempts.
                await session.execute(
                    update(InboxMessage)
                    .where(
                        InboxMessage.recipient_oin == oin,
                        InboxMessage.acked_at.is_(None),
                        InboxMessage.gave_up_at.is_not(None),
                    )
                    .values(gave_up_at=None, next_attempt_at=None, attempts=0)
                )
            try:
                await session.commit()
            except IntegrityError as exc:
                raise Conflict("The webhook was changed concurrently") from exc
        return url

    async def get(self, oin: str) -> str | None:
        async with self._db.session() as session:
            row = await session.get(AgencyWebhook, oin)
            return row.url if row is not None else None


@dataclass(frozen=True, slots=True)
class _Claimed:
    message: Any  # a row of inbox_messages, as claimed
    url: str


class WebhookWorker:
    """Claims due messages of agencies with a webhook and POSTs them."""

    def __init__(
        self,
        *,
        db: Database,
        keyring: BrokerKeyring,
        audit: AuditWriter,
        poll_seconds: float = 1.0,
        max_attempts: int = 8,
        backoff_seconds: float = 2.0,
        backoff_max_seconds: float = 300.0,
        timeout_seconds: float = 5.0,
        batch: int = 16,
        clock: Clock = system_clock,
    ) -> None:
        self._db = db
        self._keyring = keyring
        self._audit = audit
        self._poll = poll_seconds
        self._max_attempts = max_attempts
        self._base = backoff_seconds
        self._cap = backoff_max_seconds
        self._timeout = timeout_seconds
        self._lease = timedelta(seconds=timeout_seconds + 30)
        self._batch = batch
        self._clock = clock
        self.instance = f"worker-{uuid.uuid4()}"
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._http: httpx.AsyncClient | None = None

    def start(self) -> None:
        if self._task is None and self._poll > 0:
            self._task = asyncio.create_task(self._run(), name="webhook-delivery")

    async def stop(self) -> None:
        await cancel(self._task)
        self._task = None
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    def wake(self) -> None:
        """A message was stored: look now rather than at the next poll."""
        self._wake.set()

    async def _run(self) -> None:
        while True:
            try:
                busy = await self.run_once()
            except (SQLAlchemyError, OSError, BrokerError) as exc:  # a database hiccup
                log.warning("webhook.cycle_failed", error=type(exc).__name__)
                busy = 0
            if busy:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._poll)
            self._wake.clear()

    async def run_once(self) -> int:
        """Claims one batch of due messages and makes one attempt for each;
        returns how many it attempted."""
        claimed = await self._claim()
        if claimed:
            await asyncio.gather(*(self._deliver(c) for c in claimed))
        return len(claimed)

    async def _claim(self) -> list[_Claimed]:
        now = self._clock()
        m = cast(Table, InboxMessage.__table__)
        w = cast(Table, AgencyWebhook.__table__)
        a = cast(Table, Agency.__table__)
        due = (
            select(m.c.id, w.c.url)
            .join(w, w.c.agency_oin == m.c.recipient_oin)
            .join(a, a.c.oin == m.c.recipient_oin)
            .where(
                m.c.acked_at.is_(None),
                m.c.gave_up_at.is_(None),
                a.c.active.is_(True),
                or_(m.c.next_attempt_at.is_(None), m.c.next_attempt_at <= now),
                or_(m.c.claimed_until.is_(None), m.c.claimed_until < now),
            )
            .order_by(m.c.created_at, m.c.id)
            .limit(self._batch)
        )
        if not self._db.is_sqlite:
            due = due.with_for_update(skip_locked=True, of=m)
        async with self._db.write_engine.begin() as conn:
            urls = {row.id: row.url for row in (await conn.execute(due)).all()}
            if not urls:
                return []
            await conn.execute(
                update(m)
                .where(m.c.id.in_(list(urls)))
                .values(
                    claimed_by=self.instance,
                    claimed_until=now + self._lease,
                    attempts=m.c.attempts + 1,
                )
            )
            rows = (await conn.execute(select(m).where(m.c.id.in_(list(urls))))).all()
        return [_Claimed(row, urls[row.id]) for row in rows]

    async def _deliver(self, claimed: _Claimed) -> None:
        message = claimed.message
        body = (
            WebhookDelivery(
                recipient_oin=message.recipient_oin,
                attempt=message.attempts,
                sent_at=self._clock(),
                message=message_out(message),
            )
            .model_dump_json()
            .encode("utf-8")
        )
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: await sign_detached(self._keyring, body),
            "Broker-Message-Id": message.id,
        }
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=self._timeout, follow_redirects=False)
        error: str | None = None
        try:
            response = await self._http.post(claimed.url, content=body, headers=headers)
            if not 200 <= response.status_code < 300:
                error = f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            error = type(exc).__name__
        if error is None:
            await self._delivered(message)
        else:
            await self._failed(message, error)

    async def _delivered(self, message: Any) -> None:
        records, updates = ack_unit(
            message, via="webhook", at=self._clock(), where={"claimed_by": self.instance}
        )
        try:
            await self._audit.append(records, updates=updates)
        except Conflict:
            # Acknowledged through the inbox meanwhile (or our lease ended): done either way.
            await self._release(message, {})
        log.info("webhook.delivered", message_id=message.id, attempt=message.attempts)

    async def _failed(self, message: Any, error: str) -> None:
        now = self._clock()
        values: dict[str, Any] = {"last_error": error}
        if message.attempts >= self._max_attempts:
            values["gave_up_at"] = now
            log.warning("webhook.gave_up", message_id=message.id, attempts=message.attempts)
        else:
            delay = backoff_seconds(message.attempts, self._base, self._cap)
            values["next_attempt_at"] = now + timedelta(seconds=delay)
            log.info("webhook.retry", message_id=message.id, attempt=message.attempts, error=error)
        await self._release(message, values)

    async def _release(self, message: Any, values: dict[str, Any]) -> None:
        """Ends this instance's claim on the message, recording ``values``."""
        m = cast(Table, InboxMessage.__table__)
        try:
            async with self._db.write_engine.begin() as conn:
                await conn.execute(
                    update(m)
                    .where(m.c.id == message.id, m.c.claimed_by == self.instance)
                    .values(claimed_by=None, claimed_until=None, **values)
                )
        except SQLAlchemyError as exc:  # the lease ends by itself; retried then
            log.warning("webhook.release_failed", error=type(exc).__name__)
