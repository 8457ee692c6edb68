"""Prometheus metrics and OpenTelemetry traces over loopback HTTP.

``GET /metrics`` exposes the named metrics and they move after an exchange; a
caller's W3C ``traceparent`` sets the trace id of the exchange's audit entries,
reaches the provider's and the register's simulators, and the spans the SDK
records (in-memory exporter) nest under the server span and carry no BSNs. A
broker with tracing off and two worker processes (``PROMETHEUS_MULTIPROC_DIR``)
keeps the caller's trace id too, and every worker's scrape adds up all workers.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, select, text

from adapters._http import endpoint_host
from audit.models import AuditEntry
from audit.verify import verify_chain
from broker.partner_kit import PartnerClient
from broker.settings import PROJECT_ROOT
from tests.conftest import Harness, broker_settings, clean, free_port, register_partners
from tests.instances import broker_env, spawn_broker, stop_broker
from tests.integration.test_exchange import SUSPECT_HISTORY
from tests.integration.test_multi_instance import shared_keys

BSN = "999990007"
AGREEMENT = str(SUSPECT_HISTORY["agreement_id"])
PURPOSE = str(SUSPECT_HISTORY["purpose_id"])
_Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> _Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: _Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def scrape(http: httpx.AsyncClient, base_url: str) -> tuple[str, _Samples]:
    response = await http.get(base_url + "/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return response.text, parse(response.text)


def traceparent() -> tuple[str, str, str]:
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{span_id}-01", trace_id, span_id


async def exchange(
    harness_or_url: Harness | str,
    partners: dict[str, dict[str, Any]] | None,
    request: dict[str, Any],
    headers: dict[str, str],
) -> httpx.Response:
    """An exchange by Veilig Thuis with extra request headers (a fresh connection)."""
    if isinstance(harness_or_url, Harness):
        client = harness_or_url.client("veilig_thuis")
    else:
        assert partners is not None
        p = partners["veilig_thuis"]
        client = PartnerClient(harness_or_url, p["oin"], {"keys": p["keys"]})
    try:
        token = await client.token()
        return await client.http.post(
            client.base_url.rstrip("/") + "/v1/exchanges",
            json=request,
            headers={"Authorization": f"Bearer {token}", **headers},
        )
    finally:
        await client.aclose()


async def sim_stats(http: httpx.AsyncClient, url: str) -> dict[str, Any]:
    response = await http.get(f"{url}/_sim/stats")
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


# ---------------------------------------------------------------------- metrics


async def test_metrics_move_after_an_exchange(harness: Harness, simulators: dict[str, Any]) -> None:
    base = harness.broker.base_url
    politie = endpoint_host(simulators["sources"]["politie"])
    brp = endpoint_host(simulators["brp"])
    engine = harness.broker.services.engine.name
    async with httpx.AsyncClient(timeout=10.0) as http:
        _, before = await scrape(http, base)
        first = await exchange(harness, None, SUSPECT_HISTORY, {})
        assert first.status_code == 200, first.text
        (await http.get(base + "/v1/audit/checkpoint")).raise_for_status()  # signs a checkpoint
        second = await exchange(harness, None, SUSPECT_HISTORY, {})
        assert second.status_code == 200, second.text
        unknown = dict(SUSPECT_HISTORY, agreement_id="agr-made-up-by-caller")
        made_up = await exchange(harness, None, unknown, {})
        # The provider fails: nothing allowed could be fetched.
        fault = simulators["sources"]["politie"] + "/_sim/faults"
        (await http.post(fault, json={"status": 503})).raise_for_status()
        try:
            failed = await exchange(harness, None, SUSPECT_HISTORY, {})
        finally:
            (await http.delete(fault)).raise_for_status()
        assert failed.status_code == 200, failed.text
        text, after = await scrape(http, base)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    # Two of three items released, one denied: a partial exchange, twice.
    partial = {"outcome": "partial", "agreement": AGREEMENT, "purpose": PURPOSE}
    assert delta("broker_exchanges_total", **partial) == 2
    # An agreement id the policy set does not know is denied, and is no label value.
    assert made_up.status_code == 200, made_up.text
    assert "agr-made-up-by-caller" not in text
    unknown_labels = {"outcome": "denied_all", "agreement": "unknown", "purpose": "unknown"}
    assert delta("broker_exchanges_total", **unknown_labels) == 1
    assert delta("broker_exchanges_total", **dict(partial, outcome="failed")) == 1
    assert delta("broker_policy_decision_seconds_count", engine=engine) >= 2
    assert delta("broker_adapter_call_seconds_count", kind="police", endpoint=politie) == 3
    assert delta("broker_adapter_call_seconds_count", kind="brp", endpoint=brp) >= 2
    assert value(after, "broker_adapter_circuit_state", kind="police", endpoint=politie) == 0
    assert delta("broker_audit_append_seconds_count") >= 2
    assert delta("broker_audit_append_seconds_sum") > 0
    route = {"method": "POST", "route": "/v1/exchanges", "status": "200"}
    assert delta("broker_http_request_duration_seconds_count", **route) == 4
    # The checkpoint covers the first exchange; the second's entries (and any after) lag.
    lag = value(after, "broker_audit_checkpoint_lag_entries")
    assert len(second.json()["audit_indices"]) <= lag
    assert 0 <= value(after, "broker_audit_checkpoint_lag_seconds") < 120
    assert value(after, "broker_inbox_pending_messages") >= 0
    assert ("broker_inbox_oldest_pending_seconds", frozenset()) in after
    assert BSN not in text and "VT-LB-2026-0042" not in text  # no subjects, no case references


# ---------------------------------------------------------------------- traces


@pytest.fixture(scope="module")
def spans() -> Iterator[InMemorySpanExporter]:
    """The SDK with an in-memory exporter as the process's tracer provider."""
    exporter = InMemorySpanExporter()
    processor = SimpleSpanProcessor(exporter)
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    provider.add_span_processor(processor)
    yield exporter
    processor.shutdown()  # later spans are no longer kept
    exporter.clear()


