"""A job the broker runs every so many seconds in a task of its own (expiring
signals, lifting lapsed embargoes, destroying retention keys). A run that fails
is logged and the next one runs on time; the job's own records say what it did."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import structlog

from broker.core.errors import BrokerError

log = structlog.get_logger("periodic")


async def cancel(task: asyncio.Task[None] | None) -> None:
    """Cancels a background task and waits until it has stopped."""
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class Periodic:
    """Runs ``job`` at start and then every ``interval`` seconds (0: never)."""

    def __init__(self, name: str, job: Callable[[], Awaitable[object]], interval: float) -> None:
        self.name = name
        self._job = job
        self._interval = interval
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._interval > 0 and self._task is None:
            self._task = asyncio.create_task(self._loop(), name=self.name)

    async def stop(self) -> None:
        await cancel(self._task)
        self._task = None

    async def _loop(self) -> None:
        while True:
            try:
                await self._job()
            except BrokerError as exc:
                log.warning("periodic.run_failed", job=self.name, code=str(exc.code))
            except Exception:
                log.exception("periodic.run_failed", job=self.name)
            await asyncio.sleep(self._interval)
