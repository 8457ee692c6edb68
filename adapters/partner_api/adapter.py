"""HTTP adapter for the broker's partner API (wire format: adapters/partner_api/README.md).

One :class:`PartnerApiAdapter` instance reaches any number of partner endpoints through ONE
shared, pooled ``aiohttp.ClientSession`` (created lazily on first use). Every call has a total
deadline, bounded retries with exponential backoff and jitter, and a circuit breaker per
endpoint. The adapter never raises for a provider fault: faults become per-item
``unavailable``/``timeout`` statuses. Nothing personal (BSNs, values) is ever logged.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

import aiohttp
import structlog
from pydantic import BaseModel, ConfigDict, ValidationError

from broker.core.protocols import FetchedItem, FetchItem, FetchRequest
from broker.core.types import ItemStatus, ResponseForm

__all__ = ["BreakerState", "PartnerApiAdapter"]

FETCH_PATH = "/broker/v1/fetch"
_log = structlog.get_logger(__name__)

_Key = tuple[str, str]  # (element, bsn)


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class _WireItem(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    element: str
    bsn: str
    status: Literal["ok", "not_found"]
    value: Any = None
    source: str | None = None


class _WireResponse(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    items: list[_WireItem]


class _Outcome(StrEnum):
    """How one call to an endpoint ended (drives the breaker and the stats)."""

    OK = "ok"
    FAILED = "failed"
    TIMEOUT = "timeout"


@dataclass(slots=True)
class _EndpointState:
    state: BreakerState = BreakerState.CLOSED
    consecutive_failures: int = 0
    opened_at: float = 0.0
    probe_in_flight: bool = False
    calls: int = 0
    attempts: int = 0
    retries: int = 0
    successes: int = 0
    failures: int = 0
    timeouts: int = 0
    short_circuited: int = 0
    dropped_unrequested: int = 0

    def snapshot(self) -> dict[str, Any]:
        return {
            "state": self.state.value,
            "consecutive_failures": self.consecutive_failures,
            "calls": self.calls,
            "attempts": self.attempts,
            "retries": self.retries,
            "successes": self.successes,
            "failures": self.failures,
            "timeouts": self.timeouts,
            "short_circuited": self.short_circuited,
            "dropped_unrequested": self.dropped_unrequested,
        }


class _RetryableError(Exception):
    """An attempt failed in a way that another attempt may fix (connection error, 5xx, 429)."""

    def __init__(self, reason: str, http_status: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.http_status = http_status


class _FatalError(Exception):
    """An attempt failed in a way that retrying will not fix (4xx, malformed body)."""

    def __init__(self, reason: str, http_status: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.http_status = http_status


class PartnerApiAdapter:
    """Implements :class:`broker.core.protocols.PartnerAdapter` over the partner HTTP API.

    ``timeout`` is the total budget of one :meth:`fetch` call in seconds, retries included.
    ``retries`` is the number of extra attempts after a connection error, a 5xx or a 429.
    The breaker of an endpoint opens after ``breaker_threshold`` consecutive failed calls
    and lets one probe call through after ``breaker_cooldown`` seconds (half-open).
    """

    kind = "partner_api"

    def __init__(
        self,
        *,
        timeout: float = 2.0,
        retries: int = 2,
        backoff_base: float = 0.05,
        backoff_max: float = 1.0,
        breaker_threshold: int = 5,
        breaker_cooldown: float = 30.0,
        max_connections: int = 100,
        max_connections_per_host: int = 20,
        max_body_bytes: int = 8 * 1024 * 1024,
        headers: dict[str, str] | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        if retries < 0:
            raise ValueError("retries must not be negative")
        if breaker_threshold < 1:
            raise ValueError("breaker_threshold must be at least 1")
        self._timeout = timeout
        self._retries = retries
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._breaker_threshold = breaker_threshold
        self._breaker_cooldown = breaker_cooldown
        self._max_connections = max_connections
        self._max_connections_per_host = max_connections_per_host
        self._max_body_bytes = max_body_bytes
        self._headers = dict(headers or {})
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._clock = clock
        self._session: aiohttp.ClientSession | None = None
        self._endpoints: dict[str, _EndpointState] = {}

    # ------------------------------------------------------------------ lifecycle

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self._max_connections,
                limit_per_host=self._max_connections_per_host,
                ttl_dns_cache=300,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                headers=self._headers,
                raise_for_status=False,
            )
        return self._session

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()

    async def __aenter__(self) -> PartnerApiAdapter:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    # ------------------------------------------------------------------ stats

    def health(self) -> dict[str, dict[str, Any]]:
        """Circuit state and call counters per endpoint (no personal data)."""
        now = self._clock()
        out: dict[str, dict[str, Any]] = {}
        for endpoint, st in self._endpoints.items():
            snap = st.snapshot()
            if st.state is BreakerState.OPEN:
                snap["retry_in_s"] = max(0.0, round(st.opened_at + self._breaker_cooldown - now, 3))
            out[endpoint] = snap
        return out

    # ------------------------------------------------------------------ breaker

    def _endpoint_state(self, endpoint: str) -> _EndpointState:
        st = self._endpoints.get(endpoint)
        if st is None:
            st = self._endpoints[endpoint] = _EndpointState()
        return st

    def _admit(self, st: _EndpointState) -> bool:
        """May a call go through? Moves OPEN to HALF_OPEN after the cool-down."""
        if st.state is BreakerState.OPEN:
            if self._clock() - st.opened_at < self._breaker_cooldown:
                return False
            st.state = BreakerState.HALF_OPEN
        if st.state is BreakerState.HALF_OPEN:
            if st.probe_in_flight:
                return False
            st.probe_in_flight = True
        return True

    def _record(self, endpoint: str, st: _EndpointState, outcome: _Outcome) -> None:
        st.probe_in_flight = False
        if outcome is _Outcome.OK:
            st.successes += 1
            if st.state is not BreakerState.CLOSED:
                _log.info("partner_circuit_closed", endpoint=endpoint)
            st.state = BreakerState.CLOSED
            st.consecutive_failures = 0
            return
        if outcome is _Outcome.TIMEOUT:
            st.timeouts += 1
        else:
            st.failures += 1
        st.consecutive_failures += 1
        if st.state is BreakerState.HALF_OPEN or (
            st.state is BreakerState.CLOSED and st.consecutive_failures >= self._breaker_threshold
        ):
            st.state = BreakerState.OPEN
            st.opened_at = self._clock()
            _log.warning(
                "partner_circuit_opened",
                endpoint=endpoint,
                consecutive_failures=st.consecutive_failures,
            )

    # ------------------------------------------------------------------ fetch

    async def fetch(self, endpoint: str, request: FetchRequest) -> list[FetchedItem]:
        wanted = _unique_items(request.items)
        if not wanted:
            return []
        endpoint = endpoint.rstrip("/")
        if not endpoint.startswith(("http://", "https://")):
            _log.error("partner_endpoint_invalid", request_id=request.request_id)
            return _all(wanted, ItemStatus.UNAVAILABLE)

        st = self._endpoint_state(endpoint)
        st.calls += 1
        if not self._admit(st):
            st.short_circuited += 1
            _log.warning(
                "partner_circuit_open_short_circuit",
                endpoint=endpoint,
                request_id=request.request_id,
            )
            return _all(wanted, ItemStatus.UNAVAILABLE)

        try:
            result, outcome = await self._call(endpoint, st, request, wanted)
        except asyncio.CancelledError:
            # The caller gave up: not the provider's fault, but free the half-open probe slot.
            st.probe_in_flight = False
            raise
        except Exception as exc:  # noqa: BLE001 - the adapter contract: never raise for a call
            _log.error(
                "partner_fetch_error",
                endpoint=endpoint,
                request_id=request.request_id,
                error_type=type(exc).__name__,
            )
            result, outcome = _all(wanted, ItemStatus.UNAVAILABLE), _Outcome.FAILED
        self._record(endpoint, st, outcome)
        return result

    async def _call(
        self,
        endpoint: str,
        st: _EndpointState,
        request: FetchRequest,
        wanted: list[FetchItem],
    ) -> tuple[list[FetchedItem], _Outcome]:
        body = _request_body(request, wanted)
        deadline = self._clock() + self._timeout
        url = endpoint + FETCH_PATH
        attempt = 0
        while True:
            attempt += 1
            st.attempts += 1
            remaining = deadline - self._clock()
            try:
                async with asyncio.timeout(max(remaining, 0.0)):
                    wire = await self._attempt(url, request, body)
            except TimeoutError:
                _log.warning(
                    "partner_fetch_timeout",
                    endpoint=endpoint,
                    request_id=request.request_id,
                    attempt=attempt,
                    timeout_s=self._timeout,
                )
                return _all(wanted, ItemStatus.TIMEOUT), _Outcome.TIMEOUT
            except _FatalError as exc:
                _log.warning(
                    "partner_fetch_failed",
                    endpoint=endpoint,
                    request_id=request.request_id,
                    attempt=attempt,
                    reason=exc.reason,
                    http_status=exc.http_status,
                    retryable=False,
                )
                return _all(wanted, ItemStatus.UNAVAILABLE), _Outcome.FAILED
            except _RetryableError as exc:
                delay = self._backoff(attempt)
                give_up = attempt > self._retries or self._clock() + delay >= deadline
                _log.warning(
                    "partner_fetch_failed",
                    endpoint=endpoint,
                    request_id=request.request_id,
                    attempt=attempt,
                    reason=exc.reason,
                    http_status=exc.http_status,
                    retryable=not give_up,
                )
                if give_up:
                    return _all(wanted, ItemStatus.UNAVAILABLE), _Outcome.FAILED
                st.retries += 1
                await asyncio.sleep(delay)
                continue
            items, dropped = _map_response(wire, wanted)
            if dropped:
                st.dropped_unrequested += len(dropped)
                _log.warning(
                    "partner_unrequested_items_dropped",
                    endpoint=endpoint,
                    request_id=request.request_id,
                    count=len(dropped),
                    elements=sorted(set(dropped)),
                )
            return items, _Outcome.OK

    async def _attempt(
        self, url: str, request: FetchRequest, body: dict[str, Any]
    ) -> _WireResponse:
        """One HTTP attempt: returns the validated response or raises _RetryableError/_FatalError.

        Time-outs propagate as ``TimeoutError`` (the caller's deadline)."""
        session = self._get_session()
        try:
            async with session.post(
                url,
                json=body,
                headers={"X-Request-ID": request.request_id, "Accept": "application/json"},
                allow_redirects=False,
            ) as resp:
                if resp.status >= 500 or resp.status == 429:
                    raise _RetryableError("http_status", resp.status)
                if resp.status != 200:
                    raise _FatalError("http_status", resp.status)
                raw = await self._read_limited(resp)
        except aiohttp.ClientPayloadError as exc:
            raise _RetryableError("payload_error") from exc
        except aiohttp.ClientConnectionError as exc:
            if isinstance(exc, TimeoutError):  # aiohttp's own time-outs subclass both
                raise
            raise _RetryableError("connection_error") from exc
        except aiohttp.ClientResponseError as exc:
            raise _FatalError("bad_response", exc.status) from exc
        except aiohttp.ClientError as exc:
            raise _FatalError("client_error") from exc
        try:
            wire = _WireResponse.model_validate_json(raw)
        except ValidationError as exc:
            raise _FatalError("malformed_body") from exc
        _check_shape(wire, request.response_form)
        return wire

    async def _read_limited(self, resp: aiohttp.ClientResponse) -> bytes:
        if resp.content_length is not None and resp.content_length > self._max_body_bytes:
            raise _FatalError("body_too_large", resp.status)
        chunks: list[bytes] = []
        size = 0
        async for chunk in resp.content.iter_chunked(64 * 1024):
            size += len(chunk)
            if size > self._max_body_bytes:
                raise _FatalError("body_too_large", resp.status)
            chunks.append(chunk)
        return b"".join(chunks)

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with jitter: base * 2^(attempt-1), scaled by [0.5, 1.0)."""
        ceiling = min(self._backoff_max, self._backoff_base * (2.0 ** (attempt - 1)))
        return ceiling * (0.5 + self._rng.random() / 2)


# ---------------------------------------------------------------------- helpers


def _unique_items(items: tuple[FetchItem, ...]) -> list[FetchItem]:
    seen: set[_Key] = set()
    out: list[FetchItem] = []
    for item in items:
        key = (item.element, item.bsn)
        if key not in seen:
            seen.add(key)
            out.append(item)
    return out


def _all(items: list[FetchItem], status: ItemStatus) -> list[FetchedItem]:
    return [FetchedItem(element=i.element, bsn=i.bsn, status=status) for i in items]


def _request_body(request: FetchRequest, items: list[FetchItem]) -> dict[str, Any]:
    return {
        "exchange_id": request.exchange_id,
        "request_id": request.request_id,
        "agreement_id": request.agreement_id,
        "purpose_id": request.purpose_id,
        "recipient_party": request.recipient_party,
        "response_form": request.response_form.value,
        "items": [
            {"element": i.element, "subject": {"bsn": i.bsn, "kind": i.subject_kind.value}}
            for i in items
        ],
    }


def _check_shape(wire: _WireResponse, form: ResponseForm) -> None:
    """Reject duplicate answers and, for boolean_only, any non-boolean value."""
    seen: set[_Key] = set()
    for item in wire.items:
        key = (item.element, item.bsn)
        if key in seen:
            raise _FatalError("duplicate_item")
        seen.add(key)
        if (
            form is ResponseForm.BOOLEAN_ONLY
            and item.status == "ok"
            and not isinstance(item.value, bool)
        ):
            raise _FatalError("non_boolean_value")


def _map_response(
    wire: _WireResponse, wanted: list[FetchItem]
) -> tuple[list[FetchedItem], list[str]]:
    """One FetchedItem per requested item; returns also the elements of unrequested answers."""
    requested = {(i.element, i.bsn) for i in wanted}
    answers: dict[_Key, _WireItem] = {}
    dropped: list[str] = []
    for item in wire.items:
        key = (item.element, item.bsn)
        if key in requested:
            answers[key] = item
        else:
            dropped.append(item.element)
    out: list[FetchedItem] = []
    for want in wanted:
        answer = answers.get((want.element, want.bsn))
        if answer is None:
            out.append(FetchedItem(want.element, want.bsn, ItemStatus.UNAVAILABLE))
        elif answer.status == "ok":
            out.append(
                FetchedItem(
                    want.element, want.bsn, ItemStatus.RELEASED, answer.value, answer.source
                )
            )
        else:
            out.append(
                FetchedItem(want.element, want.bsn, ItemStatus.NOT_FOUND, None, answer.source)
            )
    return out, dropped