def of_trace(exporter: InMemorySpanExporter, trace_id: str) -> list[ReadableSpan]:
    return [
        s
        for s in exporter.get_finished_spans()
        if s.context is not None and format(s.context.trace_id, "032x") == trace_id
    ]


async def test_traceparent_reaches_audit_provider_and_spans(
    harness: Harness, simulators: dict[str, Any], spans: InMemorySpanExporter
) -> None:
    politie, brp = simulators["sources"]["politie"], simulators["brp"]
    header, trace_id, caller_span = traceparent()
    async with httpx.AsyncClient(timeout=10.0) as http:
        for url in (politie, brp):
            (await http.delete(f"{url}/_sim/stats")).raise_for_status()
        response = await exchange(harness, None, SUSPECT_HISTORY, {"traceparent": header})
        assert response.status_code == 200, response.text
        seen_by_politie = (await sim_stats(http, politie))["last_traceparent"]
        seen_by_brp = (await sim_stats(http, brp))["last_traceparent"]
    body = response.json()
    assert response.headers["x-trace-id"] == trace_id

    # Every audit entry of the exchange names the trace; the chain still verifies.
    db = harness.broker.services.db
    async with db.session() as session:
        entries = (
            await session.scalars(
                select(AuditEntry.entry).where(AuditEntry.exchange_id == body["exchange_id"])
            )
        ).all()
    assert len(entries) == len(body["audit_indices"])
    assert {json.loads(e)["trace_id"] for e in entries} == {trace_id}
    assert (await verify_chain(db)).size > max(body["audit_indices"])

    # The server span continues the caller's trace; the steps are its children.
    recorded = of_trace(spans, trace_id)
    server = next(s for s in recorded if s.kind is trace.SpanKind.SERVER)
    assert server.name == "POST /v1/exchanges"
    assert server.parent is not None and server.parent.is_remote
    assert format(server.parent.span_id, "016x") == caller_span
    assert server.attributes is not None
    assert server.attributes["http.response.status_code"] == 200
    assert server.context is not None
    by_name = {s.name: s for s in recorded}
    for name in ("policy.decide", "register.lookup", "adapter.fetch", "audit.append"):
        child = by_name[name]
        assert child.parent is not None, name
        assert child.parent.span_id == server.context.span_id, name
    assert by_name["adapter.fetch"].attributes == {
        "broker.adapter.kind": "police",
        "server.address": endpoint_host(politie),
        "broker.items": 2,
    }

    # The outgoing calls carried the trace, as children of their client spans.
    fetch_ctx = by_name["adapter.fetch"].context
    lookup_ctx = by_name["register.lookup"].context
    assert fetch_ctx is not None and lookup_ctx is not None
    assert seen_by_politie == f"00-{trace_id}-{format(fetch_ctx.span_id, '016x')}-01"
    assert seen_by_brp == f"00-{trace_id}-{format(lookup_ctx.span_id, '016x')}-01"

    # No BSNs (nor any other request value) on any span.
    for span in recorded:
        assert BSN not in span.name
        assert BSN not in json.dumps(dict(span.attributes or {}), default=str)
        assert "VT-LB-2026-0042" not in json.dumps(dict(span.attributes or {}), default=str)


