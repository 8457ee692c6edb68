"""Prometheus multiprocess mode for ``broker serve --workers N``.

With ``PROMETHEUS_MULTIPROC_DIR`` set, ``prometheus_client`` keeps every worker's
values in files in that folder and ``GET /metrics`` on any worker adds them up.
The folder must be empty when the workers start (``broker serve`` empties it) and
is private to one broker instance.
"""

from __future__ import annotations

import os
from pathlib import Path

from prometheus_client import multiprocess

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def multiprocess_dir() -> Path | None:
    value = os.environ.get(MULTIPROC_ENV) or os.environ.get(MULTIPROC_ENV.lower())
    return Path(value) if value else None


def prepare_multiprocess_dir() -> None:
    """Creates or empties the folder, so values of an earlier run are not added to this one's."""
    folder = multiprocess_dir()
    if folder is None:
        return
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.db"):
        stale.unlink()


def worker_stopped() -> None:
    """Drops this process's live gauges from the folder (its counters stay counted)."""
    if multiprocess_dir() is not None:
        multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]
