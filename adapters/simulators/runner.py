"""Runs the BRP simulator and the partner simulators in one process.

Port order is FIXED: the BRP listens on ``base_port``; party ``PARTY_ORDER[i]`` listens on
``base_port + 1 + i`` whether or not the other parties are started:

    +0 brp, +1 politie, +2 veilig_thuis, +3 raad_kinderbescherming, +4 ggz, +5 huisarts,
    +6 school, +7 schuldhulpverlening, +8 gemeente_wijkteam, +9 gecertificeerde_instelling,
    +10 openbaar_ministerie, +11 zorg_en_veiligheidshuis, +12 ggz FHIR, +13 huisarts FHIR,
    +14..+18 the source APIs of politie, raad_kinderbescherming, veilig_thuis,
    gemeente_wijkteam and schuldhulpverlening (``adapters/simulators/sources.py``)

The FHIR R4 servers (``adapters/simulators/fhir.py``) of ggz and huisarts start with their party
and appear in the ready file under ``"fhir"``.

With ``base_port=0`` every simulator gets a free port from the OS instead (see ``urls``).

With a server ``ssl.SSLContext`` (:func:`server_tls_context`) every simulator serves HTTPS
(``https://`` URLs), and, given a client CA, requires a client certificate it issued (mTLS).
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from adapters.simulators.brp import create_brp_app
from adapters.simulators.catalogue import Catalogue
from adapters.simulators.faults import FaultConfig
from adapters.simulators.fhir import FHIR_PARTIES, create_fhir_app
from adapters.simulators.generate import generate_families
from adapters.simulators.partner import PARTY_ORDER, create_partner_app
from adapters.simulators.registry import DEFAULT_REGISTRY_PATH, Registry
from adapters.simulators.sources import SOURCE_PARTIES, create_source_app
from adapters.simulators.values import World

__all__ = [
    "DEFAULT_SEED",
    "RunningSimulators",
    "build_world",
    "parse_parties",
    "port_for",
    "server_tls_context",
    "start_simulators",
    "write_ready_file",
]

DEFAULT_SEED = 20260401


def port_for(name: str, base_port: int) -> int:
    """The fixed port of ``"brp"``, a party id, ``"fhir:<party>"`` or ``"source:<party>"``
    for a given base port."""
    if name == "brp":
        return base_port
    if name.startswith("fhir:"):
        return base_port + 1 + len(PARTY_ORDER) + FHIR_PARTIES.index(name[5:])
    if name.startswith("source:"):
        offset = 1 + len(PARTY_ORDER) + len(FHIR_PARTIES)
        return base_port + offset + SOURCE_PARTIES.index(name[7:])
    return base_port + 1 + PARTY_ORDER.index(name)


def parse_parties(spec: str | Sequence[str] | None) -> tuple[str, ...]:
    """``None``/``"all"`` -> every party; ``"p1,p2"`` or a sequence -> those, in PARTY_ORDER."""
    if spec is None or spec == "all":
        return PARTY_ORDER
    names = [p.strip() for p in spec.split(",")] if isinstance(spec, str) else list(spec)
    unknown = sorted({n for n in names if n} - set(PARTY_ORDER))
    if unknown:
        raise ValueError(f"unknown parties: {', '.join(unknown)}")
    wanted = set(names)
    return tuple(p for p in PARTY_ORDER if p in wanted)


def build_world(
    families: int = 0,
    *,
    seed: int = DEFAULT_SEED,
    registry_path: Path = DEFAULT_REGISTRY_PATH,
    catalogue_path: Path | None = None,
) -> World:
    registry = Registry.load(registry_path)
    if families:
        exclude = {p.bsn for p in registry.iter_persons()}
        registry.add_document(generate_families(families, seed, exclude))
    return World(registry=registry, catalogue=Catalogue.load(catalogue_path))


@dataclass(slots=True)
class RunningSimulators:
    """Handle on started simulators: ``urls`` is the ready-file document."""

    brp_url: str
    party_urls: dict[str, str]
    world: World
    fhir_urls: dict[str, str] = field(default_factory=dict)
    source_urls: dict[str, str] = field(default_factory=dict)
    _runners: list[web.AppRunner] = field(default_factory=list, repr=False)

    @property
    def urls(self) -> dict[str, Any]:
        urls: dict[str, Any] = {"brp": self.brp_url, "parties": dict(self.party_urls)}
        if self.fhir_urls:  # only when ggz and/or huisarts run
            urls["fhir"] = dict(self.fhir_urls)
        if self.source_urls:  # the parties' own source APIs (adapters/simulators/sources.py)
            urls["sources"] = dict(self.source_urls)
        return urls

    async def stop(self) -> None:
        runners, self._runners = self._runners, []
        for runner in reversed(runners):
            await runner.cleanup()

    async def __aenter__(self) -> RunningSimulators:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()


def server_tls_context(cert: Path, key: Path, client_ca: Path | None = None) -> ssl.SSLContext:
    """A server context for the simulators: ``cert``/``key`` (PEM) identify the server;
    with ``client_ca`` (PEM) a client certificate issued by it is required (mTLS)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(cert), str(key))
    if client_ca is not None:
        context.load_verify_locations(cafile=str(client_ca))
        context.verify_mode = ssl.CERT_REQUIRED
    return context


