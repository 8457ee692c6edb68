"""Reloads the policy set when policy files or agreement signatures change, atomically.

The watcher polls a fingerprint: the policy folder's file signature, the
signature table's state and today's date (so expiry takes effect and is
recorded). On a change it loads and compiles the new set off the event loop;
only a set that loads and compiles is swapped in, so an invalid edit leaves the
broker serving the last valid set. Requests in flight finish on the set they
started with.

With several instances on one database, ``wake`` cuts the wait short (another
instance announced an agreement upload or signature) and ``sync`` runs before
each check, installing agreement versions uploaded elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Hashable
from datetime import date
from pathlib import Path
from typing import Protocol

import structlog

from broker.core.clock import Clock, dutch_date, system_clock
from broker.core.errors import BrokerError
from broker.core.periodic import cancel
from broker.policy.loader import PolicySet, load_policy_set
from broker.policy.validate import assert_valid

log = structlog.get_logger("policy")


class Reloadable(Protocol):
    async def reload(self, policy_set: PolicySet) -> None: ...


Enforce = Callable[[PolicySet, date], Awaitable[PolicySet]]
Fingerprint = Callable[[], Awaitable[Hashable]]
Sync = Callable[[], Awaitable[object]]


def signature(root: Path) -> tuple[tuple[str, int, int], ...]:
    files = sorted(
        p for p in root.rglob("*") if p.is_file() and p.suffix in {".rego", ".yaml", ".yml"}
    )
    return tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in files)


async def _no_fingerprint() -> Hashable:
    return None


async def _no_sync() -> None:
    return None


async def _enforce_all(policy_set: PolicySet, _today: date) -> PolicySet:
    return policy_set


class PolicyWatcher:
    def __init__(
        self,
        root: Path,
        engine: Reloadable,
        *,
        interval: float = 2.0,
        enforce: Enforce = _enforce_all,
        fingerprint: Fingerprint = _no_fingerprint,
        sync: Sync = _no_sync,
        clock: Clock = system_clock,
    ) -> None:
        self._root = root
        self._engine = engine
        self._interval = interval
        self._enforce = enforce
        self._fingerprint = fingerprint
        self._sync = sync
        self._clock = clock
        self._woken = asyncio.Event()
        self._checking = asyncio.Lock()
        self._seen: Hashable = None
        self._task: asyncio.Task[None] | None = None
        self._subscribers: list[Callable[[PolicySet], None]] = []
        self.last_error: str | None = None

    def subscribe(self, callback: Callable[[PolicySet], None]) -> None:
        """``callback`` gets every policy set that was swapped in."""
        self._subscribers.append(callback)

    async def _current(self) -> Hashable:
        files = await asyncio.to_thread(signature, self._root)
        return (files, await self._fingerprint(), dutch_date(self._clock()))

    async def prime(self) -> None:
        """Takes the current state as seen (after the initial load elsewhere)."""
        self._seen = await self._current()

    async def load(self) -> PolicySet:
        """Loads the files and applies signature enforcement (no engine swap)."""
        self._seen = await self._current()
        await asyncio.to_thread(assert_valid, self._root)  # an invalid set is refused whole
        policy_set = await asyncio.to_thread(load_policy_set, self._root)
        return await self._enforce(policy_set, dutch_date(self._clock()))

    def start(self) -> None:
        if self._interval > 0 and self._task is None:
            self._task = asyncio.create_task(self._run(), name="policy-watcher")

    async def stop(self) -> None:
        await cancel(self._task)
        self._task = None

    def wake(self) -> None:
        """Checks now instead of at the end of the interval (when polling)."""
        self._woken.set()

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._woken.wait(), self._interval)
            self._woken.clear()
            try:
                await self._sync()
                await self.check()
            except BrokerError as exc:  # e.g. the database is briefly unavailable
                log.warning("policy.check_failed", error=exc.diagnostics())

    async def check(self) -> bool:
        """Reloads when anything changed; True when a new set was swapped in."""
        async with self._checking:
            return await self._check()

    async def _check(self) -> bool:
        current = await self._current()
        if current == self._seen:
            return False
        try:
            policy_set = await self.load()
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
