"""The retention keys: one AES-256 key per retention class and calendar month.

The key material is stored wrapped (AES-256-GCM) by the key-encryption key that
lives outside the database (``BROKER_RETENTION_KEK`` or ``retention-kek.key`` in
the keys folder), so a dump of the database alone opens nothing. Destroying a
key sets ``wrapped`` to NULL; the row stays as the record of what was destroyed.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from broker.db.base import Base, UTCDateTime


class RetentionKey(Base):
    __tablename__ = "retention_keys"

    # "<retention class>:<YYYY-MM>", e.g. "P20Y:2026-11".
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    retention: Mapped[str] = mapped_column(String(32))  # ISO 8601 duration
    period: Mapped[str] = mapped_column(String(7))  # the calendar month (UTC), YYYY-MM
    period_start: Mapped[datetime] = mapped_column(UTCDateTime())
    period_end: Mapped[datetime] = mapped_column(UTCDateTime())
    destroy_after: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    kek_id: Mapped[str] = mapped_column(String(16))
    wrapped: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    destroyed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    destroyed_seq: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
