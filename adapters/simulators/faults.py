"""Fault injection and the loopback-only admin endpoints shared by all simulators.

Admin API (only from 127.0.0.1 / ::1; everything else gets 403):

- ``GET /_sim/faults``     the current fault configuration
- ``POST /_sim/faults``    replace it: ``{"latency_ms": int, "fail_rate": float, "status": int,
  "drop_connection": bool, "malformed": bool, "extra_item": bool, "omit_item": bool,
  "non_boolean": bool}`` (every field optional; ``{}`` clears all faults)
- ``DELETE /_sim/faults``  clear all faults
- ``GET /_sim/stats``      ``{"requests": n, "faults_injected": n, "last_traceparent": str|null}``
  for the data endpoint (``last_traceparent``: the W3C header of the latest data request)
- ``DELETE /_sim/stats``   reset those counters

``latency_ms`` delays every data request. A request *fails* with probability ``fail_rate``
(default 1.0 when ``status``, ``drop_connection`` or ``malformed`` is set, else 0.0); a failing
request has its connection dropped (``drop_connection``), gets a 200 with a truncated JSON body
(``malformed``) or gets ``status`` (default 500). ``extra_item`` adds an item that was not
requested, ``omit_item`` leaves out the last requested item and ``non_boolean`` answers
``boolean_only`` requests with strings (partner simulator only). ``invalid_resource`` (FHIR
simulator only) makes every served resource of that type (``"*"``: any type) fail validation.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
from dataclasses import dataclass

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

__all__ = ["FAULTS_KEY", "FaultConfig", "FaultInjector", "add_admin_routes"]


class FaultConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    latency_ms: int = Field(default=0, ge=0, le=600_000)
    fail_rate: float | None = Field(default=None, ge=0.0, le=1.0)
    status: int | None = Field(default=None, ge=100, le=599)
    drop_connection: bool = False
    malformed: bool = False
    extra_item: bool = False
    omit_item: bool = False
    non_boolean: bool = False
    # FHIR simulator only: resources of this type ("*" = every type) fail FHIR validation.
    invalid_resource: str | None = Field(default=None, max_length=64)

    @property
    def effective_fail_rate(self) -> float:
        if self.fail_rate is not None:
            return self.fail_rate
        has_mode = self.drop_connection or self.malformed or self.status is not None
        return 1.0 if has_mode else 0.0


@dataclass(slots=True)
class FaultInjector:
    config: FaultConfig
    rng: random.Random
    requests: int = 0
    faults_injected: int = 0
    last_traceparent: str | None = None

    @classmethod
    def create(cls, config: FaultConfig | None = None, seed: int = 0) -> FaultInjector:
        return cls(config or FaultConfig(), random.Random(seed))  # noqa: S311 - simulation

    async def before(self, request: web.Request) -> web.StreamResponse | None:
        """Count the request, apply latency and maybe a failure (returned as the response)."""
        self.requests += 1
        self.last_traceparent = request.headers.get("traceparent")
        cfg = self.config
        if cfg.latency_ms:
            await asyncio.sleep(cfg.latency_ms / 1000)
        rate = cfg.effective_fail_rate
        if rate <= 0 or (rate < 1 and self.rng.random() >= rate):
            return None
        self.faults_injected += 1
        if cfg.drop_connection:
            if request.transport is not None:
                request.transport.abort()
            raise web.HTTPServiceUnavailable  # never written: the connection is gone
        if cfg.malformed:
            return web.Response(
                status=200, body=b'{"items": [{"element": "x", ', content_type="application/json"
            )
        status = cfg.status or 500
        return web.json_response({"title": "Simulated failure", "status": status}, status=status)


FAULTS_KEY = web.AppKey("faults", FaultInjector)


def _loopback_only(request: web.Request) -> None:
    remote = request.remote or ""
    try:
        ok = ipaddress.ip_address(remote).is_loopback
    except ValueError:
        ok = False
    if not ok:
        raise web.HTTPForbidden(text="admin endpoints are loopback-only")


def add_admin_routes(app: web.Application, injector: FaultInjector) -> None:
    async def get_faults(request: web.Request) -> web.Response:
        _loopback_only(request)
        return web.json_response(injector.config.model_dump())

    async def set_faults(request: web.Request) -> web.Response:
        _loopback_only(request)
        try:
            injector.config = FaultConfig.model_validate_json(await request.read() or b"{}")
        except ValidationError as exc:
            return web.json_response(
                {"title": "invalid fault configuration", "errors": exc.errors(include_url=False)},
                status=400,
            )
        return web.json_response(injector.config.model_dump())

    async def clear_faults(request: web.Request) -> web.Response:
        _loopback_only(request)
        injector.config = FaultConfig()
        return web.json_response(injector.config.model_dump())

    async def get_stats(request: web.Request) -> web.Response:
        _loopback_only(request)
        return web.json_response(
            {
                "requests": injector.requests,
                "faults_injected": injector.faults_injected,
                "last_traceparent": injector.last_traceparent,
            }
        )

    async def reset_stats(request: web.Request) -> web.Response:
        _loopback_only(request)
        injector.requests = injector.faults_injected = 0
        injector.last_traceparent = None
        return web.json_response({"requests": 0, "faults_injected": 0, "last_traceparent": None})

    app.router.add_get("/_sim/faults", get_faults)
    app.router.add_post("/_sim/faults", set_faults)
    app.router.add_delete("/_sim/faults", clear_faults)
    app.router.add_get("/_sim/stats", get_stats)
    app.router.add_delete("/_sim/stats", reset_stats)
