"""Exchange benchmark: N concurrent simulated partners drive a running broker
over loopback; prints exchanges/s and p50/p95/p99 latency per database backend.

    ./dev bench [--backend sqlite|postgresql|both] [--engine embedded|regorus]
                [--concurrency 32] [--seconds 20] [--instances N] [--providers N]

The broker runs as its own process (`broker serve`, one uvicorn worker) with
durable commits (SQLite WAL + synchronous=FULL; PostgreSQL defaults); the
simulated partner systems and population register run in a third process. Each
request asks for 10 items (5 elements x 2 persons: 6 allowed and fetched from
the police simulator, 4 denied), so every exchange is decided, fetched, audited
(11 hash-chained entries) and JWE-encrypted.

``--instances N`` (N > 1, PostgreSQL) also runs N broker processes on the one
database behind one public URL, the partners spread over them round-robin, and
prints that figure after the single-instance one.

``--providers N`` (2..4) benchmarks fan-out instead: each exchange asks N providers
at once (the MDA++ safety table, ``providers``), the Gecertificeerde Instelling
asking Veilig Thuis, the police, the Public Prosecution Service and the Raad each
for their own elements about 2 persons (N=4: 10 items), every provider decided
separately, fetched in parallel through the real adapters against the simulators,
audited and answered in one JWE.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import psycopg

from adapters.simulators.runner import spawn_process
from broker.crypto.keys import BrokerKeyring, load_or_create_pseudonym_key
from broker.db.migrate import upgrade
from broker.partner_kit import PartnerClient
from broker.settings import PROJECT_ROOT, Settings
from tests.conftest import free_port, register_partners
from tests.instances import spawn_broker, stop_broker

REQUEST = {
    "agreement_id": "agr-vt-politie-hg",
    "purpose_id": "informatie_voor_veiligheidsbeoordeling",
    "provider": {"party": "politie"},
    "case_reference": "VT-LB-2026-0042",
    "subjects": ["999990007", "999990019"],
    "elements": [
        "police.dv_incident",
        "police.suspect_history_dv",
        "police.tijdelijk_huisverbod",
        "health.diagnosis",
        "health.medication",
    ],
    "context": {"vt_case_status": "veiligheidsbeoordeling"},
}


# Fan-out (--providers N): per provider, the elements asked of it (MDA++ safety table,
# elements the Gecertificeerde Instelling may receive there).
FAN_OUT_PROVIDERS: list[tuple[str, list[str]]] = [
    ("veilig_thuis", ["vt.safety_assessment", "vt.safety_plan"]),
    ("politie", ["police.dv_incident"]),
    ("openbaar_ministerie", ["om.special_conditions"]),
    ("raad_kinderbescherming", ["cp.raad_investigation_status"]),
]


def fan_out_request(providers: int) -> dict[str, Any]:
    """The safety-table request asking the first ``providers`` of FAN_OUT_PROVIDERS."""
    chosen = FAN_OUT_PROVIDERS[:providers]
    return {
        "agreement_id": "agr-zvh-mdaplusplus",
        "purpose_id": "veiligheidsoverleg",
        "providers": [{"party": p, "elements": e} for p, e in chosen],
        "case_reference": "GI-LB-2026-0042",
        "subjects": ["999990007", "999990019"],
        "elements": [e for _, elements in chosen for e in elements],
        "context": {"mda_case_id": "MDA-LB-2026-0007", "mda_case_status": "actief"},
    }


def start_simulators(tmp: Path) -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
    return spawn_process(tmp / "sim.json")


def database_for(backend: str, tmp: Path) -> tuple[str, str | None]:
    if backend == "sqlite":
        return f"sqlite:///{tmp / 'bench.db'}", None
    admin = os.environ.get("BROKER_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
    name = f"broker_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return admin.rsplit("/", 1)[0] + "/" + name, name


def drop_database(name: str) -> None:
    admin = os.environ.get("BROKER_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def drive(
    base: str | list[str],
    token: str,
    concurrency: int,
    seconds: float,
    warmup: float,
    request: dict[str, Any] = REQUEST,
) -> tuple[list[float], int, float]:
    """``base``: one broker, or several sharing the work round-robin per partner."""
    bases = [base] if isinstance(base, str) else base
    latencies: list[float] = []
    errors = 0
    body = json.dumps(request).encode()
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as http:
        start = time.perf_counter()
        measure_from = start + warmup
        stop_at = measure_from + seconds

        async def worker(base: str) -> None:
            nonlocal errors
            while True:
                t0 = time.perf_counter()
                if t0 >= stop_at:
                    return
                async with http.post(base + "/v1/exchanges", data=body, headers=headers) as r:
                    await r.read()
                    ok = r.status == 200
                t1 = time.perf_counter()
                if t0 >= measure_from:
                    if ok:
                        latencies.append(t1 - t0)
                    else:
                        errors += 1

        await asyncio.gather(*(worker(bases[i % len(bases)]) for i in range(concurrency)))
    return latencies, errors, seconds


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run_backend(
    backend: str,
    args: argparse.Namespace,
    sims: dict[str, Any],
    tmp: Path,
    instances: int = 1,
) -> dict[str, Any]:
    url, pg_name = database_for(backend, tmp)
    port = free_port()
    settings = Settings(
        database_url=url,
        keys_dir=tmp / f"keys-{backend}",
        register_url=sims["brp"],
        public_url=f"http://127.0.0.1:{port}",
    )
    upgrade(settings.sync_database_url)
    if instances > 1:  # one set of broker keys for every instance, made before they start
        BrokerKeyring.load_or_create(settings.keys_dir)
        load_or_create_pseudonym_key(settings.keys_dir)
    partners = await register_partners(settings, sims)
    env = dict(
        os.environ,
        BROKER_DATABASE_URL=url,
        BROKER_KEYS_DIR=str(settings.keys_dir),
        BROKER_REGISTER_URL=sims["brp"],
        BROKER_PUBLIC_URL=settings.public_url,
        BROKER_LOG_LEVEL="WARNING",
        BROKER_POLICY_ENGINE=args.engine,
    )
    broker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "broker.cli",
            "serve",
            "--port",
            str(port),
            "--no-migrate",
            "--workers",
            str(args.workers),
        ],
        env=env,
        cwd=PROJECT_ROOT,
    )
    others: list[subprocess.Popen[bytes]] = []
    bases = [settings.public_url]
    try:
        deadline = time.monotonic() + 30
        async with aiohttp.ClientSession() as http:
            while True:
                try:
                    async with http.get(settings.public_url + "/health/ready") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("broker did not start")
                await asyncio.sleep(0.1)
        for _ in range(instances - 1):  # the same public URL (token audience), own ports
            extra = free_port()
            others.append(await asyncio.to_thread(spawn_broker, extra, env, workers=args.workers))
            bases.append(f"http://127.0.0.1:{extra}")
        fan_out = args.providers > 1
        requester = partners["gecertificeerde_instelling" if fan_out else "veilig_thuis"]
        request = fan_out_request(args.providers) if fan_out else REQUEST
        client = PartnerClient(settings.public_url, requester["oin"], {"keys": requester["keys"]})
        token = await client.token()
        check = await client.exchange(request)
        assert check.status_code == 200, check.text
        checked = check.json()
        released = client.decrypt(checked["payload"])
        if fan_out:
            # Every item allowed; print what the providers answered (their statuses).
            assert all(i["outcome"] == "allow" for i in checked["items"]), checked["items"]
            statuses = sorted({(i["provider"]["party"], i["status"]) for i in checked["items"]})
            print(json.dumps({"fan_out_check": statuses}), flush=True)
        else:
            # 6 allowed items, each answered by the police source (released or not found).
            allowed = [i for i in checked["items"] if i["outcome"] == "allow"]
            assert len(allowed) == 6, checked["items"]
            assert all(i["status"] in {"released", "not_found"} for i in allowed), allowed
            assert released["items"], released
        await client.aclose()
        latencies, errors, seconds = await drive(
            bases if instances > 1 else settings.public_url,
            token,
            args.concurrency,
            args.seconds,
            args.warmup,
            request,
        )
    finally:
        for other in others:
            stop_broker(other)
        broker.terminate()
        broker.wait(timeout=10)
        if pg_name:
            drop_database(pg_name)
    return {
        "backend": backend,
        "engine": args.engine,
        "workers": args.workers,
        "instances": instances,
        "providers": args.providers,
        "items": len(request["subjects"]) * len(request["elements"]),
        "concurrency": args.concurrency,
        "exchanges": len(latencies),
        "errors": errors,
        "exchanges_per_s": round(len(latencies) / seconds, 1),
        "p50_ms": round(percentile(latencies, 0.50) * 1000, 2),
        "p95_ms": round(percentile(latencies, 0.95) * 1000, 2),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 2),
        "mean_ms": round(statistics.mean(latencies) * 1000, 2),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    parser.add_argument(
        "--engine",
        choices=["embedded", "regorus"],
        default="embedded",
        help="policy engine: embedded (regopy, the default) or regorus",
    )
    parser.add_argument(
        "--instances",
        type=int,
        default=1,
        help="PostgreSQL: also run N broker instances on one database (after one)",
    )
    parser.add_argument(
        "--providers",
        type=int,
        default=1,
        choices=range(1, len(FAN_OUT_PROVIDERS) + 1),
        metavar="N",
        help="fan-out: ask N providers (2..4) per exchange in parallel (1: the usual request)",
    )
    args = parser.parse_args()
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        sims_proc, sims = start_simulators(tmp)
        try:
            for backend in backends:
                result = await run_backend(backend, args, sims, tmp)
                print(json.dumps(result), flush=True)
                if backend == "postgresql" and args.instances > 1:
                    result = await run_backend(backend, args, sims, tmp, args.instances)
                    print(json.dumps(result), flush=True)
        finally:
            sims_proc.terminate()
            sims_proc.wait(timeout=10)


if __name__ == "__main__":
    asyncio.run(main())
