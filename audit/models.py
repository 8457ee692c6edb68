"""The audit log tables: an append-only, hash-chained sequence of entries.

Each entry's canonical JSON (RFC 8785) is stored as text exactly as hashed, so
the chain can be recomputed byte for byte. ``audit_head`` holds the current
size and head hash; writers lock it, so concurrent broker processes on one
PostgreSQL never fork the log.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from broker.db.base import Base, UTCDateTime


class AuditEntry(Base):
    __tablename__ = "audit_entries"

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    exchange_id: Mapped[str | None] = mapped_column(String(36), index=True, nullable=True)
    subject_key: Mapped[str | None] = mapped_column(String(80), index=True, nullable=True)
    element: Mapped[str | None] = mapped_column(String(128), nullable=True)
    outcome: Mapped[str | None] = mapped_column(String(16), nullable=True)
    entry: Mapped[str] = mapped_column(Text)
    prev_hash: Mapped[str] = mapped_column(String(64))
    entry_hash: Mapped[str] = mapped_column(String(64))


class AuditHead(Base):
    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    size: Mapped[int] = mapped_column(BigInteger)
    head_hash: Mapped[str] = mapped_column(String(64))
