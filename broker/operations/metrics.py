"""``GET /metrics``: the Prometheus text exposition of the broker's metrics.

Unauthenticated by design: expose it to the monitoring network only (the
Kubernetes NetworkPolicy admits the ``monitoring`` namespace; see
docs/operations.md). It reveals no personal data: the instruments
(broker/core/telemetry.py) carry bounded labels only.

The counters and histograms are observed on the request path. What the
database knows is read when scraped, with a few indexed queries: the audit
checkpoint lag and the inbox backlog.

Several worker processes (``broker serve --workers N``): with
``PROMETHEUS_MULTIPROC_DIR`` set to an empty, writable folder every worker writes
its values there and a scrape of any worker adds them up (``prometheus_client``'s
multiprocess mode, broker/operations/multiprocess.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog
from fastapi import APIRouter, Response
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from audit.models import AuditEntry, AuditHead
from broker.app import Services
from broker.deps import ServicesDep
from broker.operations.multiprocess import multiprocess_dir
from broker.publications.models import InboxMessage

router = APIRouter(tags=["operations"])
log = structlog.get_logger("metrics")


@dataclass(frozen=True, slots=True)
class DatabaseGauges:
    """What a scrape reads from the database (None: not known, not exposed)."""

    checkpoint_lag_entries: int | None = None
    checkpoint_lag_seconds: float | None = None
    inbox_pending: int | None = None
    inbox_oldest_seconds: float | None = None

    def families(self) -> Iterable[GaugeMetricFamily]:
        for name, doc, value in (
            (
                "broker_audit_checkpoint_lag_entries",
                "Audit entries appended after the last checkpoint this instance signed.",
                self.checkpoint_lag_entries,
            ),
            (
                "broker_audit_checkpoint_lag_seconds",
                "Age of the oldest audit entry not covered by the last signed checkpoint.",
                self.checkpoint_lag_seconds,
            ),
            (
                "broker_inbox_pending_messages",
                "Publish/subscribe inbox messages not yet acknowledged (all agencies).",
                self.inbox_pending,
            ),
            (
                "broker_inbox_oldest_pending_seconds",
                "Age of the oldest unacknowledged inbox message (0 when none).",
                self.inbox_oldest_seconds,
            ),
        ):
            if value is not None:
                yield GaugeMetricFamily(name, doc, value=value)


class _Snapshot(Collector):
    def __init__(self, gauges: DatabaseGauges) -> None:
        self._gauges = gauges

    def collect(self) -> Iterable[GaugeMetricFamily]:
        return self._gauges.families()


async def read_database_gauges(services: Services) -> DatabaseGauges:
    """The checkpoint lag and the inbox backlog, by indexed reads."""
    now = datetime.now(UTC)
    lag_entries: int | None = None
    lag_seconds: float | None = None
    signed = services.checkpoints.signed_size
    try:
        async with services.db.session() as session:
            head_size = await session.scalar(select(AuditHead.size).where(AuditHead.id == 1))
            if signed is not None and head_size is not None:
                lag_entries = max(0, head_size - signed)
                lag_seconds = 0.0
                if lag_entries:
                    first = await session.scalar(
                        select(AuditEntry.created_at).where(AuditEntry.seq == signed)
                    )
                    if first is not None:
                        lag_seconds = max(0.0, (now - first).total_seconds())
    except SQLAlchemyError as exc:
        log.warning("metrics.audit_read_failed", error=type(exc).__name__)
    pending, oldest = await _inbox_backlog(services, now)
    return DatabaseGauges(lag_entries, lag_seconds, pending, oldest)


async def _inbox_backlog(services: Services, now: datetime) -> tuple[int | None, float | None]:
    """Unacknowledged inbox messages (``broker.publications``): their number and the
    oldest one's age; (None, None) where the table is not there."""
    try:
        async with services.db.session() as session:
            count, oldest = (
                await session.execute(
                    select(func.count(), func.min(InboxMessage.created_at)).where(
                        InboxMessage.acked_at.is_(None)
                    )
                )
            ).one()
    except SQLAlchemyError as exc:
        log.warning("metrics.inbox_read_failed", error=type(exc).__name__)
        return None, None
    age = 0.0 if oldest is None else max(0.0, (now - oldest).total_seconds())
    return int(count), age


def exposition(gauges: DatabaseGauges) -> bytes:
    """The text exposition of every metric of this process (or, in multiprocess
    mode, of every worker) followed by the gauges read from the database."""
    if multiprocess_dir() is not None:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        own = generate_latest(registry)
    else:
        own = generate_latest(REGISTRY)
    snapshot = CollectorRegistry(auto_describe=False)
    snapshot.register(_Snapshot(gauges))
    return own + generate_latest(snapshot)


@router.get(
    "/metrics",
    include_in_schema=False,  # operations only: served to the monitoring network
)
async def metrics(services: ServicesDep) -> Response:
    body = exposition(await read_database_gauges(services))
    return Response(body, media_type=CONTENT_TYPE_PLAIN_0_0_4)
