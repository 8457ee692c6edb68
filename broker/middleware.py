"""ASGI middleware: request ids in every log line, and a hard body-size limit."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping
from typing import Any

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from broker.problems import PROBLEM_JSON, TYPE_BASE

_RID = re.compile(r"^[A-Za-z0-9._\-]{8,64}$")


class RequestContext:
    """Sets ``request.state.request_id`` (from a sane X-Request-ID or new) and
    binds it to structlog's context; echoes it in the response."""

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

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", []).append((b"x-request-id", rid.encode()))
            await send(message)

        await self.app(scope, receive, send_with_id)


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
