"""ASGI middleware: request ids and trace ids in every log line, the request's server
span and HTTP metrics, and a hard body-size limit."""

from __future__ import annotations

import json
import re
import secrets
import time
import uuid
from collections.abc import Mapping
from typing import Any

import structlog
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from broker.core.telemetry import HTTP_SECONDS, new_trace_id, tracer
from broker.problems import PROBLEM_JSON, TYPE_BASE

_RID = re.compile(r"^[A-Za-z0-9._\-]{8,64}$")
# Scrapes and probes: no server span (they would drown the traces), still measured.
_UNTRACED = ("/metrics", "/health")
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class RequestContext:
    """Sets ``request.state.request_id`` (from a sane X-Request-ID or new) and
    binds it to structlog's context; echoes it in the response.

    Also the request's trace: a server span, child of the caller's W3C
    ``traceparent`` when one is sent, whose trace id is bound to the log context
    and echoed as ``X-Trace-Id``. With tracing off (no tracer provider) the
    caller's trace id is kept, or a fresh one is made, so every request and its
    audit entries have one. Each request's duration goes into the HTTP histogram
    by method, route template and status."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = _header(scope, b"x-request-id")
        rid = given if given and _RID.match(given) else str(uuid.uuid4())
        scope.setdefault("state", {})["request_id"] = rid
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=rid)
        method = scope["method"] if scope["method"] in _METHODS else "OTHER"
        started = time.perf_counter()
        status = 500
        parent = propagate.extract(_trace_carrier(scope))
        traced = not scope["path"].startswith(_UNTRACED)
        span = tracer.start_span(method, context=parent, kind=SpanKind.SERVER) if traced else None
        span_context = span.get_span_context() if span is not None else None
        if span is not None and span_context is not None and span_context.is_valid:
            current: trace.Span = span
        else:
            # Tracing off and no caller's trace: one of our own, sampled out.
            span_context = SpanContext(new_trace_id(), _new_span_id(), is_remote=False)
            current = NonRecordingSpan(span_context)
        token = otel_context.attach(trace.set_span_in_context(current, parent))
        trace_id = format(span_context.trace_id, "032x")
        structlog.contextvars.bind_contextvars(trace_id=trace_id)

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = message.setdefault("headers", [])
                headers.append((b"x-request-id", rid.encode()))
                headers.append((b"x-trace-id", trace_id.encode()))
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            otel_context.detach(token)
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            HTTP_SECONDS.labels(method, route, str(status)).observe(time.perf_counter() - started)
            if span is not None:
                span.update_name(f"{method} {route}")
                span.set_attribute("http.request.method", method)
                span.set_attribute("http.route", route)
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(Status(StatusCode.ERROR))
                span.end()


class BodyLimit:
    """Refuses bodies larger than ``max_bytes`` (or the limit ``routes`` gives the
    request's method and path) with 413 problem+json, before and while they stream in."""

    def __init__(
        self, app: ASGIApp, max_bytes: int, routes: Mapping[tuple[str, str], int] | None = None
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.routes = dict(routes or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        max_bytes = self.routes.get((scope["method"], scope["path"]), self.max_bytes)
        length = _header(scope, b"content-length")
        if length is not None and (not length.isdigit() or int(length) > max_bytes):
            await _too_large(scope, send, max_bytes)
            return
        received = 0
        too_large = False

        async def limited() -> Message:
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_bytes:
                    too_large = True
                    raise _BodyTooLargeError
            return message

        try:
            await self.app(scope, limited, send)
        except _BodyTooLargeError:
            await _too_large(scope, send, max_bytes)


class _BodyTooLargeError(Exception):
    pass


def _trace_carrier(scope: Scope) -> dict[str, str]:
    carrier: dict[str, str] = {}
    for name in (b"traceparent", b"tracestate"):
        value = _header(scope, name)
        if value is not None:
            carrier[name.decode()] = value
    return carrier


def _new_span_id() -> int:
    while True:
        value = secrets.randbits(64)
        if value:
            return value


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            try:
                return str(value.decode("latin-1"))
            except UnicodeDecodeError:
                return None
    return None


async def _too_large(scope: Scope, send: Send, max_bytes: int) -> None:
    rid = scope.get("state", {}).get("request_id")
    body: dict[str, Any] = {
        "type": TYPE_BASE + "payload_too_large",
        "title": "The request body is too large",
        "status": 413,
        "detail": f"Request bodies are limited to {max_bytes} bytes",
        "code": "payload_too_large",
        "request_id": rid,
    }
    data = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", PROBLEM_JSON.encode()),
                (b"content-length", str(len(data)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})
