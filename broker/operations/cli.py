"""``broker adapters status``: the adapters' state as a running broker sees it.

Adapter statistics live in each broker process, so the command asks a running
broker (``GET /v1/adapters/health``) with an agency's own credentials, as any
partner would: the private JWKS file of an operations agency (the demo writes
one per party under ``var/demo/partners/<party>/``). No personal data is shown.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import click
import httpx

from broker.partner_kit import PartnerClient

HEALTH_PATH = "/v1/adapters/health"
COLUMNS = ("kind", "endpoint", "circuit", "calls", "failures", "p50_ms", "p95_ms", "p99_ms")


def _credentials(jwks: Path, oin: str | None) -> tuple[str, dict[str, Any]]:
    try:
        keys = json.loads(jwks.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise click.ClickException(f"cannot read the private JWKS {jwks}: {exc}") from exc
    if oin is None:
        beside = jwks.parent / "oin.txt"
        if not beside.is_file():
            raise click.ClickException("give --oin (no oin.txt beside the JWKS file)")
        oin = beside.read_text(encoding="utf-8").strip()
    if not isinstance(keys, dict) or not any(
        isinstance(k, dict) and k.get("use") == "sig" for k in keys.get("keys", [])
    ):
        raise click.ClickException("the JWKS holds no signing key")
    return oin, keys


async def fetch_health(url: str, oin: str, keys: dict[str, Any]) -> dict[str, Any]:
    client = PartnerClient(url.rstrip("/"), oin, keys)
    try:
        token = await client.token()
        response = await client.http.get(
            url.rstrip("/") + HEALTH_PATH, headers={"Authorization": f"Bearer {token}"}
        )
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body
    finally:
        await client.aclose()


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def render(health: dict[str, Any]) -> str:
    rows = list(health.get("adapters", []))
    if health.get("register"):
        rows.append(health["register"])
    table = [list(COLUMNS)] + [[_cell(r.get(c)) for c in COLUMNS] for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(COLUMNS))]
    return "\n".join(
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in table
    )


@click.group("adapters")
def adapters_group() -> None:
    """Partner-system adapters as a running broker sees them."""


@adapters_group.command("status")
@click.option("--url", default=None, help="Broker base URL (default: BROKER_PUBLIC_URL)")
@click.option(
    "--jwks",
    "jwks",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Private JWKS of the agency asking (signing key)",
)
@click.option("--oin", default=None, help="The agency's OIN (default: oin.txt beside --jwks)")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON")
def status(url: str | None, jwks: Path, oin: str | None, as_json: bool) -> None:
    """Each adapter endpoint's circuit state, calls, failures and latency
    percentiles, and the population register's; exit code 1 when a circuit is open."""
    if url is None:
        from broker.settings import Settings

        url = Settings().public_url
    agency_oin, keys = _credentials(jwks, oin)
    try:
        health = asyncio.run(fetch_health(url, agency_oin, keys))
    except httpx.HTTPStatusError as exc:
        raise click.ClickException(
            f"the broker answered {exc.response.status_code} to {exc.request.url}"
        ) from exc
    except httpx.HTTPError as exc:
        raise click.ClickException(f"cannot reach the broker at {url}: {exc}") from exc
    click.echo(json.dumps(health, indent=2) if as_json else render(health))
    if any(a.get("circuit") == "open" for a in health.get("adapters", [])):
        raise SystemExit(1)
