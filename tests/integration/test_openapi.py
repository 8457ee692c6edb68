"""The served OpenAPI document is the committed one, and the live API honours it
(schemathesis, authenticated, against a broker process over loopback)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from broker.app import create_app
from broker.db.migrate import upgrade
from broker.partner_kit import PartnerClient
from broker.settings import PROJECT_ROOT, Settings
from tests.conftest import free_port, register_partners


def test_committed_openapi_document_is_current() -> None:
    committed = json.loads((PROJECT_ROOT / "docs" / "openapi.json").read_text())
    assert create_app(Settings()).openapi() == committed, (
        "docs/openapi.json is stale: run `broker openapi --out docs/openapi.json`"
    )


@pytest.fixture(scope="module")
def live_broker(
    simulators: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    """A `broker serve` process on SQLite with one registered partner; yields
    (base URL, access token)."""
    tmp: Path = tmp_path_factory.mktemp("live")
    port = free_port()
    env = dict(
        os.environ,
        BROKER_DATABASE_URL=f"sqlite:///{tmp / 'broker.db'}",
        BROKER_KEYS_DIR=str(tmp / "keys"),
        BROKER_REGISTER_URL=simulators["brp"],
        BROKER_PUBLIC_URL=f"http://127.0.0.1:{port}",
        BROKER_LOG_LEVEL="WARNING",
    )
    settings_ = Settings(
        database_url=env["BROKER_DATABASE_URL"],
        keys_dir=tmp / "keys",
        register_url=simulators["brp"],
        public_url=env["BROKER_PUBLIC_URL"],
    )
    upgrade(settings_.sync_database_url)
    partners = asyncio.run(register_partners(settings_, simulators))
    proc = subprocess.Popen(
        [sys.executable, "-m", "broker.cli", "serve", "--port", str(port)],
        env=env,
        cwd=PROJECT_ROOT,
    )
    base = env["BROKER_PUBLIC_URL"]
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(base + "/health/live").status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("broker did not start")
        time.sleep(0.1)

    async def token() -> str:
        vt = partners["veilig_thuis"]
        client = PartnerClient(base, vt["oin"], {"keys": vt["keys"]})
        try:
            return await client.token()
        finally:
            await client.aclose()

    yield base, asyncio.run(token())
    proc.terminate()
    proc.wait(timeout=10)


def test_api_conforms_to_its_schema(live_broker: tuple[str, str]) -> None:
    """Every operation, with generated valid and invalid inputs: no server error,
    only documented status codes and content types, bodies matching the schema."""
    base, token = live_broker
    api = schemathesis.openapi.from_url(base + "/openapi.json")
    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
    ]
    operations = 0
    seen: dict[str, set[int]] = {}

    def exercise(operation: Any) -> None:
        statuses = seen.setdefault(operation.label, set())

        @given(case=operation.as_strategy())
        @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
        def run(case: Any) -> None:
            response = case.call(base_url=base, headers={"Authorization": f"Bearer {token}"})
            statuses.add(response.status_code)
            case.validate_response(response, checks=checks)

        run()

    for result in api.get_all_operations():
        operations += 1
        exercise(result.ok())
    assert operations >= 6
    # The token was accepted: generated exchange requests got past authentication.
    assert seen["POST /v1/exchanges"] - {401}, seen
