"""Shared fixtures: real SQLite and PostgreSQL databases, the simulated partner
systems as a separate process, and the broker served over loopback HTTP."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import socket
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import jwt
import psycopg
import pytest
import uvicorn
from sqlalchemy import create_engine, text

from adapters.simulators.endpoints import agency_endpoint
from adapters.simulators.runner import spawn_process
from broker.agencies.service import AgencyService
from broker.app import Services, create_app
from broker.crypto.keys import generate_jwk, public_only
from broker.db.migrate import upgrade
from broker.db.models import Base
from broker.db.session import Database
from broker.demo import DEMO_AGENCIES, sign_agreements
from broker.partner_kit import PartnerClient
from broker.reference import ReferenceData
from broker.settings import Settings

PG_ADMIN = os.environ.get("BROKER_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")

# The demo's agencies (one per party, OINs as in the agreements' signatories).
AGENCIES = {party: oin for party, oin, _ in DEMO_AGENCIES}


# Ports handed out by free_port: below the kernel's ephemeral range (which it uses
# for port 0 and outgoing connections), one block per pytest-xdist worker, so two
# workers (or a connection) never pick the port another is about to listen on.
_PORT_BLOCK = 1500
_PORT_BASE = 20000
_next_port = itertools.count()


def free_port() -> int:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    base = _PORT_BASE + (int(worker) % 8 if worker.isdigit() else 0) * _PORT_BLOCK
    for _ in range(_PORT_BLOCK):
        port = base + next(_next_port) % _PORT_BLOCK
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue  # in use (by another process): the next one
            return port
    raise RuntimeError("no free port in this worker's block")


def _pg_url(dbname: str) -> str:
    base, _, _ = PG_ADMIN.rpartition("/")
    return f"{base}/{dbname}"


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    name = f"broker_t_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = _pg_url(name)
    upgrade(url.replace("postgresql://", "postgresql+psycopg://"))
    yield url
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'broker.db'}"
    upgrade(url)
    return url


def clean(url: str) -> None:
    sync = url.replace("postgresql://", "postgresql+psycopg://")
    engine = create_engine(sync)
    with engine.begin() as conn:
        tables = [t.name for t in reversed(Base.metadata.sorted_tables)]
        if url.startswith("postgresql"):
            conn.execute(text("TRUNCATE " + ", ".join(tables) + " CASCADE"))
        else:
            for table in tables:
                conn.execute(text(f"DELETE FROM {table}"))
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> str:
    """A clean, migrated database: every test using it runs on both backends."""
    url: str = request.getfixturevalue(f"{'pg' if request.param == 'postgresql' else 'sqlite'}_url")
    clean(url)
    return url


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    settings = Settings(database_url=database_url)
    db = Database(settings.async_database_url)
    yield db
    await db.dispose()


@pytest.fixture(scope="session")
def simulators(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The simulated partner systems and population register, as their own process."""
    proc, urls = spawn_process(tmp_path_factory.mktemp("sim") / "ready.json")
    yield urls
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


@dataclass
class RunningBroker:
    base_url: str
    services: Services
    settings: Settings


@asynccontextmanager
async def serve_broker(
    settings: Settings, clock: Callable[[], datetime] | None = None
) -> AsyncIterator[RunningBroker]:
    port = int(settings.public_url.rsplit(":", 1)[1])
    app = create_app(settings, clock=clock) if clock else create_app(settings)
    server = uvicorn.Server(
        uvicorn.Config(
            app, host="127.0.0.1", port=port, log_level="warning", access_log=False, lifespan="on"
        )
    )
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("broker did not start")
        await asyncio.sleep(0.02)
    try:
        yield RunningBroker(settings.public_url, app.state.services, settings)
    finally:
        server.should_exit = True
        await task