async def test_requests_without_a_trace_get_one(harness: Harness) -> None:
    response = await exchange(harness, None, SUSPECT_HISTORY, {"traceparent": "not-a-trace"})
    assert response.status_code == 200, response.text
    trace_id = response.headers["x-trace-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", trace_id) and trace_id != "0" * 32
    async with harness.broker.services.db.session() as session:
        entries = (
            await session.scalars(
                select(AuditEntry.entry).where(
                    AuditEntry.exchange_id == response.json()["exchange_id"]
                )
            )
        ).all()
    assert {json.loads(e)["trace_id"] for e in entries} == {trace_id}


# ------------------------------------------------- tracing off, several workers


@pytest.fixture
async def workers(
    pg_url: str, simulators: dict[str, Any], tmp_path: Path
) -> AsyncIterator[tuple[str, dict[str, dict[str, Any]]]]:
    """``broker serve --workers 2`` with PROMETHEUS_MULTIPROC_DIR and no OTEL_* settings."""
    clean(pg_url)
    policies = tmp_path / "policies"
    shutil.copytree(PROJECT_ROOT / "policies", policies)
    keys = tmp_path / "keys"
    shared_keys(keys)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    settings = broker_settings(pg_url, simulators, tmp_path, policy_dir=policies, public_url=url)
    partners = await register_partners(settings, simulators)
    env = broker_env(
        database_url=pg_url,
        keys_dir=str(keys),
        policy_dir=str(policies),
        register_url=simulators["brp"],
        public_url=url,
        log_level="WARNING",
    )
    env = {k: v for k, v in env.items() if not k.startswith("OTEL_")}
    multiproc = tmp_path / "prometheus"
    multiproc.mkdir()
    (multiproc / "counter_1.db").write_bytes(b"stale")  # emptied by ``broker serve``
    env["PROMETHEUS_MULTIPROC_DIR"] = str(multiproc)
    proc: subprocess.Popen[bytes] = await asyncio.to_thread(
        spawn_broker, port, env, log=tmp_path / "broker.log", workers=2
    )
    try:
        yield url, partners
    finally:
        await asyncio.to_thread(stop_broker, proc)


@pytest.mark.postgres
async def test_workers_add_up_and_keep_the_callers_trace(
    workers: tuple[str, dict[str, dict[str, Any]]], simulators: dict[str, Any], pg_url: str
) -> None:
    url, partners = workers
    politie = simulators["sources"]["politie"]
    label = {"outcome": "partial", "agreement": AGREEMENT, "purpose": PURPOSE}
    async with httpx.AsyncClient(timeout=10.0) as http:
        _, before = await scrape(http, url)
        for _ in range(4):
            header, trace_id, _caller_span = traceparent()
            response = await exchange(url, partners, SUSPECT_HISTORY, {"traceparent": header})
            assert response.status_code == 200, response.text
            # Tracing is off: the caller's trace id is kept all the same.
            assert response.headers["x-trace-id"] == trace_id
            seen = (await sim_stats(http, politie))["last_traceparent"]
            assert seen is not None and seen.split("-")[1] == trace_id
        # No traceparent: the broker makes a trace id of its own and passes it on.
        response = await exchange(url, partners, SUSPECT_HISTORY, {})
        assert response.status_code == 200, response.text
        own = response.headers["x-trace-id"]
        assert re.fullmatch(r"[0-9a-f]{32}", own)
        seen = (await sim_stats(http, politie))["last_traceparent"]
        assert seen is not None and seen.split("-")[1] == own
        totals = []
        for _ in range(6):  # fresh connections: the scrapes reach either worker
            async with httpx.AsyncClient(timeout=10.0) as fresh:
                _, after = await scrape(fresh, url)
            totals.append(value(after, "broker_exchanges_total", **label))
    assert totals == [value(before, "broker_exchanges_total", **label) + 5] * 6

    engine = create_engine(pg_url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT entry FROM audit_entries WHERE kind = 'decision'"))
            ids = {json.loads(r[0])["trace_id"] for r in rows}
    finally:
        engine.dispose()
    assert len(ids) == 5 and own in ids
