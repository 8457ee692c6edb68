"""Telemetry instruments shared by every layer: the Prometheus metrics and the
OpenTelemetry tracer.

The metrics live in ``prometheus_client``'s default registry (or, with
``PROMETHEUS_MULTIPROC_DIR`` set, in its per-process files) and are exposed by
``GET /metrics`` (broker/operations/metrics.py). Labels are bounded sets only:
engine names, adapter kinds and endpoint hosts, agreement and purpose ids the
policy set knows, route templates. Never subjects, BSNs, payloads or raw paths.

The tracer is the OpenTelemetry API's: a no-op until a tracer provider is
installed (broker/operations/tracing.py, from the ``OTEL_*`` environment). Even
then every request has a W3C trace id (broker/middleware.py), which the audit
entries of an exchange carry as ``trace_id``.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry import trace
from prometheus_client import Counter, Gauge, Histogram

__all__ = [
    "ADAPTER_CIRCUIT",
    "ADAPTER_SECONDS",
    "AUDIT_APPEND_SECONDS",
    "DECISION_SECONDS",
    "EXCHANGES",
    "HTTP_SECONDS",
    "current_trace_id",
    "decision_span",
    "new_trace_id",
    "tracer",
]

tracer = trace.get_tracer("chain-broker")

_FAST = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_REMOTE = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

EXCHANGES = Counter(
    "broker_exchanges",
    "Exchanges by outcome: completed, partial, denied_all, failed.",
    ["outcome", "agreement", "purpose"],
)
DECISION_SECONDS = Histogram(
    "broker_policy_decision_seconds",
    "Time the policy engine took to decide one request (all its items).",
    ["engine"],
    buckets=_FAST,
)
ADAPTER_SECONDS = Histogram(
    "broker_adapter_call_seconds",
    "Time of one adapter call to a provider or the register, retries included.",
    ["kind", "endpoint"],
    buckets=_REMOTE,
)
ADAPTER_CIRCUIT = Gauge(
    "broker_adapter_circuit_state",
    "Circuit breaker state per adapter endpoint: 0 closed, 1 half-open, 2 open.",
    ["kind", "endpoint"],
    multiprocess_mode="livemax",
)
AUDIT_APPEND_SECONDS = Histogram(
    "broker_audit_append_seconds",
    "Time from handing audit entries to the writer until their commit is durable.",
    buckets=_FAST,
)
HTTP_SECONDS = Histogram(
    "broker_http_request_duration_seconds",
    "HTTP requests by method, route template and status code.",
    ["method", "route", "status"],
    buckets=_REMOTE,
)


def new_trace_id() -> int:
    """A random, valid (non-zero) 128-bit W3C trace id."""
    while True:
        value = secrets.randbits(128)
        if value:
            return value


def current_trace_id() -> str:
    """The W3C trace id (32 hex digits) of the active span; a fresh one when no
    trace is active, so every audited exchange names one."""
    context = trace.get_current_span().get_span_context()
    value = context.trace_id if context.is_valid else new_trace_id()
    return format(value, "032x")


_decision_children: dict[str, Histogram] = {}


@contextmanager
def decision_span(engine: str) -> Iterator[None]:
    """A ``policy.decide`` span, and the decision's latency in the histogram of ``engine``."""
    child = _decision_children.get(engine)
    if child is None:
        child = _decision_children[engine] = DECISION_SECONDS.labels(engine)
    started = time.perf_counter()
    with tracer.start_as_current_span("policy.decide", attributes={"policy.engine": engine}):
        yield
    child.observe(time.perf_counter() - started)
