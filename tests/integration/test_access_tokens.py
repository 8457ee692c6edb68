"""Access tokens are checked in full once and then remembered until they expire:
an expired token, a tampered token and a token of a disabled agency are still
refused (over loopback HTTP, on SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import jwt

from broker.agencies.service import AgencyService
from broker.db.session import Database
from broker.partner_kit import PartnerClient
from broker.reference import ReferenceData
from tests.conftest import broker_settings, register_partners, serve_broker

AGREEMENTS_PATH = "/v1/agreements"


async def test_remembered_tokens_still_expire_and_follow_the_agency(
    database_url: str, simulators: dict[str, Any], tmp_path: Path
) -> None:
    settings = broker_settings(database_url, simulators, tmp_path, access_token_ttl_seconds=5)
    partners = await register_partners(settings, simulators, sign=False)
    async with serve_broker(settings) as broker:
        vt = partners["veilig_thuis"]
        client = PartnerClient(broker.base_url, vt["oin"], {"keys": vt["keys"]})
        try:
            token = await client.token()
        finally:
            await client.aclose()
        async with httpx.AsyncClient(base_url=broker.base_url) as http:
            auth = {"Authorization": f"Bearer {token}"}
            for _ in range(3):  # first call verifies, the others reuse the result
                assert (await http.get(AGREEMENTS_PATH, headers=auth)).status_code == 200
            head, payload, signature = token.split(".")
            # Another first character changes the signature's first byte for certain (the
            # last characters partly encode padding bits a decoder may ignore).
            flipped = ("B" if signature[0] == "A" else "A") + signature[1:]
            forged = f"{head}.{payload}.{flipped}"
            r = await http.get(AGREEMENTS_PATH, headers={"Authorization": f"Bearer {forged}"})
            assert r.status_code == 401
            expires = jwt.decode(token, options={"verify_signature": False})["exp"]
            await asyncio.sleep(max(0.0, expires - time.time()) + 0.5)
            r = await http.get(AGREEMENTS_PATH, headers=auth)
            assert r.status_code == 401
            assert r.json()["code"] == "unauthorized"


async def test_disabled_agency_is_refused_with_a_remembered_token(
    database_url: str, simulators: dict[str, Any], tmp_path: Path
) -> None:
    settings = broker_settings(database_url, simulators, tmp_path)
    partners = await register_partners(settings, simulators, sign=False)
    async with serve_broker(settings) as broker:
        vt = partners["veilig_thuis"]
        client = PartnerClient(broker.base_url, vt["oin"], {"keys": vt["keys"]})
        try:
            token = await client.token()
        finally:
            await client.aclose()
        auth = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=broker.base_url) as http:
            assert (await http.get(AGREEMENTS_PATH, headers=auth)).status_code == 200
            db = Database(settings.async_database_url)
            try:
                await AgencyService(db, ReferenceData.load(settings.policy_dir)).set_active(
                    vt["oin"], False
                )
            finally:
                await db.dispose()
            broker.services.directory.invalidate()
            r = await http.get(AGREEMENTS_PATH, headers=auth)
            assert r.status_code == 401
