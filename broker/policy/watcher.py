"""Reloads the policy set when policy files change, atomically.

The watcher polls the policy folder's file signature. On a change it loads and
compiles the new set off the event loop; only a set that loads and compiles is
swapped in, so an invalid edit leaves the broker serving the last valid set.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import structlog

from broker.core.errors import BrokerError
from broker.policy.loader import PolicySet, load_policy_set

log = structlog.get_logger("policy")


class Reloadable(Protocol):
    async def reload(self, policy_set: PolicySet) -> None: ...


def signature(root: Path) -> tuple[tuple[str, int, int], ...]:
    files = sorted(
        p for p in root.rglob("*") if p.is_file() and p.suffix in {".rego", ".yaml", ".yml"}
    )
    return tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in files)


class PolicyWatcher:
    def __init__(
        self,
        root: Path,
        engine: Reloadable,
        *,
        interval: float = 2.0,
    ) -> None:
        self._root = root
        self._engine = engine
        self._subscribers: list[Callable[[PolicySet], None]] = []
        self._interval = interval
        self._signature = signature(root)
        self._task: asyncio.Task[None] | None = None
        self.last_error: str | None = None

    def subscribe(self, callback: Callable[[PolicySet], None]) -> None:
        """``callback`` gets every policy set that was swapped in."""
        self._subscribers.append(callback)

    def start(self) -> None:
        if self._interval > 0 and self._task is None:
            self._task = asyncio.create_task(self._run(), name="policy-watcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.check()

    async def check(self) -> bool:
        """Reloads when the files changed; True when a new set was swapped in."""
        current = await asyncio.to_thread(signature, self._root)
        if current == self._signature:
            return False
        self._signature = current
        try:
            policy_set = await asyncio.to_thread(load_policy_set, self._root)
            await self._engine.reload(policy_set)
        except BrokerError as exc:
            self.last_error = exc.diagnostics()
            log.warning("policy.reload_failed", error=self.last_error)
            return False
        self.last_error = None
        for callback in self._subscribers:
            callback(policy_set)
        log.info("policy.reloaded", bundle=policy_set.bundle_hash)
        return True
