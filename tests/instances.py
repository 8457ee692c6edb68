"""Broker instances as their own uvicorn processes (``broker serve``) on loopback,
for the multi-instance test and the benchmark."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from broker.settings import PROJECT_ROOT


def broker_env(**values: str) -> dict[str, str]:
    """The process environment with ``BROKER_<NAME>`` set for every ``name=value``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BROKER_")}
    env.update({f"BROKER_{name.upper()}": value for name, value in values.items()})
    return env


def spawn_broker(
    port: int,
    env: dict[str, str],
    *,
    log: Path | None = None,
    workers: int = 1,
    timeout: float = 60.0,
) -> subprocess.Popen[bytes]:
    """Starts ``broker serve`` on 127.0.0.1:``port`` (no migrations: the caller ran
    them) and waits until ``/health/ready`` answers 200."""
    out = log.open("ab") if log is not None else subprocess.DEVNULL
    try:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "broker.cli",
                "serve",
                "--port",
                str(port),
                "--no-migrate",
                "--workers",
                str(workers),
            ],
            env=env,
            cwd=PROJECT_ROOT,
            stdout=out,
            stderr=out,
        )
    finally:
        if log is not None and not isinstance(out, int):
            out.close()
    deadline = time.monotonic() + timeout
    url = f"http://127.0.0.1:{port}/health/ready"
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"the broker on port {port} exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=2.0).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            stop_broker(proc)
            raise RuntimeError(f"the broker on port {port} did not become ready")
        time.sleep(0.1)


def stop_broker(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)
