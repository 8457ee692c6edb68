"""The consent registry's table. Persons appear only as pseudonym keys
(HMAC of the BSN with the broker's pseudonym key); BSNs are never stored."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from broker.db.base import Base, UTCDateTime


class ConsentRecord(Base):
    __tablename__ = "consent_records"
    __table_args__ = (
        # The exchange loads a request's records in one query on this index.
        Index("ix_consent_records_scope", "subject_key", "agreement_id", "purpose_id"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    subject_key: Mapped[str] = mapped_column(String(80))
    # [{"key": pseudonym, "capacity": "child" | "authority_holder" | "subject"}]
    givers: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    # The minor subject is stated to be wilsonbekwaam (represented by the holders of
    # authority): {"established_by", "established_at" (ISO 8601), "evidence_ref"};
    # NULL when the record states nothing (broker.consent.service.wilsonbekwaam_of).
    wilsonbekwaam: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    agreement_id: Mapped[str] = mapped_column(String(128))
    purpose_id: Mapped[str] = mapped_column(String(128))
    elements: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    recipients: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    given_at: Mapped[datetime] = mapped_column(UTCDateTime())
    valid_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    withdrawn_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    withdrawn_by_key: Mapped[str | None] = mapped_column(String(80), nullable=True)
    evidence_ref: Mapped[str] = mapped_column(String(128))
    recorded_by_oin: Mapped[str] = mapped_column(String(20), index=True)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime())
