"""Shared HTTP client pieces of the broker's outgoing adapters: a pooled ``aiohttp`` session
factory, a per-endpoint circuit breaker with counters, exponential backoff with jitter, the
retryable/fatal error split and a size-limited body reader.

Used by :mod:`adapters.partner_api`, :mod:`adapters.healthcare` and :mod:`adapters.brp`.

TLS: every session :func:`new_session` makes uses one process-wide client
:class:`ssl.SSLContext` (:func:`client_tls_context` builds it from the broker's client
certificate and key and the CA bundle that verifies providers; :func:`use_client_tls`
installs it, once, at start-up), so every adapter presents the same certificate (mTLS)
and trusts the same CAs. Without one installed, sessions use Python's default verifying
context. Per endpoint it also keeps latency percentiles over a bounded window of
recent calls (:class:`LatencyWindow`) and feeds the Prometheus adapter latency histogram and
circuit state gauge (:mod:`broker.core.telemetry`). :func:`client_span` and
:func:`trace_headers` give outgoing calls their span and W3C ``traceparent`` header. Nothing
personal is ever logged or put on a span here: only endpoints, reasons and counts.
"""

from __future__ import annotations

import math
import random
import ssl
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import structlog
from opentelemetry import propagate
from opentelemetry.trace import Span, SpanKind
from prometheus_client import Gauge, Histogram

from broker.core.telemetry import ADAPTER_CIRCUIT, ADAPTER_SECONDS, tracer

__all__ = [
    "BreakerState",
    "CircuitBreakers",
    "EndpointState",
    "FatalError",
    "LatencyWindow",
    "Outcome",
    "RetryableError",
    "TlsConfigError",
    "backoff_delay",
    "client_span",
    "client_tls",
    "client_tls_context",
    "endpoint_host",
    "new_session",
    "read_limited",
    "trace_headers",
    "use_client_tls",
]

_log = structlog.get_logger(__name__)


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


# The value of the circuit state gauge per state.
_CIRCUIT_VALUE = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}


def endpoint_host(url: str) -> str:
    """``host[:port]`` of an endpoint URL (no user info, path or query): the metrics label."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "invalid"
    host = parts.hostname or "invalid"
    return f"{host}:{port}" if port else host


def trace_headers(headers: dict[str, str]) -> dict[str, str]:
    """``headers`` with the W3C ``traceparent`` (and ``tracestate``) of the active span added."""
    propagate.inject(headers)
    return headers


@contextmanager
def client_span(name: str, kind: str, endpoint: str) -> Iterator[Span]:
    """A client span for one outgoing call; attributes name the adapter kind and the endpoint's
    host only (never a path or query: those may hold BSNs)."""
    with tracer.start_as_current_span(
        name,
        kind=SpanKind.CLIENT,
        attributes={"broker.adapter.kind": kind, "server.address": endpoint_host(endpoint)},
    ) as span:
        yield span


class Outcome(StrEnum):
    """How one adapter call to an endpoint ended (drives the breaker and the stats)."""

    OK = "ok"
    FAILED = "failed"
    TIMEOUT = "timeout"


class LatencyWindow:
    """Latencies of the last ``size`` calls in a fixed ring buffer, with nearest-rank
    percentiles in milliseconds (``None`` while empty)."""

    __slots__ = ("_buf", "_count", "_next", "_size")

    def __init__(self, size: int = 1000) -> None:
        if size < 1:
            raise ValueError("size must be at least 1")
        self._size = size
        self._buf: list[float] = [0.0] * size
        self._next = 0
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def add(self, seconds: float) -> None:
        self._buf[self._next] = max(0.0, seconds)
        self._next = (self._next + 1) % self._size
        self._count = min(self._count + 1, self._size)

    def percentiles(self, *qs: float) -> list[float | None]:
        """Nearest-rank percentiles (``q`` in (0, 100]) of the window, in milliseconds."""
        if self._count == 0:
            return [None for _ in qs]
        ordered = sorted(self._buf[: self._count])
        out: list[float | None] = []
        for q in qs:
            if not 0 < q <= 100:
                raise ValueError("percentile must be in (0, 100]")
            rank = max(1, math.ceil(q / 100 * len(ordered)))
            out.append(round(ordered[rank - 1] * 1000, 3))
        return out


@dataclass(slots=True)
class EndpointState:
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
    latency: LatencyWindow = field(default_factory=LatencyWindow)
    # Prometheus children of this endpoint (looked up once: observations stay cheap).
    latency_metric: Histogram | None = field(default=None, repr=False, compare=False)
    circuit_metric: Gauge | None = field(default=None, repr=False, compare=False)

    @classmethod
    def metered(cls, kind: str, endpoint: str, *, circuit: bool = True) -> EndpointState:
        """A state whose calls feed the adapter latency histogram (and, with ``circuit``, the
        circuit state gauge) of ``kind`` and the endpoint's host."""
        host = endpoint_host(endpoint)
        st = cls(
            latency_metric=ADAPTER_SECONDS.labels(kind, host),
            circuit_metric=ADAPTER_CIRCUIT.labels(kind, host) if circuit else None,
        )
        if st.circuit_metric is not None:
            st.circuit_metric.set(_CIRCUIT_VALUE[st.state])
        return st

    def observe(self, seconds: float) -> None:
        """One finished call's time: into the latency window and the histogram."""
        self.latency.add(seconds)
        if self.latency_metric is not None:
            self.latency_metric.observe(max(0.0, seconds))

    def snapshot(self) -> dict[str, Any]:
        p50, p95, p99 = self.latency.percentiles(50, 95, 99)
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
            "p50_ms": p50,
            "p95_ms": p95,
            "p99_ms": p99,
        }


