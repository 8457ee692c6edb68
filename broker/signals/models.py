"""The signal register's table. Children and households appear only as keyed
pseudonyms (HMAC with the broker's pseudonym key); BSNs are never stored.

A signal says THAT an agency is involved, never why: no case content, only the
agency's team contact route. Removal (withdrawal or expiry) first clears the keys
in the audited commit, then deletes the row."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import JSON, Date, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from broker.db.base import Base, UTCDateTime


class Signal(Base):
    __tablename__ = "signals"
    __table_args__ = (
        # One live signal per agency, agreement, kind and subject (removed rows hold
        # NULL keys, which never collide).
        UniqueConstraint("agency_oin", "agreement_id", "subject_kind", "subject_key"),
        Index("ix_signals_subject", "agreement_id", "subject_key"),
        Index("ix_signals_household", "agreement_id", "household_key"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    agreement_id: Mapped[str] = mapped_column(String(128))
    agency_oin: Mapped[str] = mapped_column(String(20), index=True)
    agency_party: Mapped[str] = mapped_column(String(64))
    subject_kind: Mapped[str] = mapped_column(String(16))  # child | household
    # Pseudonym of the child (kind child) or of the named household member.
    subject_key: Mapped[str | None] = mapped_column(String(80), nullable=True)
    # Pseudonym of the household from the population register; only where the
    # agreement matches on the household.
    household_key: Mapped[str | None] = mapped_column(String(80), nullable=True)
    # {"team": ..., "phone": ..., "email": ...}: the agency's team, never the child.
    contact: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    end_date: Mapped[date] = mapped_column(Date)
    # The start of the day after end_date in the Netherlands: from then it is removed.
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    removed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    removed_reason: Mapped[str | None] = mapped_column(String(16), nullable=True)
