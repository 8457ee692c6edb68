"""The one resilient way every adapter calls a partner endpoint.

:class:`ResilientHttp` owns one pooled ``aiohttp`` session (from :func:`adapters._http.new_session`,
so transport settings such as mTLS reach every adapter) and one circuit breaker per endpoint.

- :meth:`ResilientHttp.guarded` runs one adapter call (any number of HTTP requests) under the
  breaker and a total deadline: an open circuit short-circuits, the deadline ends the call with
  ``TIMEOUT``, an unexpected error with ``FAILED``; the breaker and the latency window see
  exactly one outcome per call. Cancellation by the caller is not the provider's fault: it
  frees the half-open probe slot and propagates.
- :meth:`ResilientHttp.request` makes one logical HTTP request inside such a call: bounded
  retries with exponential backoff and jitter for connection errors, 5xx and 429 (never past
  the call's deadline), no retry for other 4xx or a body the parser refuses.

Nothing personal is logged: endpoints, labels, reasons, statuses and counts only (URLs may
hold BSNs and are never logged).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Generic, Self, TypedDict, TypeVar, Unpack

import aiohttp
import structlog

from adapters._http import (
    CircuitBreakers,
    EndpointState,
    FatalError,
    Outcome,
    RetryableError,
    backoff_delay,
    client_span,
    new_session,
    read_limited,
    trace_headers,
)
from broker.core.protocols import FetchedItem, FetchItem, FetchRequest
from broker.core.types import ItemStatus

__all__ = [
    "Call",
    "CallEnd",
    "CallFailed",
    "Guarded",
    "GuardedAdapter",
    "HttpOptions",
    "ResilientHttp",
    "all_items",
]

_log = structlog.get_logger(__name__)
T = TypeVar("T")


class CallEnd(StrEnum):
    """How one guarded adapter call ended."""

    OK = "ok"
    FAILED = "failed"  # finished, but at least one request failed (after its retries)
    TIMEOUT = "timeout"  # the total deadline passed
    SHORT_CIRCUITED = "short_circuited"  # circuit open: nothing was called


class CallFailed(Exception):
    """One request could not be completed (after its retries). Carries a reason only."""

    def __init__(self, reason: str, http_status: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.http_status = http_status


@dataclass(slots=True)
class Call:
    """One guarded adapter call to one endpoint: its breaker state and deadline."""

    endpoint: str
    request_id: str
    st: EndpointState
    deadline: float
    failed: bool = False


@dataclass(frozen=True, slots=True)
class Guarded(Generic[T]):
    end: CallEnd
    value: T | None = None


class ResilientHttp:
    """Session, breakers, deadline and retries shared by the adapters of one ``kind``.

    ``timeout`` is the total budget of one guarded call in seconds, retries included;
    ``retries`` the extra attempts per request after a connection error, a 5xx or a 429. The
    breaker of an endpoint opens after ``breaker_threshold`` consecutive failed calls and lets
    one probe call through after ``breaker_cooldown`` seconds (half-open)."""

    def __init__(
        self,
        *,
        kind: str,
        log_prefix: str | None = None,
        timeout: float = 2.0,
        retries: int = 2,
        backoff_base: float = 0.05,
        backoff_max: float = 1.0,
        breaker_threshold: int = 5,
        breaker_cooldown: float = 30.0,
        max_connections: int = 100,
        max_connections_per_host: int = 20,
        max_body_bytes: int = 8 * 1024 * 1024,
        headers: Mapping[str, str] | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        if retries < 0:
            raise ValueError("retries must not be negative")
        self.kind = kind
        self._prefix = log_prefix or kind
        self.prefix = self._prefix  # of the adapter's log events
        self.timeout = timeout
        self._retries = retries
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._max_connections = max_connections
        self._max_connections_per_host = max_connections_per_host
        self._max_body_bytes = max_body_bytes
        self._headers = dict(headers or {})
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._clock = clock
        self._breakers = CircuitBreakers(
            threshold=breaker_threshold,
            cooldown=breaker_cooldown,
            clock=clock,
            log_prefix=self._prefix,
            kind=kind,
        )
        self._session: aiohttp.ClientSession | None = None

    # ------------------------------------------------------------------ lifecycle

    @property
    def open_session(self) -> aiohttp.ClientSession | None:
        """The current session, if one was created and is not closed."""
        return self._session if self._session is not None and not self._session.closed else None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = new_session(
                max_connections=self._max_connections,
                max_connections_per_host=self._max_connections_per_host,
                headers=self._headers,
            )
        return self._session

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()

    def health(self) -> dict[str, dict[str, Any]]:
        """Circuit state, call counters and latency percentiles per endpoint."""
        return self._breakers.health()

    def state(self, endpoint: str) -> EndpointState:
        return self._breakers.state(endpoint)

    # ------------------------------------------------------------------ guarded call

    async def guarded(
        self, endpoint: str, request_id: str, work: Callable[[Call], Awaitable[T]]
    ) -> Guarded[T]:
        """Run ``work`` as one call to ``endpoint`` under the breaker and the deadline."""
        st = self._breakers.state(endpoint)
        st.calls += 1
        if not self._breakers.admit(st):
            st.short_circuited += 1
            _log.warning(
                f"{self._prefix}_circuit_open_short_circuit",
                endpoint=endpoint,
                request_id=request_id,
            )
            return Guarded(CallEnd.SHORT_CIRCUITED)
        started = self._clock()
        call = Call(endpoint, request_id, st, started + self.timeout)
        value: T | None = None
        try:
            async with asyncio.timeout(self.timeout):
                value = await work(call)
            end = CallEnd.FAILED if call.failed else CallEnd.OK
        except TimeoutError:
            _log.warning(
                f"{self._prefix}_fetch_timeout",
                endpoint=endpoint,
                request_id=request_id,
                timeout_s=self.timeout,
            )
            end = CallEnd.TIMEOUT
        except asyncio.CancelledError:
            st.probe_in_flight = False  # the caller gave up: free the half-open probe slot
            raise
        except Exception as exc:  # noqa: BLE001 - the adapter contract: never raise for a call
            _log.error(
                f"{self._prefix}_fetch_error",
                endpoint=endpoint,
                request_id=request_id,
                error_type=type(exc).__name__,
            )
            end = CallEnd.FAILED
        outcome = {
            CallEnd.OK: Outcome.OK,
            CallEnd.TIMEOUT: Outcome.TIMEOUT,
        }.get(end, Outcome.FAILED)
        self._breakers.record(endpoint, st, outcome, self._clock() - started)
        return Guarded(end, value)

    # ------------------------------------------------------------------ one request

    async def request(
        self,
        call: Call,
        method: str,
        url: str,
        *,
        parse: Callable[[bytes], T],
        label: str,
        params: Mapping[str, str] | None = None,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        missing: frozenset[int] = frozenset(),
    ) -> T | None:
        """One logical request with bounded retries; ``None`` when the status is in
        ``missing`` (e.g. 404: the source does not know the subject). Raises
        :class:`CallFailed` (and marks the call failed) when it cannot be completed.
        ``label`` names the request in logs (never the URL: it may hold a BSN)."""
        attempt = 0
        while True:
            attempt += 1
            call.st.attempts += 1
            try:
                raw = await self._attempt(
                    method,
                    url,
                    params=params,
                    body=body,
                    headers=headers,
                    call=call,
                    missing=missing,
                )
                return None if raw is None else parse(raw)
            except FatalError as exc:
                self._log_failure(
                    call,
                    label=label,
                    attempt=attempt,
                    reason=exc.reason,
                    http_status=exc.http_status,
                    retryable=False,
                )
                call.failed = True
                raise CallFailed(exc.reason, exc.http_status) from exc
            except RetryableError as exc:
                delay = backoff_delay(attempt, self._backoff_base, self._backoff_max, self._rng)
                give_up = attempt > self._retries or self._clock() + delay >= call.deadline
                self._log_failure(
                    call,
                    label=label,
                    attempt=attempt,
                    reason=exc.reason,
                    http_status=exc.http_status,
                    retryable=not give_up,
                )
                if give_up:
                    call.failed = True
                    raise CallFailed(exc.reason, exc.http_status) from exc
                call.st.retries += 1
                await asyncio.sleep(delay)

    def _log_failure(
        self,
        call: Call,
        *,
        label: str,
        attempt: int,
        reason: str,
        http_status: int | None,
        retryable: bool,
    ) -> None:
        _log.warning(
            f"{self._prefix}_request_failed",
            endpoint=call.endpoint,
            request_id=call.request_id,
            resource=label,
            attempt=attempt,
            reason=reason,
            http_status=http_status,
            retryable=retryable,
        )

    async def _attempt(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, str] | None,
        body: bytes | None,
        headers: Mapping[str, str] | None,
        call: Call,
        missing: frozenset[int],
    ) -> bytes | None:
        """One HTTP attempt: the body, ``None`` for a ``missing`` status, or
        RetryableError/FatalError. Time-outs propagate as ``TimeoutError``."""
        session = self.session()
        sent = trace_headers({"X-Request-ID": call.request_id, **(headers or {})})
        try:
            async with session.request(
                method,
                url,
                params=dict(params) if params else None,
                data=body,
                headers=sent,
                allow_redirects=False,
            ) as resp:
                if resp.status in missing:
                    return None
                if resp.status >= 500 or resp.status == 429:
                    raise RetryableError("http_status", resp.status)
                if resp.status != 200:
                    raise FatalError("http_status", resp.status)
                return await read_limited(resp, self._max_body_bytes)
        except aiohttp.ClientPayloadError as exc:
            raise RetryableError("payload_error") from exc
        except aiohttp.ClientConnectionError as exc:
            if isinstance(exc, TimeoutError):  # aiohttp's own time-outs subclass both
                raise
            raise RetryableError("connection_error") from exc
        except aiohttp.ClientResponseError as exc:
            raise FatalError("bad_response", exc.status) from exc
        except aiohttp.ClientError as exc:
            raise FatalError("client_error") from exc


class HttpOptions(TypedDict, total=False):
    """The options of :class:`ResilientHttp` an adapter passes on (its defaults apply)."""

    timeout: float
    retries: int
    backoff_base: float
    backoff_max: float
    breaker_threshold: int
    breaker_cooldown: float
    max_connections: int
    max_connections_per_host: int
    max_body_bytes: int
    headers: Mapping[str, str] | None
    rng: random.Random | None
    clock: Callable[[], float]


class GuardedAdapter:
    """What every adapter over :class:`ResilientHttp` shares: its session and
    breakers, their lifecycle and health, and the traced :meth:`fetch`. A subclass
    implements ``_fetch`` (see :class:`broker.core.protocols.PartnerAdapter`)."""

    def __init__(
        self, *, kind: str, log_prefix: str | None = None, **options: Unpack[HttpOptions]
    ) -> None:
        self.kind = kind
        self._http = ResilientHttp(kind=kind, log_prefix=log_prefix, **options)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    def health(self) -> dict[str, dict[str, Any]]:
        """Circuit state, call counters and latency percentiles per endpoint (no
        personal data)."""
        return self._http.health()

    async def fetch(self, endpoint: str, request: FetchRequest) -> list[FetchedItem]:
        """One answer per distinct (element, BSN) asked, in the order asked; an
        endpoint that is not an http(s) URL makes every item unavailable."""
        with client_span("adapter.fetch", self.kind, endpoint) as span:
            span.set_attribute("broker.items", len(request.items))
            wanted = unique_items(request.items)
            if not wanted:
                return []
            endpoint = endpoint.rstrip("/")
            if not endpoint.startswith(("http://", "https://")):
                _log.error(f"{self._http.prefix}_endpoint_invalid", request_id=request.request_id)
                return all_items(wanted, ItemStatus.UNAVAILABLE)
            return await self._fetch(endpoint, request, wanted)

    async def _fetch(
        self, endpoint: str, request: FetchRequest, wanted: list[FetchItem]
    ) -> list[FetchedItem]:
        """Answers ``wanted`` (distinct, non-empty) from ``endpoint`` (http(s), no
        trailing slash)."""
        raise NotImplementedError


def unique_items(items: Iterable[FetchItem]) -> list[FetchItem]:
    """The first of the items asked for each (element, BSN), in order."""
    seen: set[tuple[str, str]] = set()
    out: list[FetchItem] = []
    for item in items:
        key = (item.element, item.bsn)
        if key not in seen:
            seen.add(key)
            out.append(item)
    return out


def all_items(items: list[FetchItem], status: ItemStatus) -> list[FetchedItem]:
    """``status`` (without a value) for every item."""
    return [FetchedItem(element=i.element, bsn=i.bsn, status=status) for i in items]
