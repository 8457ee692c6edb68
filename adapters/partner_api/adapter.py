"""HTTP adapter for the broker's partner API (wire format: adapters/partner_api/README.md).

One :class:`PartnerApiAdapter` instance reaches any number of partner endpoints through ONE
shared, pooled ``aiohttp.ClientSession`` (created lazily on first use). Every call has a total
deadline, bounded retries with exponential backoff and jitter, and a circuit breaker per
endpoint (shared pieces in :mod:`adapters._http`). The adapter never raises for a provider
fault: faults become per-item ``unavailable``/``timeout`` statuses. Nothing personal (BSNs,
values) is ever logged.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from typing import Any, Literal

import aiohttp
import orjson
import structlog
from pydantic import BaseModel, ConfigDict, ValidationError

from adapters._http import (
    BreakerState,
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
from broker.core.types import ItemStatus, ResponseForm

__all__ = ["BreakerState", "PartnerApiAdapter"]

FETCH_PATH = "/broker/v1/fetch"
_log = structlog.get_logger(__name__)

_Key = tuple[str, str]  # (element, bsn)


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
        self._timeout = timeout
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
            log_prefix="partner",
            kind=self.kind,
        )
        self._session: aiohttp.ClientSession | None = None

    # ------------------------------------------------------------------ lifecycle

    def _get_session(self) -> aiohttp.ClientSession:
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

    async def __aenter__(self) -> PartnerApiAdapter:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    # ------------------------------------------------------------------ stats

    def health(self) -> dict[str, dict[str, Any]]:
        """Circuit state, call counters and latency percentiles per endpoint (no personal
        data)."""
        return self._breakers.health()

    # ------------------------------------------------------------------ fetch

    async def fetch(self, endpoint: str, request: FetchRequest) -> list[FetchedItem]:
        with client_span("adapter.fetch", self.kind, endpoint) as span:
            span.set_attribute("broker.items", len(request.items))
            return await self._fetch(endpoint, request)

    async def _fetch(self, endpoint: str, request: FetchRequest) -> list[FetchedItem]:
        wanted = _unique_items(request.items)
        if not wanted:
            return []
        endpoint = endpoint.rstrip("/")
        if not endpoint.startswith(("http://", "https://")):
            _log.error("partner_endpoint_invalid", request_id=request.request_id)
            return _all(wanted, ItemStatus.UNAVAILABLE)

        st = self._breakers.state(endpoint)
        st.calls += 1
        if not self._breakers.admit(st):
            st.short_circuited += 1
            _log.warning(
                "partner_circuit_open_short_circuit",
                endpoint=endpoint,
                request_id=request.request_id,
            )
            return _all(wanted, ItemStatus.UNAVAILABLE)

        started = self._clock()
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
            result, outcome = _all(wanted, ItemStatus.UNAVAILABLE), Outcome.FAILED
        self._breakers.record(endpoint, st, outcome, self._clock() - started)
        return result

    async def _call(
        self,
        endpoint: str,
        st: EndpointState,
        request: FetchRequest,
        wanted: list[FetchItem],
    ) -> tuple[list[FetchedItem], Outcome]:
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
                return _all(wanted, ItemStatus.TIMEOUT), Outcome.TIMEOUT
            except FatalError as exc:
                _log.warning(
                    "partner_fetch_failed",
                    endpoint=endpoint,
                    request_id=request.request_id,
                    attempt=attempt,
                    reason=exc.reason,
                    http_status=exc.http_status,
                    retryable=False,
                )
                return _all(wanted, ItemStatus.UNAVAILABLE), Outcome.FAILED
            except RetryableError as exc:
                delay = backoff_delay(attempt, self._backoff_base, self._backoff_max, self._rng)
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
                    return _all(wanted, ItemStatus.UNAVAILABLE), Outcome.FAILED
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
            return items, Outcome.OK

    async def _attempt(
        self, url: str, request: FetchRequest, body: dict[str, Any]
    ) -> _WireResponse:
        """One HTTP attempt: returns the validated response or raises RetryableError/FatalError.

        Time-outs propagate as ``TimeoutError`` (the caller's deadline)."""
        session = self._get_session()
        try:
            async with session.post(
                url,
                data=orjson.dumps(body),
                headers=trace_headers(
                    {
                        "X-Request-ID": request.request_id,
                        "Accept": "application/json",
                        "Content-Type": "application/json",
                    }
                ),
                allow_redirects=False,
            ) as resp:
                if resp.status >= 500 or resp.status == 429:
                    raise RetryableError("http_status", resp.status)
                if resp.status != 200:
                    raise FatalError("http_status", resp.status)
                raw = await read_limited(resp, self._max_body_bytes)
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
        try:
            wire = _WireResponse.model_validate_json(raw)
        except ValidationError as exc:
            raise FatalError("malformed_body") from exc
        _check_shape(wire, request.response_form)
        return wire


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
            raise FatalError("duplicate_item")
        seen.add(key)
        if (
            form is ResponseForm.BOOLEAN_ONLY
            and item.status == "ok"
            and not isinstance(item.value, bool)
        ):
            raise FatalError("non_boolean_value")


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
