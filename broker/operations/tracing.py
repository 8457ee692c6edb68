"""OpenTelemetry tracing, configured by the standard ``OTEL_*`` environment.

Off by default: without configuration the OpenTelemetry API stays a no-op (no
spans recorded, nothing exported), yet requests still carry a W3C trace id
(broker/middleware.py). Tracing is on when ``OTEL_TRACES_EXPORTER`` names an
exporter (``otlp``, ``console``; several comma-separated) or an OTLP endpoint is
set (``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``), and
``OTEL_SDK_DISABLED`` is not ``true``. The SDK itself reads the rest:
``OTEL_SERVICE_NAME`` (default ``chain-broker``), ``OTEL_RESOURCE_ATTRIBUTES``,
``OTEL_TRACES_SAMPLER[_ARG]``, ``OTEL_BSP_*`` and the exporter's
``OTEL_EXPORTER_OTLP_*`` settings. The OTLP exporter is an optional dependency
(``pip install 'chain-broker[otlp]'``; ``OTEL_EXPORTER_OTLP_TRACES_PROTOCOL``
``http/protobuf``, the default, or ``grpc``).

A tracer provider installed before the broker starts (by an agent, or a test's
in-memory exporter) is left as it is.
"""

from __future__ import annotations

import importlib
import inspect
import os
from typing import Any

import structlog
from fastapi import FastAPI
from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

log = structlog.get_logger("tracing")

DEFAULT_SERVICE_NAME = "chain-broker"
_OTLP = {
    "http/protobuf": "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "grpc": "opentelemetry.exporter.otlp.proto.grpc.trace_exporter",
}


def requested_exporters(env: dict[str, str] | None = None) -> list[str]:
    """The exporter names the environment asks for (empty: tracing off)."""
    env = dict(os.environ) if env is None else env
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    named = [n.strip().lower() for n in env.get("OTEL_TRACES_EXPORTER", "").split(",") if n.strip()]
    if not named and (
        env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    ):
        named = ["otlp"]
    return [n for n in named if n != "none"]


def _exporter(name: str, env: dict[str, str]) -> SpanExporter | None:
    if name == "console":
        return ConsoleSpanExporter()
    if name == "otlp":
        protocol = (
            env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
            or "http/protobuf"
        )
        module_name = _OTLP.get(protocol)
        if module_name is None:
            log.error("tracing.unknown_otlp_protocol", protocol=protocol)
            return None
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            log.exception(
                "tracing.otlp_exporter_not_installed", hint="pip install 'chain-broker[otlp]'"
            )
            return None
        exporter: SpanExporter = module.OTLPSpanExporter()
        return exporter
    log.error("tracing.unknown_exporter", exporter=name)
    return None


def framework_telemetry_off() -> dict[str, Any]:
    """``FastAPI(...)`` keyword arguments that switch off FastAPI's own OpenTelemetry
    instrumentation where the installed FastAPI has it: its spans record request paths and
    queries (which may hold personal data) and would duplicate the broker's server span."""
    if "telemetry" not in inspect.signature(FastAPI.__init__).parameters:
        return {}
    return {
        "telemetry": {"tracing": False, "metrics": False, "logs": False, "operation_spans": False}
    }


_installed: TracerProvider | None = None


def configure_tracing(env: dict[str, str] | None = None) -> TracerProvider | None:
    """Installs the SDK tracer provider the environment asks for (once per process);
    returns it, or None when tracing stays off or was set up elsewhere."""
    global _installed  # noqa: PLW0603 - one global tracer provider per process
    if _installed is not None:
        return _installed
    env = dict(os.environ) if env is None else env
    names = requested_exporters(env)
    if not names or isinstance(trace.get_tracer_provider(), TracerProvider):
        return None
    exporters = [e for e in (_exporter(n, env) for n in names) if e is not None]
    if not exporters:
        return None
    service = env.get("OTEL_SERVICE_NAME") or DEFAULT_SERVICE_NAME
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service}))
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    _installed = provider
    log.info("tracing.enabled", exporters=names, service=service)
    return provider