async def _serve(
    app: web.Application, host: str, port: int, ssl_context: ssl.SSLContext | None = None
) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    bound = port
    for addr in runner.addresses:
        if isinstance(addr, tuple) and len(addr) >= 2:
            bound = int(addr[1])
            break
    return runner, bound


def _url(host: str, port: int, tls: bool = False) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"{'https' if tls else 'http'}://{shown}:{port}"


async def start_simulators(
    host: str = "127.0.0.1",
    base_port: int = 9100,
    parties: str | Sequence[str] | None = None,
    families: int = 0,
    *,
    seed: int = DEFAULT_SEED,
    faults: FaultConfig | None = None,
    admin: bool = True,
    world: World | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> RunningSimulators:
    """Start the BRP and the chosen partner simulators; all are listening on return.
    With ``ssl_context`` (:func:`server_tls_context`) they all serve HTTPS."""
    tls = ssl_context is not None
    selected = parse_parties(parties)
    world = world or build_world(families, seed=seed)
    running = RunningSimulators(brp_url="", party_urls={}, world=world)
    try:
        brp_app = create_brp_app(world.registry, faults=faults, admin=admin, seed=seed)
        runner, port = await _serve(
            brp_app, host, port_for("brp", base_port) if base_port else 0, ssl_context
        )
        running._runners.append(runner)
        running.brp_url = _url(host, port, tls)
        for i, party in enumerate(selected):
            app = create_partner_app(party, world, faults=faults, admin=admin, seed=seed + i + 1)
            wanted = port_for(party, base_port) if base_port else 0
            runner, port = await _serve(app, host, wanted, ssl_context)
            running._runners.append(runner)
            running.party_urls[party] = _url(host, port, tls)
        for i, party in enumerate(p for p in FHIR_PARTIES if p in selected):
            app = create_fhir_app(party, world, faults=faults, admin=admin, seed=seed + 100 + i)
            wanted = port_for(f"fhir:{party}", base_port) if base_port else 0
            runner, port = await _serve(app, host, wanted, ssl_context)
            running._runners.append(runner)
            running.fhir_urls[party] = _url(host, port, tls)
        for i, party in enumerate(p for p in SOURCE_PARTIES if p in selected):
            app = create_source_app(party, world, faults=faults, admin=admin, seed=seed + 200 + i)
            wanted = port_for(f"source:{party}", base_port) if base_port else 0
            runner, port = await _serve(app, host, wanted, ssl_context)
            running._runners.append(runner)
            running.source_urls[party] = _url(host, port, tls)
    except BaseException:
        await running.stop()
        raise
    return running


def write_ready_file(path: Path, urls: dict[str, Any]) -> None:
    """Write the ready document atomically (temp file in the same folder, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(urls, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def spawn_process(
    ready: Path, *, base_port: int = 0, timeout: float = 30.0
) -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
    """Starts ``python -m adapters.simulators serve`` as its own process and waits
    for its ready file; returns the process and the URLs it wrote. Port 0: the
    operating system picks free ports."""
    ready.unlink(missing_ok=True)
    proc = subprocess.Popen(  # noqa: S603 - our own module, fixed arguments
        [
            sys.executable,
            "-m",
            "adapters.simulators",
            "serve",
            "--host",
            "127.0.0.1",
            "--base-port",
            str(base_port),
            "--ready-file",
            str(ready),
        ],
        cwd=Path(__file__).resolve().parents[2],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + timeout
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("the simulated partner systems did not start")
        time.sleep(0.05)
    urls: dict[str, Any] = json.loads(ready.read_text(encoding="utf-8"))
    return proc, urls