def broker_settings(
    database_url: str, simulators: dict[str, Any], tmp: Path, **overrides: Any
) -> Settings:
    port = free_port()
    values: dict[str, Any] = {
        "database_url": database_url,
        "keys_dir": tmp / "keys",
        "register_url": simulators["brp"],
        "public_url": f"http://127.0.0.1:{port}",
        "log_level": "WARNING",
    }
    values.update(overrides)
    return Settings(**values)


async def register_partners(
    settings: Settings,
    simulators: dict[str, Any],
    parties: dict[str, str] | None = None,
    *,
    sign: bool = True,
) -> dict[str, dict[str, Any]]:
    """Registers agencies with fresh keys and (unless ``sign`` is false) has each
    sign the agreements that list it; returns party -> private JWKS (with oin)."""
    db = Database(settings.async_database_url)
    service = AgencyService(db, ReferenceData.load(settings.policy_dir))
    out: dict[str, dict[str, Any]] = {}
    try:
        for party, oin in (parties or AGENCIES).items():
            sig = generate_jwk("Ed25519", use="sig")
            enc = generate_jwk("X25519", use="enc")
            # FHIR R4 (ggz, huisarts), own source APIs (police, Raad, Veilig Thuis,
            # municipality) or the generic partner API.
            adapter_kind, endpoint_url = agency_endpoint(party, simulators)
            await service.add(
                oin=oin,
                name=f"Test {party}",
                party_type=party,
                jwks={"keys": [public_only(sig), public_only(enc)]},
                endpoint_url=endpoint_url,
                adapter_kind=adapter_kind,
            )
            out[party] = {"oin": oin, "keys": [sig, enc]}
        if sign:
            await sign_agreements(db, settings, {p: (v["oin"], v) for p, v in out.items()})
    finally:
        await db.dispose()
    return out


@dataclass
class Harness:
    broker: RunningBroker
    partners: dict[str, dict[str, Any]]

    def client(self, party: str) -> PartnerClient:
        p = self.partners[party]
        return PartnerClient(self.broker.base_url, p["oin"], {"keys": p["keys"]})

    async def sign(
        self, party: str, agreement_id: str, version: str | None = None, *, alg: str | None = None
    ) -> httpx.Response:
        """The agency signs ``version`` of the agreement (default: the first one
        listed) over the API, making the JWS with a stock library (PyJWT) as any
        partner would; ``alg`` overrides the key's (e.g. RFC 9864's "Ed25519")."""
        client = self.client(party)
        try:
            token = await client.token()
            headers = {"Authorization": f"Bearer {token}"}
            listed = await client.http.get(self.broker.base_url + "/v1/agreements", headers=headers)
            agreement = next(
                a
                for a in listed.json()
                if a["id"] == agreement_id and version in (None, a["version"])
            )
            sig = next(k for k in self.partners[party]["keys"] if k["use"] == "sig")
            payload = json.dumps(
                {
                    "agreement_id": agreement_id,
                    "version": agreement["version"],
                    "content_hash": agreement["content_hash"],
                    "party": party,
                    "oin": self.partners[party]["oin"],
                    "signed_at": datetime.now(UTC).isoformat(timespec="seconds"),
                },
                sort_keys=True,
                separators=(",", ":"),
            ).encode()
            jws = jwt.api_jws.encode(
                payload,
                jwt.PyJWK(sig).key,
                algorithm=alg or sig["alg"],
                headers={"kid": sig["kid"]},
            )
            return await client.http.post(
                self.broker.base_url + f"/v1/agreements/{agreement_id}/signatures",
                json={"jws": jws},
                headers=headers,
            )
        finally:
            await client.aclose()


@pytest.fixture
async def harness(
    database_url: str, simulators: dict[str, Any], tmp_path: Path
) -> AsyncIterator[Harness]:
    settings = broker_settings(database_url, simulators, tmp_path)
    partners = await register_partners(settings, simulators)
    async with serve_broker(settings) as broker:
        yield Harness(broker, partners)
