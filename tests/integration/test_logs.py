"""Operational logs carry request ids and never a BSN or a released value."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Harness, broker_settings, clean, register_partners, serve_broker
from tests.integration.test_exchange import SUSPECT_HISTORY


async def test_logs_hold_no_personal_data(
    sqlite_url: str,
    simulators: dict[str, Any],
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    clean(sqlite_url)
    settings = broker_settings(
        sqlite_url, simulators, tmp_path, log_level="INFO", log_format="json"
    )
    partners = await register_partners(settings, simulators)
    async with serve_broker(settings) as broker:
        client = Harness(broker, partners).client("veilig_thuis")
        try:
            response = await client.exchange(SUSPECT_HISTORY)
            bad = await client.exchange(dict(SUSPECT_HISTORY, subjects=["123456789"]))
        finally:
            await client.aclose()
    assert response.status_code == 200
    assert bad.status_code == 422
    released = client.decrypt(response.json()["payload"])
    err = capfd.readouterr().err
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    completed = [line for line in lines if line.get("event") == "exchange.completed"]
    assert completed
    assert completed[0]["request_id"] == response.json()["request_id"]
    for bsn in (*SUSPECT_HISTORY["subjects"], "123456789"):
        assert bsn not in err
    for item in released["items"]:
        assert json.dumps(item["value"])[:40] not in err
