"""GET /v1/adapters/health over loopback HTTP: per-endpoint calls, circuit state and latency
percentiles of the partner API and FHIR adapters and the register, without personal data."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
from click.testing import CliRunner

from broker.cli import main as cli_main
from tests.integration.conftest import START, Timed
from tests.integration.test_breakglass import DECLARED_AT, declaration, police_request
from tests.integration.test_exchange import SUSPECT_HISTORY

PATH = "/v1/adapters/health"


def by_endpoint(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["endpoint"]: row for row in body["adapters"]}


async def test_health_lists_adapters_and_shows_an_open_circuit(
    timed: Timed, simulators: dict[str, Any], tmp_path: Path
) -> None:
    politie = simulators["sources"]["politie"]
    ggz = simulators["fhir"]["ggz"]
    # A police exchange (its own source API) and, under break-the-glass, a FHIR one (ggz).
    assert (await timed.exchange_response("veilig_thuis", SUSPECT_HISTORY)).status_code == 200
    timed.clock.now = DECLARED_AT
    created = await timed.call("veilig_thuis", "POST", "/v1/acute-declarations", declaration())
    assert created.status_code == 201, created.text
    await timed.exchange("politie", police_request())

    response = await timed.call("gemeente_wijkteam", "GET", PATH)  # any agency may ask
    assert response.status_code == 200, response.text
    body = response.json()
    rows = by_endpoint(body)
    assert rows[politie]["kind"] == "police"
    assert rows[ggz]["kind"] == "fhir"
    for url in (politie, ggz):
        row = rows[url]
        assert row["calls"] > 0 and row["failures"] == 0
        assert row["circuit"] == "closed"
        assert 0 <= row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"]
    register = body["register"]
    assert register["kind"] == "brp" and register["circuit"] == "none"
    assert register["endpoint"].startswith(simulators["brp"]) and register["calls"] > 0
    assert "999990007" not in response.text  # no subjects, only endpoints and numbers

    # Drive the politie simulator into failures until the breaker opens (threshold 5).
    timed.clock.now = START
    async with httpx.AsyncClient(timeout=5.0) as admin:
        (await admin.post(f"{politie}/_sim/faults", json={"status": 503})).raise_for_status()
        try:
            for _ in range(5):
                failed = await timed.exchange_response("veilig_thuis", SUSPECT_HISTORY)
                assert failed.status_code == 200, failed.text
        finally:
            (await admin.delete(f"{politie}/_sim/faults")).raise_for_status()
    after = by_endpoint((await timed.call("veilig_thuis", "GET", PATH)).json())
    assert after[politie]["circuit"] == "open"
    assert after[politie]["failures"] >= 5
    assert after[ggz]["circuit"] == "closed"

    # `broker adapters status` shows the same, with the agency's own key file; exit 1.
    partner = timed.harness.partners["veilig_thuis"]
    jwks = tmp_path / "private.jwks.json"
    jwks.write_text(json.dumps({"keys": partner["keys"]}), encoding="utf-8")
    (tmp_path / "oin.txt").write_text(partner["oin"] + "\n", encoding="utf-8")
    url = timed.harness.broker.base_url
    result = await asyncio.to_thread(
        CliRunner().invoke, cli_main, ["adapters", "status", "--url", url, "--jwks", str(jwks)]
    )
    assert result.exit_code == 1, result.output
    lines = {line.split()[1]: line.split() for line in result.output.splitlines()[1:]}
    assert lines[politie][:3] == ["police", politie, "open"]
    assert lines[ggz][2] == "closed"
    assert lines[register["endpoint"]][0] == "brp"
    as_json = await asyncio.to_thread(
        CliRunner().invoke,
        cli_main,
        ["adapters", "status", "--url", url, "--jwks", str(jwks), "--json"],
    )
    assert by_endpoint(json.loads(as_json.output))[politie]["circuit"] == "open"


async def test_health_requires_a_token(timed: Timed) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.get(timed.harness.broker.base_url + PATH)
    assert response.status_code == 401
    assert response.headers["content-type"].startswith("application/problem+json")
    assert json.loads(response.text)["status"] == 401
