"""Exchange outcome classes, metric label hygiene and the OTEL_* switch for tracing."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from adapters._http import CircuitBreakers, Outcome, endpoint_host
from broker.core.telemetry import current_trace_id
from broker.core.types import ItemStatus
from broker.exchange.api import exchange_outcome
from broker.operations.tracing import requested_exporters

R, D, N, U, T = (
    ItemStatus.RELEASED,
    ItemStatus.DENIED,
    ItemStatus.NOT_FOUND,
    ItemStatus.UNAVAILABLE,
    ItemStatus.TIMEOUT,
)


@pytest.mark.parametrize(
    ("statuses", "outcome"),
    [
        ([R, R], "completed"),
        ([R, N], "completed"),
        ([D, D], "denied_all"),
        ([R, D], "partial"),
        ([R, U], "partial"),
        ([U, T, D], "failed"),
        ([T], "failed"),
    ],
)
def test_exchange_outcome(statuses: list[ItemStatus], outcome: str) -> None:
    assert exchange_outcome(statuses) == outcome


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("http://127.0.0.1:9101", "127.0.0.1:9101"),
        ("https://user:secret@politie.example/broker-api?bsn=999990007", "politie.example"),
        ("http://[::1]:80/x", "::1:80"),
        ("http://host:99999999", "invalid"),
    ],
)
def test_endpoint_label_is_the_host_only(url: str, host: str) -> None:
    assert endpoint_host(url) == host


def test_circuit_gauge_follows_the_breaker() -> None:
    now = [0.0]
    breakers = CircuitBreakers(
        threshold=2, cooldown=10.0, clock=lambda: now[0], log_prefix="t", kind="test_kind"
    )
    endpoint = "http://gauge.test:1"
    st = breakers.state(endpoint)

    def circuit() -> float | None:
        labels = {"kind": "test_kind", "endpoint": "gauge.test:1"}
        return REGISTRY.get_sample_value("broker_adapter_circuit_state", labels)

    assert circuit() == 0
    for _ in range(2):
        assert breakers.admit(st)
        breakers.record(endpoint, st, Outcome.FAILED, 0.01)
    assert circuit() == 2
    now[0] = 11.0
    assert breakers.admit(st)  # half-open probe
    assert circuit() == 1
    breakers.record(endpoint, st, Outcome.OK, 0.01)
    assert circuit() == 0


@pytest.mark.parametrize(
    ("env", "exporters"),
    [
        ({}, []),
        ({"OTEL_TRACES_EXPORTER": "none"}, []),
        ({"OTEL_TRACES_EXPORTER": "otlp, console"}, ["otlp", "console"]),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, ["otlp"]),
        ({"OTEL_TRACES_EXPORTER": "console", "OTEL_SDK_DISABLED": "true"}, []),
    ],
)
def test_tracing_is_off_unless_configured(env: dict[str, str], exporters: list[str]) -> None:
    assert requested_exporters(env) == exporters


def test_a_trace_id_without_a_trace() -> None:
    first, second = current_trace_id(), current_trace_id()
    assert len(first) == 32 and int(first, 16) != 0 and first != second
