"""A broker whose clock the test sets, with a privacy officer and one agency of a
party outside the MDA++ agreement; plus small helpers for calls with a token."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import AGENCIES, Harness, broker_settings, register_partners, serve_broker

PRIVACY_OFFICER = "zorg_en_veiligheidshuis"
# A party that is not in agr-zvh-mdaplusplus (no signatory of any agreement).
OUTSIDER = ("ziekenhuis", "00000003812345720000")
START = datetime.fromisoformat("2026-06-20T10:00:00+02:00")


class Clock:
    def __init__(self, now: datetime = START) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@dataclass
class Timed:
    harness: Harness
    clock: Clock

    async def call(
        self, party: str, method: str, path: str, body: dict[str, Any] | None = None
    ) -> httpx.Response:
        client = self.harness.client(party)
        try:
            token = await client.token()
            return await client.http.request(
                method,
                self.harness.broker.base_url + path,
                json=body,
                headers={"Authorization": f"Bearer {token}"},
            )
        finally:
            await client.aclose()

    async def exchange_response(self, party: str, request: dict[str, Any]) -> httpx.Response:
        client = self.harness.client(party)
        try:
            return await client.exchange(request)
        finally:
            await client.aclose()

    async def exchange(self, party: str, request: dict[str, Any]) -> dict[str, Any]:
        response = await self.exchange_response(party, request)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body


@pytest.fixture
async def timed(
    database_url: str, simulators: dict[str, Any], tmp_path: Path
) -> AsyncIterator[Timed]:
    clock = Clock()
    settings = broker_settings(
        database_url, simulators, tmp_path, privacy_officers=AGENCIES[PRIVACY_OFFICER]
    )
    partners = await register_partners(settings, simulators)
    partners.update(
        await register_partners(settings, simulators, {OUTSIDER[0]: OUTSIDER[1]}, sign=False)
    )
    async with serve_broker(settings, clock) as broker:
        yield Timed(Harness(broker, partners), clock)