class RetryableError(Exception):
    """An attempt failed in a way that another attempt may fix (connection error, 5xx, 429)."""

    def __init__(self, reason: str, http_status: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.http_status = http_status


class FatalError(Exception):
    """An attempt failed in a way that retrying will not fix (4xx, malformed body)."""

    def __init__(self, reason: str, http_status: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.http_status = http_status


class CircuitBreakers:
    """One breaker per endpoint: opens after ``threshold`` consecutive failed calls, lets one
    probe through after ``cooldown`` seconds (half-open) and closes when it succeeds."""

    def __init__(
        self,
        *,
        threshold: int,
        cooldown: float,
        clock: Callable[[], float],
        log_prefix: str,
        kind: str | None = None,
    ) -> None:
        if threshold < 1:
            raise ValueError("breaker_threshold must be at least 1")
        self._threshold = threshold
        self._cooldown = cooldown
        self._clock = clock
        self._prefix = log_prefix
        self._kind = kind or log_prefix
        self._endpoints: dict[str, EndpointState] = {}

    def state(self, endpoint: str) -> EndpointState:
        st = self._endpoints.get(endpoint)
        if st is None:
            st = self._endpoints[endpoint] = EndpointState.metered(self._kind, endpoint)
        return st

    @staticmethod
    def _move(st: EndpointState, state: BreakerState) -> None:
        st.state = state
        if st.circuit_metric is not None:
            st.circuit_metric.set(_CIRCUIT_VALUE[state])

    def admit(self, st: EndpointState) -> bool:
        """May a call go through? Moves OPEN to HALF_OPEN after the cool-down."""
        if st.state is BreakerState.OPEN:
            if self._clock() - st.opened_at < self._cooldown:
                return False
            self._move(st, BreakerState.HALF_OPEN)
        if st.state is BreakerState.HALF_OPEN:
            if st.probe_in_flight:
                return False
            st.probe_in_flight = True
        return True

    def record(
        self,
        endpoint: str,
        st: EndpointState,
        outcome: Outcome,
        elapsed: float | None = None,
    ) -> None:
        """Counts a finished call (``elapsed`` seconds, if given, goes into the latency
        window) and moves the breaker."""
        st.probe_in_flight = False
        if elapsed is not None:
            st.observe(elapsed)
        if outcome is Outcome.OK:
            st.successes += 1
            if st.state is not BreakerState.CLOSED:
                _log.info(f"{self._prefix}_circuit_closed", endpoint=endpoint)
                self._move(st, BreakerState.CLOSED)
            st.consecutive_failures = 0
            return
        if outcome is Outcome.TIMEOUT:
            st.timeouts += 1
        else:
            st.failures += 1
        st.consecutive_failures += 1
        if st.state is BreakerState.HALF_OPEN or (
            st.state is BreakerState.CLOSED and st.consecutive_failures >= self._threshold
        ):
            self._move(st, BreakerState.OPEN)
            st.opened_at = self._clock()
            _log.warning(
                f"{self._prefix}_circuit_opened",
                endpoint=endpoint,
                consecutive_failures=st.consecutive_failures,
            )

    def health(self) -> dict[str, dict[str, Any]]:
        now = self._clock()
        out: dict[str, dict[str, Any]] = {}
        for endpoint, st in self._endpoints.items():
            snap = st.snapshot()
            if st.state is BreakerState.OPEN:
                snap["retry_in_s"] = max(0.0, round(st.opened_at + self._cooldown - now, 3))
            out[endpoint] = snap
        return out


def backoff_delay(attempt: int, base: float, ceiling: float, rng: random.Random) -> float:
    """Exponential backoff with jitter: base * 2^(attempt-1), capped, scaled by [0.5, 1.0)."""
    top = min(ceiling, base * (2.0 ** (attempt - 1)))
    return top * (0.5 + rng.random() / 2)


class TlsConfigError(ValueError):
    """The client certificate, key or CA bundle cannot be used (missing, unreadable, not
    matching). Raised at start-up: the broker refuses to start rather than talk without."""


def client_tls_context(
    *,
    cert: Path | None = None,
    key: Path | None = None,
    ca: Path | None = None,
    key_password: str | None = None,
) -> ssl.SSLContext:
    """The client side of mutual TLS to provider systems.

    ``cert`` (PEM, the broker's certificate and any intermediates; it may also hold the
    key) and ``key`` (PEM) are presented to servers that ask for a client certificate.
    ``ca`` (PEM bundle) replaces the system trust store for verifying providers' server
    certificates (e.g. the PKIoverheid private-services roots); without it the system
    store is used. Server certificates and host names are always verified; TLS 1.2 is
    the minimum."""
    if key is not None and cert is None:
        raise TlsConfigError("a client key needs a client certificate")
    try:
        context = ssl.create_default_context(
            ssl.Purpose.SERVER_AUTH, cafile=str(ca) if ca is not None else None
        )
    except (OSError, ssl.SSLError) as exc:
        raise TlsConfigError(f"cannot load the CA bundle {ca}: {exc.__class__.__name__}") from exc
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert is not None:
        try:
            context.load_cert_chain(
                str(cert), str(key) if key is not None else None, password=key_password
            )
        except (OSError, ssl.SSLError) as exc:
            # The exception text names files only, never key material.
            raise TlsConfigError(
                f"cannot load the client certificate {cert}: {exc.__class__.__name__}"
            ) from exc
    return context


class _InstalledTls:
    """Holds the process-wide client TLS context."""

    context: ssl.SSLContext | None = None


_INSTALLED = _InstalledTls()


def use_client_tls(context: ssl.SSLContext | None) -> None:
    """Install the process-wide client TLS context (``None``: Python's default). Sessions
    made afterwards use it; the broker calls this once while it wires its services."""
    _INSTALLED.context = context


def client_tls() -> ssl.SSLContext | None:
    """The installed client TLS context, if any."""
    return _INSTALLED.context


def new_session(
    *,
    max_connections: int,
    max_connections_per_host: int,
    headers: dict[str, str],
    ssl_context: ssl.SSLContext | None = None,
) -> aiohttp.ClientSession:
    """A pooled session. TLS uses ``ssl_context`` when given, else the installed client
    context (:func:`use_client_tls`), else Python's default verifying context."""
    context = ssl_context if ssl_context is not None else _INSTALLED.context
    connector = aiohttp.TCPConnector(
        limit=max_connections,
        limit_per_host=max_connections_per_host,
        ttl_dns_cache=300,
        ssl=context if context is not None else True,
    )
    return aiohttp.ClientSession(connector=connector, headers=headers, raise_for_status=False)


async def read_limited(resp: aiohttp.ClientResponse, max_bytes: int) -> bytes:
    """The body, or FatalError("body_too_large") once it exceeds ``max_bytes``."""
    if resp.content_length is not None and resp.content_length > max_bytes:
        raise FatalError("body_too_large", resp.status)
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > max_bytes:
            raise FatalError("body_too_large", resp.status)
        chunks.append(chunk)
    return b"".join(chunks)
