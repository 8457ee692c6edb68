"""Fixtures for the adapter tests: the simulators run in a SUBPROCESS
(``python -m adapters.simulators serve``) and are reached over real HTTP on loopback."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
PORT_SPAN = 19  # brp + 11 parties + 2 FHIR servers (ggz, huisarts) + 5 source APIs
FAMILIES = 5

# Registry persons (adapters/simulators/data/lindeburg.yaml).
BSN = {
    "P01": "999990007",
    "P02": "999990019",
    "P03": "999990020",
    "P04": "999990032",
    "P05": "999990044",
    "P06": "999990056",
    "P07": "999990068",
    "P08": "999990081",
    "P09": "999990093",
    "P10": "999990111",
    "P11": "999990123",
    "P12": "999990135",
    "P13": "999990147",
    "P14": "999990159",
}
UNKNOWN_BSN = "123456782"  # passes the elfproef, not in the registry


def _port_range_free(base: int) -> bool:
    for port in range(base, base + PORT_SPAN):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def free_base_port() -> int:
    # Start from an OS-chosen ephemeral port and look for PORT_SPAN free ports in a row.
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            base = int(s.getsockname()[1])
        if base + PORT_SPAN < 65535 and _port_range_free(base):
            return base
    raise RuntimeError("no free port range found")


@dataclass
class SimProcess:
    proc: subprocess.Popen[bytes]
    urls: dict[str, Any]
    ready_file: Path
    log: Path

    def stop(self, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def start_sim_process(tmp: Path, *extra: str, attempts: int = 3) -> SimProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    last_error = ""
    for attempt in range(attempts):
        base = free_base_port()
        ready = tmp / f"ready-{base}-{attempt}.json"
        log = tmp / f"sim-{base}-{attempt}.log"
        with log.open("wb") as out:  # a file, not a pipe: a full pipe would block the server
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "adapters.simulators",
                    "serve",
                    "--host",
                    "127.0.0.1",
                    "--base-port",
                    str(base),
                    "--ready-file",
                    str(ready),
                    *extra,
                ],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and proc.poll() is None and not ready.exists():
            time.sleep(0.05)
        if ready.exists():
            return SimProcess(proc, json.loads(ready.read_text()), ready, log)
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        last_error = log.read_text(errors="replace")[-2000:]
    raise RuntimeError(f"simulators did not start: {last_error}")


@pytest.fixture(scope="session")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimProcess]:
    process = start_sim_process(tmp_path_factory.mktemp("sim"), "--families", str(FAMILIES))
    yield process
    assert process.stop() == 0


@pytest.fixture(scope="session")
def bsn() -> dict[str, str]:
    return dict(BSN)


@pytest.fixture
def closed_port_url() -> str:
    """A loopback URL on which nothing listens."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture(scope="session")
def unknown_bsn() -> str:
    return UNKNOWN_BSN


@pytest.fixture(scope="session")
def start_sim() -> Callable[..., SimProcess]:
    """Starts another simulator subprocess (the caller stops it)."""
    return start_sim_process


@pytest.fixture(scope="session")
def families() -> int:
    return FAMILIES


@pytest.fixture(scope="session")
def sim_urls(sim: SimProcess) -> dict[str, Any]:
    return sim.urls


class SimAdmin:
    """Talks to the simulators' loopback-only /_sim endpoints."""

    def __init__(self, urls: dict[str, Any], client: httpx.AsyncClient) -> None:
        self.urls = urls
        self.client = client

    def all_urls(self) -> list[str]:
        sources = self.urls.get("sources") or {}
        return [self.urls["brp"], *self.urls["parties"].values(), *sources.values()]

    async def set_faults(self, url: str, **faults: Any) -> dict[str, Any]:
        resp = await self.client.post(f"{url}/_sim/faults", json=faults)
        resp.raise_for_status()
        body: dict[str, Any] = resp.json()
        return body

    async def requests(self, url: str) -> int:
        resp = await self.client.get(f"{url}/_sim/stats")
        resp.raise_for_status()
        return int(resp.json()["requests"])

    async def reset(self) -> None:
        for url in self.all_urls():
            (await self.client.delete(f"{url}/_sim/faults")).raise_for_status()
            (await self.client.delete(f"{url}/_sim/stats")).raise_for_status()


@pytest.fixture(scope="session")
async def sim_admin(sim_urls: dict[str, Any]) -> AsyncIterator[SimAdmin]:
    async with httpx.AsyncClient(timeout=5.0) as client:
        yield SimAdmin(sim_urls, client)


@pytest.fixture(autouse=True)
async def _reset_faults(sim_admin: SimAdmin) -> AsyncIterator[None]:
    await sim_admin.reset()
    yield
    await sim_admin.reset()
