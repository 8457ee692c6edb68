"""Periodic jobs: run at start and then every interval, survive a failed run,
stop on request; interval 0 never runs."""

from __future__ import annotations

import asyncio

from broker.core.errors import StorageUnavailable
from broker.core.periodic import Periodic


async def test_runs_repeatedly_and_survives_failures() -> None:
    runs: list[int] = []

    async def job() -> None:
        runs.append(len(runs))
        if len(runs) == 1:
            raise StorageUnavailable()
        if len(runs) == 2:
            raise RuntimeError("unexpected")

    periodic = Periodic("test-job", job, 0.01)
    periodic.start()
    periodic.start()  # a second start does not start a second loop
    for _ in range(200):
        if len(runs) >= 4:
            break
        await asyncio.sleep(0.01)
    await periodic.stop()
    assert len(runs) >= 4, "failed runs do not stop the job"
    stopped = len(runs)
    await asyncio.sleep(0.05)
    assert len(runs) == stopped
    await periodic.stop()  # stopping twice is harmless


async def test_interval_zero_never_runs() -> None:
    runs: list[int] = []

    async def job() -> None:
        runs.append(1)

    periodic = Periodic("off", job, 0)
    periodic.start()
    await asyncio.sleep(0.03)
    await periodic.stop()
    assert runs == []
